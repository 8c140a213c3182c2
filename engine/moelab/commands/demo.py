"""`moelab demo [--out DIR] [--quick]`: the embedded default pipeline on CPU (ARCHITECTURE.md §8)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from moelab.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "demo",
        help=help_text,
        description=help_text + ". Three synthetic domains (code, math, prose), a tiny "
        "byte-level seed, one branch per domain, the MoE of every method (seed kept as an expert) trained on "
        "the same token budget, the controls (dense-continued, btx-compute, the attention-routing ablation), a "
        "table of per-domain perplexity and the papers' claims checked. Rerunning resumes; finished stages are skipped.",
    )
    p.add_argument("--out", type=Path, default=Path("runs"), help="directory of runs (default: ./runs)")
    p.add_argument(
        "--quick", action="store_true", help="a smaller model and a few steps per stage (about a minute)"
    )
    p.add_argument(
        "--parallel-block", action="store_true", help="seed with a parallel attention+FFN block (BAM)"
    )
    p.add_argument("--methods", help="comma-separated methods (default: every demo method)")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, synthetic text and batch order")
    p.add_argument(
        "--seeds",
        metavar="LIST",
        help="the study: e.g. 0,1,2, each seed a pipeline with the parallel "
        "block in OUT/seed-N, the sequential block at the first seed in OUT/sequential-seed-N, "
        "mean ± std and the papers' claims in OUT/study.json",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from moelab.train.demo import DEMO_METHODS
    from moelab.train.study import format_setting, study_doc, summarize_setting

    methods = (
        [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(DEMO_METHODS)
    )
    seeds = _seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and args.parallel_block:
        raise ConfigError(
            "--seeds runs the parallel block at every seed and the sequential one beside it; "
            "drop --parallel-block"
        )
    t0 = time.monotonic()
    failed = False
    if seeds is None:
        block = "parallel" if args.parallel_block else "sequential"
        ev, ok = _pipeline(args, args.out, args.seed, args.parallel_block, methods, controls=True)
        if ev is None:
            return ok
        failed = ok != 0
        settings = [summarize_setting("demo", block, [args.seed], ["."], [ev], methods)]
        elapsed = time.monotonic() - t0
        (args.out / "eval.json").write_text(
            json.dumps(
                {**ev, "quick": args.quick, "seconds": round(elapsed, 1), "claims": settings[0]["claims"]},
                indent=2,
            )
            + "\n"
        )
    else:
        # BAM's own setting (parallel attention+FFN block) for every method at every seed, with the controls;
        # the sequential block at the first seed beside it, for the BAM paper's comparisons only.
        settings, evals, runs = [], [], []
        for s in seeds:
            ev, ok = _pipeline(args, args.out / f"seed-{s}", s, True, methods, controls=True)
            if ev is None:
                return ok
            failed |= ok != 0
            evals.append(ev)
            runs.append(f"seed-{s}")
        settings.append(summarize_setting("study", "parallel", seeds, runs, evals, methods))
        bam = [m for m in methods if m in SEQUENTIAL_METHODS]
        if bam:
            ev, ok = _pipeline(
                args, args.out / f"sequential-seed-{seeds[0]}", seeds[0], False, bam, controls=False
            )
            if ev is None:
                return ok
            failed |= ok != 0
            settings.append(
                summarize_setting(
                    "sequential", "sequential", seeds[:1], [f"sequential-seed-{seeds[0]}"], [ev], bam
                )
            )
        elapsed = time.monotonic() - t0
    first: dict[str, Any] = next(iter(settings[0]["models"].values()), {})
    domains = first.get("ppl", {})
    doc = study_doc(settings, [d for d in domains if d != "average"], args.quick, elapsed)
    (args.out / "study.json").write_text(json.dumps(doc, indent=2) + "\n")
    for st in settings:
        print(format_setting(st, doc["domains"]) + "\n")
    print(f"{elapsed:.0f} s. Runs: {args.out}/  Table: {args.out / 'study.json'}")
    return 1 if failed else 0


# The BAM paper's comparisons, run again with the sequential block beside the parallel-block study.
SEQUENTIAL_METHODS = ("sparse", "btx", "bam-ekv", "bam-skv")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct comma-separated integers, got {text!r}")
    return seeds


def _pipeline(
    args: argparse.Namespace, out: Path, seed: int, parallel: bool, methods: list[str], controls: bool
) -> tuple[dict | None, int]:
    """One seed's pipeline in `out`: (its eval, 0) or (eval or None, the exit code)."""
    from moelab.train.demo import demo_experiment
    from moelab.train.pipeline import Pipeline

    exp = demo_experiment(
        str(out), quick=args.quick, parallel_block=parallel, methods=methods, controls=controls
    )
    exp.device = args.device
    exp.seed = exp.data.seed = seed
    up = exp.stage("upcycle")
    if up is not None:
        up.router_seed = seed
    exp.validate()
    res = Pipeline(exp, quiet=args.quiet).run()
    if res.status == "stopped":
        print("demo stopped; run it again to resume", file=sys.stderr)
        return None, 143
    for run_id, err in res.failures.items():
        print(f"failed: {run_id}: {err}", file=sys.stderr)
    if res.eval is None:
        return None, 1
    out.mkdir(parents=True, exist_ok=True)
    return res.eval, 1 if res.failures else 0
