"""The `moelab` command: parse, call, report failures in one line (a traceback only with --debug).

Each subcommand lives in `moelab/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`; only the module of the command being run is imported, so `moelab --help` and
`moelab --version` import no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from moelab import __version__
from moelab.errors import MoELabError
from moelab.launch.threads import quiet_wait_policy

COMMANDS = {
    "upcycle": "mix dense checkpoints into an MoE (sparse, btx, bam-ekv, bam-skv, upit)",
    "train": "train a dense seed, a branch or an MoE from CONFIG.json",
    "run": "run a whole experiment pipeline from EXPERIMENT.json (resumable)",
    "demo": "the embedded default pipeline on CPU: seed, branches, every method, eval",
    "eval": "per-domain loss, perplexity and routing statistics of a checkpoint, as JSON",
    "export": "export a checkpoint (hf, onnx with router outputs)",
    "inspect": "structure, parameter counts, FLOPs per token, routing of a text",
    "analyze": "router and expert weight analysis across checkpoints, as JSON",
    "plan": "per-rank training memory on N GPUs (FSDP, expert parallel): does it fit, largest micro-batch",
    "slurm": "submit, watch and cancel runs on a Slurm cluster",
    "schema": "write the JSON Schemas of configs and experiments and the tensor-name patterns",
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: the first word that is not an option (the top-level
    options take no value), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def _load_command(name: str) -> ModuleType:
    """The module of one command. A module that fails to import is an error that names it, never a
    command quietly missing from the parser."""
    module = f"moelab.commands.{name.replace('-', '_')}"
    try:
        return importlib.import_module(module)
    except Exception as e:  # a syntax error or a missing dependency, in our module or in one it imports
        raise MoELabError(
            f"command {name!r} is unavailable: {module} failed to import ({type(e).__name__}: {e})"
        ) from e


def build_parser(argv: Sequence[str] = ()) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The parser, with the full options of the command that `argv` names and a one-line entry for the
    others: only that command's module is imported (most import torch), so `moelab --help` and
    `moelab --version`, which the extension runs to probe the engine, stay fast."""
    parser = argparse.ArgumentParser(
        prog="moelab", description="MoE Lab engine: Mixture-of-Experts upcycling research."
    )
    parser.add_argument("--version", action="version", version=f"moelab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_of(argv)
    modules: dict[str, ModuleType] = {}
    for name, help_text in COMMANDS.items():
        if name == chosen:
            modules[name] = _load_command(name)
            modules[name].add_parser(sub, help_text)
        else:
            sub.add_parser(name, help=help_text)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    quiet_wait_policy()  # before a command imports torch, which reads it once when it loads OpenMP
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser, modules = build_parser(argv)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(modules[args.command].run(args) or 0)
    except MoELabError as e:
        if debug:
            raise
        print(f"moelab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moelab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"moelab: error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
