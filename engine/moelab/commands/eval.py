"""`moelab eval --ckpt DIR --data ... [--tasks T1,T2]`: per-domain loss and perplexity, routing
statistics and lm-evaluation-harness scores, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moelab.data.synthetic import DOMAINS
from moelab.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser(
        "eval",
        help=help_text,
        description=help_text + ". --data takes synthetic domain names (code, math, prose; 'synthetic' = all "
        "three) and DOMAIN=PATH pairs: a .txt file or a directory of them, a .jsonl file (field --text-field), "
        "or hf:PATH for a local Hugging Face dataset (needs `datasets`). User files are evaluated whole.",
    )
    p.add_argument(
        "--ckpt",
        type=Path,
        required=True,
        help="checkpoint directory (or a run directory: its latest checkpoint)",
    )
    p.add_argument(
        "--data",
        nargs="+",
        default=["synthetic"],
        metavar="SPEC",
        help="what to evaluate on (default: synthetic)",
    )
    p.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=8, help="batches per domain at most")
    p.add_argument("--text-field", default="text", help="JSONL / dataset field holding the text")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic domains' eval split")
    p.add_argument("--no-routing", action="store_true", help="skip routing statistics")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    h = p.add_argument_group(
        "lm-eval",
        "benchmark scores from lm-evaluation-harness on the checkpoint's "
        "transformers model and tokenizer (needs a tokenizer.json; pip install 'moelab[eval]')",
    )
    h.add_argument("--tasks", metavar="T1,T2", help="lm-eval task names, comma-separated")
    h.add_argument(
        "--num-fewshot", type=int, default=None, metavar="N", help="few-shot examples (default: each task's)"
    )
    h.add_argument(
        "--limit", type=float, default=None, metavar="N", help="documents per task (a fraction if < 1)"
    )
    h.add_argument(
        "--include-path", default="", metavar="DIR", help="a directory of your own task YAML files"
    )


def parse_data(specs: list[str], text_field: str):  # -> list[DataSource]
    from moelab.data.sources import DataSource

    out: list[DataSource] = []
    for spec in specs:
        if spec == "synthetic":
            out.extend(DataSource(d) for d in DOMAINS)
        elif "=" in spec:
            domain, path = spec.split("=", 1)
            if path.startswith("hf:"):
                out.append(DataSource(domain, kind="hf", path=path[3:], text_field=text_field))
            elif path.endswith(".jsonl") or path.endswith(".json"):
                out.append(DataSource(domain, kind="jsonl", path=path, text_field=text_field))
            else:
                out.append(DataSource(domain, kind="text", path=path))
        elif spec in DOMAINS:
            out.append(DataSource(spec))
        else:
            raise ConfigError(
                f"--data {spec!r}: expected 'synthetic', one of {', '.join(DOMAINS)}, or DOMAIN=PATH"
            )
    return out


def run(args: argparse.Namespace) -> int:
    from moelab.data.mixture import DataConfig
    from moelab.io.atomic import write_text_atomic
    from moelab.train.checkpointing import latest_checkpoint
    from moelab.train.evaluate import evaluate_checkpoint
    from moelab.train.trainer import resolve_device

    ckpt = args.ckpt
    if not (ckpt / "config.json").exists():
        latest = latest_checkpoint(ckpt / "checkpoints") or (
            ckpt / "checkpoint" if (ckpt / "checkpoint" / "config.json").exists() else None
        )
        if latest is None:
            raise ConfigError(
                f"--ckpt {ckpt}: not a checkpoint (no config.json) nor a run directory with one"
            )
        ckpt = latest
    harness = None
    if args.tasks is not None:
        from moelab.train.harness import HarnessConfig

        harness = HarnessConfig(
            tasks=[t.strip() for t in args.tasks.split(",")],
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            batch_size=args.batch_size,
            include_path=args.include_path,
        )
        harness.validate()  # before the perplexity pass, so a bad option costs nothing
    sources = parse_data(args.data, args.text_field)
    user = any(s.kind != "synthetic" for s in sources)
    data = DataConfig(
        sources=sources, seq_len=args.seq_len, seed=args.seed, eval_fraction=1.0 if user else 0.05
    )
    device = resolve_device(args.device)
    res = evaluate_checkpoint(
        ckpt, data, args.batch_size, args.batches, device, with_routing=not args.no_routing, harness=harness
    )
    text = json.dumps(res, indent=2) + "\n"
    for d, v in res["domains"].items():
        print(f"{d:>12}: loss {v['loss']:.4f}  ppl {v['ppl']:.3f}  ({v['tokens']} tokens)", file=sys.stderr)
    print(
        f"{'average':>12}: loss {res['average']['loss']:.4f}  ppl {res['average']['ppl']:.3f}",
        file=sys.stderr,
    )
    for task, scores in (res.get("lm_eval") or {}).get("tasks", {}).items():
        shown = "  ".join(f"{k} {v:.4f}" for k, v in scores.items() if "stderr" not in k)
        print(f"{task:>12}: {shown}", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
