"""The one entry point for weight surgery: dense checkpoints in, an MoE checkpoint directory out.

Implemented in this package (sparse.py, btx.py, bam.py, upit.py); callers (the CLI's upcycle
command, the demo and experiment pipelines) use only `UpcycleOptions` and `upcycle`. The options
live in options.py, which the method modules import: this dispatcher imports them, not the reverse.
"""

from __future__ import annotations

from pathlib import Path

from moelab.methods.options import METHODS, UPIT_FIELDS, Method, RouterInit, UpcycleOptions

__all__ = ["METHODS", "UPIT_FIELDS", "Method", "RouterInit", "UpcycleOptions", "upcycle"]


def upcycle(opts: UpcycleOptions) -> Path:
    """Writes the MoE checkpoint to opts.out atomically and returns it.

    Every input is validated (configs, safetensors headers, experts against the seed) before
    anything is written; on any failure opts.out is left as it was. Progress goes to stderr.
    """
    from moelab.errors import ConfigError
    from moelab.methods import bam, btx, sparse, upit
    from moelab.methods.common import MakeSpec, run_surgery

    specs: dict[str, MakeSpec] = {
        "sparse": sparse.mix_spec,
        "btx": btx.mix_spec,
        "bam-ekv": bam.mix_spec,
        "bam-skv": bam.mix_spec,
        "upit": upit.mix_spec,
    }
    if opts.method not in specs:
        raise ConfigError(f"--method {opts.method!r}: expected one of {', '.join(METHODS)}")
    return run_surgery(opts, specs[opts.method])
