"""`moelab run EXPERIMENT.json`: the stages of an experiment, resumable (done stages are skipped)."""

from __future__ import annotations

import argparse
from pathlib import Path

from moelab.train.experiment import load_experiment


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "run",
        help=help_text,
        description=help_text + ". Stages: dense -> branch -> upcycle -> moe -> eval; "
        "runs go under the experiment's `out` as <name>-<stage>[-<domain|method>].",
    )
    p.add_argument(
        "experiment", type=Path, help="experiment JSON (schema: moelab/schema/experiment.schema.json)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the experiment's device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from moelab.train.pipeline import Pipeline

    exp = load_experiment(args.experiment)
    if args.device:
        exp.device = args.device
    return report(Pipeline(exp, quiet=args.quiet).run(), Path(exp.out), exp.name)


def report(res: object, out: Path, name: str) -> int:
    from moelab.train.pipeline import PipelineResult, format_table

    assert isinstance(res, PipelineResult)
    if res.eval is not None:
        print(format_table(res.eval))
        print(f"\nper-run results: {out / (name + '-eval') / 'eval.json'}")
    for run_id, err in res.failures.items():
        print(f"failed: {run_id}: {err}")
    if res.status == "stopped":
        print("stopped; run the same command again to resume")
        return 143
    return 1 if res.failures else 0
