"""`moelab analyze`: router and expert weight analysis across checkpoints, as JSON.

    moelab analyze --ckpt DIR [--ckpt DIR ...] [--against DIR ...] [--out FILE.json] [--threshold 0.95]
    moelab analyze --compare A B [--out FILE.json]          (also spelled --diff)

The JSON schema is documented in moelab/analysis/report.py. Progress goes to stderr (the
extension runs this as a task); without --out (or with --out -) the JSON goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moelab.analysis import report
from moelab.analysis.compare import compare_checkpoints
from moelab.analysis.pipeline import DEFAULT_CHUNK_BYTES, AnalyzeOptions, analyze


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "analyze",
        help=help_text,
        description=help_text + ". The JSON schema is in moelab/analysis/report.py.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--ckpt",
        type=Path,
        action="append",
        metavar="DIR",
        help="checkpoint directory; repeat in step order for drift across a run "
        "(a run or checkpoints/ directory stands for all its step-* checkpoints)",
    )
    what.add_argument(
        "--compare",
        "--diff",
        type=Path,
        nargs=2,
        metavar=("A", "B"),
        help="list the tensors that differ between two checkpoints, largest relative change first",
    )
    p.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="dense checkpoint(s) the experts were copied from: one for all experts or one per expert "
        "(default: the parents recorded in config.json, where they exist)",
    )
    p.add_argument("--no-parents", action="store_true", help="skip the distance from the dense parents")
    p.add_argument(
        "--out",
        default="-",
        metavar="FILE.json",
        help="where to write the JSON (atomically: temp file + rename); - or none: stdout",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        metavar="T",
        help="weight cosine above which two experts are reported as collapsed (default 0.95)",
    )
    p.add_argument(
        "--router-eps",
        type=float,
        default=1e-6,
        metavar="EPS",
        help="router vector norm below which it is reported as near zero (default 1e-6)",
    )
    p.add_argument(
        "--chunk-mb",
        type=float,
        default=DEFAULT_CHUNK_BYTES / 1024**2,
        metavar="MB",
        help=f"memory for the row chunks read at once, which bounds peak memory "
        f"(default {DEFAULT_CHUNK_BYTES // 1024**2})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    progress = None if args.quiet else _stderr
    chunk = int(args.chunk_mb * 1024**2)
    if args.compare:
        if args.against or args.no_parents:
            print("moelab: note: --against/--no-parents have no effect with --compare", file=sys.stderr)
        result = compare_checkpoints(args.compare[0], args.compare[1], max(1, chunk), progress)
        summary = f"{result['num_changed']} of {result['num_tensors']} tensors differ"
    else:
        result = analyze(
            AnalyzeOptions(
                checkpoints=args.ckpt,
                against=args.against,
                threshold=args.threshold,
                router_eps=args.router_eps,
                chunk_bytes=chunk,
                use_parents=not args.no_parents,
                progress=progress,
            )
        )
        summary = f"{len(result['layers'])} MoE router groups, {len(result['warnings'])} warnings"
        if progress:
            for w in result["warnings"]:
                progress(f"analyze: warning: {w['message']}")
    if args.out == "-":
        sys.stdout.write(report.dumps(result))
    else:
        report.write(result, Path(args.out))
        summary += f"; wrote {args.out}"
    if progress:
        progress(f"analyze: {summary}")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
