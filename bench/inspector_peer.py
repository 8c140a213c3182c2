"""The Python side of bench/routing_inspector.ts: its peer and its limit, for one checkpoint.

    python bench/inspector_peer.py CKPT --tokens 512 --threads 1 --reps 5 < text

Prints one JSON object:
  - torch_ms: PyTorch eager's full forward (the whole model, LM head included: what a user
    would run to get the routers without an inspection graph), wall ms per run and CPU ms/run;
  - gemm_gflops: this machine's measured GEMM rate on these threads, at the model's own FFN
    shape ([tokens, hidden] × [hidden, ffn], fp32: the GEMMs that dominate both graphs);
  - flops_inspector / flops_full: forward FLOPs of the inspection graph (export/graph.py: the
    layers up to the last router; of the last one, what its routers need; no LM head) and of the
    full forward, from the engine's count (models/flops.py; causal attention);
  - limit_ms_inspector / limit_ms_full: those FLOPs at the measured GEMM rate.
The token ids are the checkpoint's tokenizer's for the text on stdin (UTF-8 bytes for byte-level).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from moelab.export.graph import discover_routers
from moelab.io.checkpoint import load_model
from moelab.models.config import ModelConfig
from moelab.models.flops import Convention, forward_flops


def token_ids(ckpt: Path, text: str, n: int) -> torch.Tensor:
    if (ckpt / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(text).ids
    else:
        ids = list(text.encode("utf-8"))
    if len(ids) < n:
        sys.exit(f"inspector_peer.py: the text gives {len(ids)} tokens, fewer than {n}")
    return torch.tensor([ids[:n]])


def inspection_flops(
    cfg: ModelConfig, last_layer: int, tokens: int
) -> tuple[float, float]:
    """(inspection graph, full forward) FLOPs for `tokens` tokens. The inspection graph runs layers
    0..last_layer; of the last, everything but what feeds no router: its FFN experts, and with a
    parallel block its attention too (both sit after the routers, the exporter drops them)."""
    count = forward_flops(
        cfg, Convention(seq_len=tokens, attention="causal", unit="flop")
    )
    per_token = sum(p["total"] for p in count.per_layer[:last_layer])
    last = count.per_layer[last_layer]
    per_token += last["router"]
    if not cfg.parallel_block:
        per_token += last["attn_proj"] + last["attn_scores"]
    return per_token * tokens, count.total * tokens


def median_ms(fn, reps: int) -> tuple[float, float]:
    """(median wall ms, CPU ms per run) after one warm-up run."""
    fn()
    walls = []
    c0 = time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(walls), (time.process_time() - c0) * 1e3 / reps


def gemm_gflops(m: int, k: int, n: int, reps: int) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    ms, _ = median_ms(lambda: a @ b, max(reps, 5))
    return 2 * m * k * n / ms / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt).eval()
    cfg = model.config
    ids = token_ids(args.ckpt, sys.stdin.read(), args.tokens)
    routers = discover_routers(model)
    with torch.inference_mode():
        wall, cpu = median_ms(
            lambda: [r.probs() for r in model(ids).router_logits], args.reps
        )
    rate = gemm_gflops(args.tokens, cfg.hidden_size, cfg.intermediate_size, args.reps)
    flops_insp, flops_full = inspection_flops(
        cfg, max(r.layer for r in routers), args.tokens
    )
    print(
        json.dumps(
            {
                "torch_ms": {"median": wall, "cpu_per_run": cpu},
                "gemm_gflops": rate,
                "gemm_shape": [args.tokens, cfg.hidden_size, cfg.intermediate_size],
                "flops_inspector": flops_insp,
                "flops_full": flops_full,
                "limit_ms_inspector": flops_insp / rate / 1e6,
                "limit_ms_full": flops_full / rate / 1e6,
            }
        )
    )


if __name__ == "__main__":
    main()
