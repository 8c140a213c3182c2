"""The `moelab` command: parse, call, report failures in one line (a traceback only with --debug).

Each subcommand lives in `moelab/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`; modules are imported lazily so `moelab --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from moelab import __version__
from moelab.errors import MoELabError

COMMANDS = {
    "upcycle": "mix dense checkpoints into an MoE (sparse, btx, bam-ekv, bam-skv, upit)",
    "train": "train a dense seed, a branch or an MoE from CONFIG.json",
    "run": "run a whole experiment pipeline from EXPERIMENT.json (resumable)",
    "demo": "the embedded default pipeline on CPU: seed, branches, every method, eval",
    "eval": "per-domain loss, perplexity and routing statistics of a checkpoint, as JSON",
    "export": "export a checkpoint (hf, onnx with router outputs)",
    "inspect": "structure, parameter counts, FLOPs per token, routing of a text",
    "analyze": "router and expert weight analysis across checkpoints, as JSON",
    "slurm": "submit, watch and cancel runs on a Slurm cluster",
    "schema": "write the JSON Schemas of configs and experiments",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="moelab", description="MoE Lab engine: Mixture-of-Experts upcycling research.")
    parser.add_argument("--version", action="version", version=f"moelab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, help_text in COMMANDS.items():
        try:
            mod = importlib.import_module(f"moelab.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name != f"moelab.commands.{name}":
                raise
            continue
        mod.add_parser(sub, help_text)  # type: ignore[attr-defined]
        modules[name] = mod
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser, modules = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
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
