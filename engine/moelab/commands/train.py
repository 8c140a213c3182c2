"""`moelab train CONFIG.json`: one training run (dense seed, branch, or MoE), resumable."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from moelab.train.config import load_train_config

EXIT_STOPPED = 143  # 128 + SIGTERM: the run stopped on request, its checkpoint saved


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "train",
        help=help_text,
        description=help_text + ". Rerunning the same config resumes from the run's "
        "checkpoints/latest; a finished run is skipped. SIGTERM checkpoints and stops (status 'stopped').",
    )
    p.add_argument("config", type=Path, help="train config JSON (schema: moelab/schema/train.schema.json)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from moelab.train.trainer import train  # torch import: only when training

    cfg = load_train_config(args.config)
    if args.device:
        cfg.device = args.device
    result = train(cfg, quiet=args.quiet)
    where = Path(cfg.out) / cfg.run_id
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *_: None)  # torchrun: rank 0 speaks
    if result.status == "stopped":
        # A Slurm job (cancelled, or out of time) resumes when the same config is submitted again.
        again = "moelab slurm submit" if os.environ.get("SLURM_JOB_ID") else "moelab train"
        say(f"stopped at step {result.step}; resume with: {again} {args.config}")
        return EXIT_STOPPED
    say(f"done: {where} (checkpoint {result.checkpoint})")
    return 0
