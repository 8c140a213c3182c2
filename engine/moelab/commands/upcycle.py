"""`moelab upcycle`: dense checkpoints in, an MoE checkpoint out (pure weight surgery)."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from moelab.errors import ConfigError
from moelab.methods.api import METHODS, UpcycleOptions, upcycle
from moelab.train.router_preopt import PreoptConfig

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


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
    p = sub.add_parser(
        "upcycle",
        help=help_text,
        description=help_text + ". Progress goes to stderr; --out appears whole or not at all.",
    )
    _add_inputs(p)
    _add_experts(p)
    _add_routing(p)
    _add_upit(p)
    _add_output(p)


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The method, the dense checkpoints it reads and the MoE directory it writes."""
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument(
        "--seed", required=True, type=Path, metavar="DIR", help="dense seed checkpoint (HF layout)"
    )
    p.add_argument(
        "--expert",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="dense expert checkpoint, repeat for each expert (btx, bam-*; upit: a fine-tuning run's checkpoints, "
        "or PEFT LoRA adapter directories of the seed)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR")


def _add_experts(p: argparse.ArgumentParser) -> None:
    """How many experts, how many a token uses, and in which layers."""
    p.add_argument(
        "--num-experts",
        type=int,
        default=None,
        metavar="N",
        help="sparse: number of copies (default 4); upit: the checkpoints plus merged children "
        "(default: the checkpoints); others: must equal the experts given",
    )
    p.add_argument("--top-k", type=int, default=2, metavar="K", help="FFN experts per token (default 2)")
    p.add_argument(
        "--attn-top-k",
        type=int,
        default=0,
        metavar="K",
        help="BAM attention experts per token: 0 = soft mixture over all (default), 1, 2, ...",
    )
    p.add_argument("--router-seed", type=int, default=0, metavar="S", help="seed of the random routers")
    p.add_argument(
        "--moe-layers",
        default="",
        metavar="SPEC",
        help="all, every-other (layers 1,3,5,...) or indices like 1,3; other layers stay dense "
        "(default: every-other for sparse, as its paper does; all for the others)",
    )


def _add_routing(p: argparse.ArgumentParser) -> None:
    """Capacity, router noise, top-k weights, router initialisation, and the seed as an expert."""
    p.add_argument(
        "--capacity-factor",
        type=float,
        default=0.0,
        metavar="C",
        help="FFN expert capacity: each expert takes at most ceil(C·tokens·top_k/experts) slots, "
        "later tokens dropped (0 = dropless, default; >0 makes the output model_type moelab)",
    )
    p.add_argument(
        "--router-jitter-noise",
        type=float,
        default=0.0,
        metavar="EPS",
        help="while training, multiply every router's input by uniform(1-EPS, 1+EPS) (default 0 = off)",
    )
    p.add_argument(
        "--router-weights",
        default="st",
        choices=("st", "renorm", "raw"),
        help="top-k weights: st = renormalised, with the kept probabilities' gradient so routers learn "
        "at k=1 (default); renorm = Mixtral's exactly; raw = Switch's unnormalised probabilities "
        "(breaks the identical-experts invariant; Mixtral cannot express it, Qwen3-MoE can)",
    )
    p.add_argument(
        "--router-init",
        default="random",
        choices=("random", "hidden"),
        help="hidden: each router row is the mean hidden state of the --router-data samples "
        "whose lowest-loss expert it routes to (needs --router-data)",
    )
    p.add_argument("--keep-seed", action="store_true", help="btx/bam/upit: the seed as one more expert")


