"""`moelab plan`: per-rank training memory of a model on N GPUs, whether it fits, the largest micro-batch.

    moelab plan --ckpt DIR | --config FILE --gpus N --gpu-mem GIB [--seq L] [--batch B]
                [--parallel fsdp|fsdp+ep] [--dtype bf16|fp32] [--activation-checkpointing] [--json]

What is counted, and what is not, is in moelab/analysis/memory_plan.py. No weight is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PARALLEL = ("fsdp", "fsdp+ep")  # memory_plan.PARALLEL; repeated so that --help imports no torch


def add_parser(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser(
        "plan",
        help=help_text,
        description=help_text + ". Counting rules: moelab/analysis/memory_plan.py. No weight is read.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--ckpt", type=Path, metavar="DIR", help="checkpoint directory (only its config.json is read)"
    )
    what.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a model config.json, or a train config (its model, seq_len, batch_size, levers)",
    )
    p.add_argument("--gpus", type=int, required=True, metavar="N", help="ranks (one GPU each)")
    p.add_argument("--gpu-mem", type=float, required=True, metavar="GIB", help="memory of one GPU, GiB")
    p.add_argument("--seq", type=int, metavar="L", help="tokens per sequence (default: config's, else 4096)")
    p.add_argument(
        "--batch",
        type=int,
        metavar="B",
        help="sequences per micro-batch on each rank (default: a train config's batch_size / N, else 1)",
    )
    p.add_argument("--parallel", choices=PARALLEL, default="fsdp", help="fsdp+ep splits the FFN experts")
    p.add_argument("--dtype", choices=("bf16", "fp32"), help="compute dtype (default: bf16)")
    p.add_argument(
        "--activation-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute each layer in the backward (default: the train config's, else off)",
    )
    p.add_argument("--grad-accum", type=int, metavar="K", help="micro-batches per step (default 1)")
    p.add_argument(
        "--headroom",
        type=float,
        default=0.1,
        metavar="F",
        help="share of the GPU kept for the CUDA context, NCCL and fragmentation (default 0.1)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    out.add_argument("--brief", action="store_true", help="print one line: the peak, the verdict, max batch")


def _gib(n: float) -> str:
    return f"{n / 1024**3:8.2f} GiB"


def _model_line(cfg: Any, params: int) -> str:
    m = cfg.moe
    text = f"{cfg.model_type} ({cfg.family}), {cfg.num_hidden_layers} layers, d {cfg.hidden_size}"
    text += f", vocab {cfg.vocab_size}, {params / 1e9:.2f} B params"
    if m is not None:
        attn = ""
        if m.attn_experts:
            kind = "soft" if not 0 < m.attn_top_k < m.num_experts else f"top-{m.attn_top_k}"
            attn = f"; attention experts {kind}, {'shared' if m.shared_kv else 'expert'}-KV"
        text += f"; {len(m.moe_layers)} MoE layers, {m.num_experts} FFN experts top-{m.top_k}{attn}"
    return text


def _brief(source: Any, result: Any) -> str:
    s = result.setup
    name = Path(source.what).parent.name or source.what
    ac = "on" if s["activation_checkpointing"] else "off"
    other = "off" if s["activation_checkpointing"] else "on"
    ep = f" (ep {result.expert_parallel})" if s["parallel"] == "fsdp+ep" else ""
    return (
        f"{name}: {s['gpus']} × {s['gpu_mem_gib']:g} GiB, {s['parallel']}{ep}, AC {ac}, batch {s['batch']} × {s['seq']}: peak {result.peak / 1024**3:.1f} GiB "
        f"({'fits' if result.fits else 'does NOT fit'}); max batch {result.max_batch} (AC {other}: "
        f"{result.max_batch_other})"
    )


def _print(source: Any, result: Any) -> None:
    s, c = result.setup, result.components
    ep = f" (FFN experts over {result.expert_parallel} ranks)" if s["parallel"] == "fsdp+ep" else ""
    ac = "on" if s["activation_checkpointing"] else "off"
    print(f"model        {source.what}")
    print(f"             {_model_line(source.model, result.params_total)}")
    print(
        f"setup        {s['gpus']} GPUs × {s['gpu_mem_gib']:g} GiB, {s['parallel']}{ep}, {s['dtype']}, "
        f"seq {s['seq']} × micro-batch {s['batch']} per rank, grad accum {s['grad_accum']}, "
        f"activation checkpointing {ac}"
    )
    print(f"per rank, at the peak ({result.peak_phase}):")
    rows = [
        ("parameters (fp32 shards: master weights)", c["parameters"]),
        ("gradients (fp32 shards)", c["gradients"]),
        ("optimizer (AdamW: 2 fp32 states)", c["optimizer"]),
        (f"activations (checkpointing {ac})", c["activations"]),
        ("loss (logits and their gradients)", c["loss"]),
        ("buffers (gathered params, grads, all-to-all)", c["buffers"]),
    ]
    for name, value in rows:
        print(f"  {name:46s}{_gib(value)}")
    print(f"  {'total':46s}{_gib(result.peak)}")
    print(
        f"activations  all layers: {_gib(result.activations_without_checkpointing).strip()} without "
        f"checkpointing, {_gib(result.activations_with_checkpointing).strip()} with; "
        f"largest layer {_gib(max(result.activations_per_layer)).strip()}"
    )
    verdict = "fits" if result.fits else "does NOT fit"
    print(
        f"budget       {_gib(result.budget).strip()} ({s['gpu_mem_gib']:g} GiB less {s['headroom']:.0%} "
        f"headroom): {verdict}"
    )
    other = "on" if ac == "off" else "off"
    print(
        f"max batch    {result.max_batch} sequences per rank (checkpointing {ac}); "
        f"{result.max_batch_other} with checkpointing {other}"
    )
    for note in result.notes:
        print(f"note         {note}")


def run(args: argparse.Namespace) -> int:
    # torch (through the model's meta build) only when planning, not for --help.
    from moelab.analysis import plan_source
    from moelab.analysis.memory_plan import Setup, plan
    from moelab.errors import ConfigError

    if args.gpus < 1:
        raise ConfigError(f"--gpus {args.gpus}: must be at least 1")
    source = (
        plan_source.from_checkpoint(args.ckpt)
        if args.ckpt is not None
        else plan_source.from_config_file(args.config, args.gpus)
    )
    given = {
        "seq": args.seq,
        "batch": args.batch,
        "dtype": args.dtype,
        "activation_checkpointing": args.activation_checkpointing,
        "grad_accum": args.grad_accum,
    }
    chosen = source.defaults | {k: v for k, v in given.items() if v is not None}
    setup = Setup(
        gpus=args.gpus,
        gpu_mem_gib=args.gpu_mem,
        parallel=args.parallel,
        headroom=args.headroom,
        **chosen,
    )
    result = plan(source.model, setup)
    if args.json:
        json.dump({"source": source.what, **result.to_dict()}, sys.stdout, indent=2)
        print()
    elif args.brief:
        print(_brief(source, result))
    else:
        _print(source, result)
    return 0
