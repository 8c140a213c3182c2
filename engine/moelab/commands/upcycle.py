"""`moelab upcycle`: dense checkpoints in, an MoE checkpoint out (pure weight surgery)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from moelab.errors import ConfigError
from moelab.methods.api import METHODS, UpcycleOptions, upcycle

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'2GB' (decimal, as Hugging Face's max_shard_size), '500MiB', '1048576'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m[2].upper() not in _UNITS:
        raise ConfigError(f"--max-shard-size {text!r}: expected a size like 2GB, 500MB or 1048576")
    n = int(float(m[1]) * _UNITS[m[2].upper()])
    if n <= 0:
        raise ConfigError(f"--max-shard-size {text!r}: must be positive")
    return n


def add_parser(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("upcycle", help=help_text, description=help_text + ". Progress goes to stderr; --out "
                       "appears whole or not at all.")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--seed", required=True, type=Path, metavar="DIR", help="dense seed checkpoint (HF layout)")
    p.add_argument("--expert", action="append", default=[], type=Path, metavar="DIR",
                   help="dense expert checkpoint, repeat for each expert (btx, bam-*)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--num-experts", type=int, default=None, metavar="N",
                   help="sparse: number of copies (default 4); others: must equal the experts given")
    p.add_argument("--top-k", type=int, default=2, metavar="K", help="FFN experts per token (default 2)")
    p.add_argument("--attn-top-k", type=int, default=0, metavar="K",
                   help="BAM attention experts per token: 0 = soft mixture over all (default), 1, 2, ...")
    p.add_argument("--router-seed", type=int, default=0, metavar="S", help="seed of the random routers")
    p.add_argument("--moe-layers", default="all", metavar="SPEC",
                   help="all (default), every-other (layers 1,3,5,...) or indices like 1,3; other layers stay dense")
    p.add_argument("--router-init", default="random", choices=("random", "hidden"))
    p.add_argument("--keep-seed", action="store_true", help="btx/bam: the seed as one more expert")
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE", help="largest output shard (default 2GB)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    opts = UpcycleOptions(
        method=args.method, seed=args.seed, experts=list(args.expert), out=args.out,
        num_experts=args.num_experts, top_k=args.top_k, attn_top_k=args.attn_top_k,
        router_seed=args.router_seed, moe_layers=args.moe_layers, router_init=args.router_init,
        keep_seed=args.keep_seed, max_shard_bytes=parse_size(args.max_shard_size), overwrite=args.overwrite,
    )
    out = upcycle(opts)
    print(out)
    return 0