def _add_upit(p: argparse.ArgumentParser) -> None:
    """UpIT's options, in their own --help group."""
    u = p.add_argument_group(
        "upit",
        "experts = --expert checkpoints of one fine-tuning run, expanded to "
        "--num-experts by DARE-merging the most different pair",
    )
    u.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        metavar="R",
        help="0: full FFN experts (default); R: rank-R LoRA experts on the seed's shared FFN "
        "(adapters as experts: their rank)",
    )
    u.add_argument(
        "--dare-drop",
        type=float,
        default=0.5,
        metavar="P",
        help="DARE drop rate of merged deltas (default 0.5)",
    )
    u.add_argument(
        "--no-dare-rescale", action="store_true", help="do not rescale kept delta entries by 1/(1-P)"
    )
    u.add_argument(
        "--merge-seed", type=int, default=0, metavar="S", help="seed of the merge weights and DARE masks"
    )
    u.add_argument(
        "--router-data",
        metavar="DATA",
        help="router pre-optimization seed set: synthetic domains (code,math,prose) and/or "
        ".txt/.jsonl files, comma-separated; without it upit's routers stay random",
    )
    u.add_argument(
        "--router-fraction",
        type=float,
        default=0.01,
        metavar="F",
        help="seed set = this fraction of the --router-data windows, a quarter held out (default 0.01, "
        "the paper's 1%%)",
    )
    u.add_argument(
        "--router-min-samples",
        type=int,
        default=32,
        metavar="N",
        help="but at least N windows, for small data (default 32)",
    )
    u.add_argument(
        "--router-steps", type=int, default=60, metavar="N", help="pre-optimization steps (default 60)"
    )
    u.add_argument(
        "--router-alpha",
        type=float,
        default=0.5,
        metavar="A",
        help="A·L_lm + (1-A)·BCE labelling loss (default 0.5)",
    )
    u.add_argument(
        "--seq-len", type=int, default=128, metavar="T", help="tokens per seed-set window (default 128)"
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    """How the MoE checkpoint is written."""
    p.add_argument(
        "--max-shard-size", default="2GB", metavar="SIZE", help="largest output shard (default 2GB)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    opts = UpcycleOptions(
        method=args.method,
        seed=args.seed,
        experts=list(args.expert),
        out=args.out,
        num_experts=args.num_experts,
        top_k=args.top_k,
        attn_top_k=args.attn_top_k,
        router_seed=args.router_seed,
        moe_layers=args.moe_layers,
        router_init=args.router_init,
        keep_seed=args.keep_seed,
        max_shard_bytes=parse_size(args.max_shard_size),
        overwrite=args.overwrite,
        lora_rank=args.lora_rank,
        dare_drop=args.dare_drop,
        dare_rescale=not args.no_dare_rescale,
        merge_seed=args.merge_seed,
        capacity_factor=args.capacity_factor,
        router_jitter_noise=args.router_jitter_noise,
        router_weights=args.router_weights,
    )
    preopt = preopt_config(args)
    if preopt is not None:
        preopt.validate()  # before the surgery, so a bad option costs nothing
    out = upcycle(opts)
    if preopt is not None:
        from moelab.train.router_preopt import preoptimize_checkpoint

        try:
            preoptimize_checkpoint(out, preopt)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # surgery and pre-optimization: whole or not at all
            raise
    print(out)
    return 0


def preopt_config(args: argparse.Namespace) -> PreoptConfig | None:
    """The data step after the surgery: UpIT's pre-optimization and/or --router-init hidden."""
    if args.router_init == "hidden" and not args.router_data:
        raise ConfigError(
            "--router-init hidden: needs --router-data (the samples whose hidden states set the routers)"
        )
    if not args.router_data:
        return None
    if args.method != "upit" and args.router_init != "hidden":
        raise ConfigError(
            "--router-data: router pre-optimization is UpIT's (--method upit); other methods use it "
            "only with --router-init hidden"
        )
    return PreoptConfig(
        data=args.router_data,
        fraction=args.router_fraction,
        min_samples=args.router_min_samples,
        steps=args.router_steps,
        alpha=args.router_alpha,
        seq_len=args.seq_len,
        seed=args.router_seed,
        init=args.router_init,
        train=args.method == "upit",
    )
