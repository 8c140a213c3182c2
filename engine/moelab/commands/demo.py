"""`moelab demo [--out DIR] [--quick]`: the embedded default pipeline on CPU (ARCHITECTURE.md §8)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "demo", help=help_text, description=help_text + ". Three synthetic domains (code, math, prose), a tiny "
        "byte-level seed, one branch per domain, the MoE of every method (seed kept as an expert) trained on "
        "the same token budget, and a table of per-domain perplexity. Rerunning resumes; finished stages are skipped.")
    p.add_argument("--out", type=Path, default=Path("runs"), help="directory of runs (default: ./runs)")
    p.add_argument("--quick", action="store_true", help="a smaller model and a few steps per stage (about a minute)")
    p.add_argument("--parallel-block", action="store_true", help="seed with a parallel attention+FFN block (BAM)")
    p.add_argument("--methods", help="comma-separated methods (default: every demo method)")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, synthetic text and batch order")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from moelab.train.demo import demo_experiment
    from moelab.train.pipeline import Pipeline, format_table

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    exp = demo_experiment(str(args.out), quick=args.quick, parallel_block=args.parallel_block, methods=methods)
    exp.device = args.device
    exp.seed = exp.data.seed = args.seed
    up = exp.stage("upcycle")
    if up is not None:
        up.router_seed = args.seed
    exp.validate()
    t0 = time.monotonic()
    res = Pipeline(exp, quiet=args.quiet).run()
    elapsed = time.monotonic() - t0
    if res.status == "stopped":
        print("demo stopped; run it again to resume", file=sys.stderr)
        return 143
    for run_id, err in res.failures.items():
        print(f"failed: {run_id}: {err}", file=sys.stderr)
    if res.eval is None:
        return 1
    summary = {**res.eval, "quick": args.quick, "seconds": round(elapsed, 1), "checks": paper_checks(res.eval)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_table(res.eval))
    for check, ok in summary["checks"].items():
        print(f"{'yes' if ok else 'NO ':3}  {check}")
    print(f"\n{elapsed:.0f} s. Runs: {args.out}/  Table: {args.out / 'eval.json'}")
    return 1 if res.failures else 0


def paper_checks(ev: dict) -> dict[str, bool]:
    """The orderings the BAM paper reports, checked at this scale."""
    m = ev["models"]
    avg = {k: v["average"]["ppl"] for k, v in m.items()}
    moes = [k for k in avg if k not in ("seed", "tune") and not k.startswith("branch-")]
    out: dict[str, bool] = {}
    if "seed" in avg and moes:
        out["every MoE beats the seed on average perplexity"] = all(avg[k] < avg["seed"] for k in moes)
    if "bam-ekv" in avg and "btx" in avg:
        out["bam-ekv <= btx on average perplexity"] = avg["bam-ekv"] <= avg["btx"]
    if "bam-skv" in avg and "btx" in avg:
        out["bam-skv <= btx on average perplexity"] = avg["bam-skv"] <= avg["btx"]
    if "upit" in avg and "tune" in avg:
        out["upit <= its fine-tuned dense model (tune) on average perplexity"] = avg["upit"] <= avg["tune"]
    return out
