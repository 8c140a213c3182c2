"""BAM attention experts: one stacked attention call vs N separate ones vs dense.

Part 1 (timing, CPU): moelab's ExpertAttention (expert-KV, shared-KV) against
  - the same mixture computed as N separate dense attention calls, one per expert, summed with the
    router's weights (what a straightforward implementation does), and
  - shared-KV with K/V tiled E times (moelab's previous code) instead of SDPA's enable_gqa,
  - one dense attention (the seed's cost: the floor).
FLOPs per token at the BAM paper's configuration: bench/flops_convention.py (the engine's count).

    .venv/bin/python bench/bam_attention.py [--reps 7] [--threads 1]
    .venv/bin/python bench/bam_attention.py --device cuda --dtype bf16 --shapes gpu --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from moelab.models.attention import Attention, ExpertAttention
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.rope import RotaryEmbedding, apply_rope
from moelab.models.routing import mixture_weights

SHAPES = {  # batch, seq, hidden, heads, experts
    "demo": (8, 128, 128, 4, 4),
    "medium": (2, 512, 512, 8, 4),
    # bench/gpu.sh: a Mixtral-width attention layer with 8 attention experts.
    "gpu": (4, 2048, 4096, 32, 8),
    "tiny": (
        2,
        16,
        32,
        4,
        4,
    ),  # bench/gpu.sh --tiny: end to end in a second, not a measurement
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def separate_calls(
    m: ExpertAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Σᵢ wᵢ · Attentionᵢ(x) as N attention calls (shared-KV: K and V computed once, Q/O per expert)."""
    b, t, _ = x.shape
    h, kv, d = m.n_heads, m.n_kv, m.head_dim
    w = (
        mixture_weights(m.router(x).reshape(b * t, -1), m.top_k)
        .to(x.dtype)
        .view(b, t, -1)
    )
    ex = m.experts
    if m.shared_kv:
        ks = apply_rope(m.k_proj(x).view(b, t, kv, d).transpose(1, 2), cos, sin)
        vs = m.v_proj(x).view(b, t, kv, d).transpose(1, 2)
    out = torch.zeros_like(x)
    for i in range(m.n_experts):
        q = apply_rope(
            F.linear(x, ex.q_proj[i]).view(b, t, h, d).transpose(1, 2), cos, sin
        )
        if m.shared_kv:
            k, v = ks, vs
        else:
            k = apply_rope(
                F.linear(x, ex.k_proj[i]).view(b, t, kv, d).transpose(1, 2), cos, sin
            )
            v = F.linear(x, ex.v_proj[i]).view(b, t, kv, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=h != kv)
        out = out + w[..., i : i + 1] * F.linear(
            y.transpose(1, 2).reshape(b, t, h * d), ex.o_proj[i]
        )
    return out


def skv_tiled(
    m: ExpertAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Shared-KV as moelab computed it before: the one K/V tiled E times to meet the stacked heads."""
    b, t, _ = x.shape
    e, h, kv, d = m.n_experts, m.n_heads, m.n_kv, m.head_dim
    w = (
        mixture_weights(m.router(x).reshape(b * t, e), m.top_k)
        .to(x.dtype)
        .view(b, t, e)
    )
    q = (
        torch.einsum("bth,eoh->bteo", x, m.experts.q_proj)
        .reshape(b, t, e * h, d)
        .transpose(1, 2)
    )
    k = (
        m.k_proj(x)
        .view(b, t, kv, d)
        .transpose(1, 2)
        .repeat_interleave(h // kv, dim=1)
        .repeat(1, e, 1, 1)
    )
    v = (
        m.v_proj(x)
        .view(b, t, kv, d)
        .transpose(1, 2)
        .repeat_interleave(h // kv, dim=1)
        .repeat(1, e, 1, 1)
    )
    y = F.scaled_dot_product_attention(
        apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, is_causal=True
    )
    y = y.transpose(1, 2).reshape(b, t, e, h * d) * w.unsqueeze(-1)
    o = m.experts.o_proj.permute(1, 0, 2).reshape(-1, e * h * d)
    return y.reshape(b, t, e * h * d) @ o.t()


def median_ms(
    fns: dict[str, Callable[[], torch.Tensor]],
    reps: int,
    backward: bool,
    device: str = "cpu",
) -> dict[str, float]:
    """Round-robin over the variants (a neighbour's load hits them alike), median per variant."""
    times: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(reps + 1):
        for n, f in fns.items():
            sync(device)
            t0 = time.perf_counter()
            if backward:
                f().float().sum().backward()
            else:
                with torch.no_grad():
                    f()
            sync(device)
            if r:  # round 0 is the warm-up
                times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(ts) * 1e3 for n, ts in times.items()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_shape(
    name: str,
    b: int,
    t: int,
    hid: int,
    heads: int,
    e: int,
    reps: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict:
    base = {
        "vocab_size": 256,
        "hidden_size": hid,
        "intermediate_size": hid * 3,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "model_type": "moelab",
    }
    torch.manual_seed(0)
    dense_cfg = ModelConfig(**base)
    ekv = ExpertAttention(
        ModelConfig(**base, moe=MoEConfig(num_experts=e, attn_experts=True)), 0
    )
    skv = ExpertAttention(
        ModelConfig(
            **base, moe=MoEConfig(num_experts=e, attn_experts=True, shared_kv=True)
        ),
        0,
    )
    dense = Attention(dense_cfg)
    for m in (ekv, skv, dense):
        m.to(device=device, dtype=dtype)
    cos, sin = RotaryEmbedding(dense_cfg)(t, torch.device(device), dtype)
    x = torch.randn(b, t, hid, device=device, dtype=dtype)
    tol = (
        {"atol": 1e-5, "rtol": 1e-4}
        if dtype == torch.float32
        else {"atol": 3e-2, "rtol": 3e-2}
    )
    for m in (ekv, skv):  # equal results before any timing
        torch.testing.assert_close(
            m(x, cos, sin)[0], separate_calls(m, x, cos, sin), **tol
        )
    torch.testing.assert_close(skv(x, cos, sin)[0], skv_tiled(skv, x, cos, sin), **tol)
    fns = {
        "dense attention (1 expert)": lambda: dense(x, cos, sin)[0],
        "ekv: moelab stacked": lambda: ekv(x, cos, sin)[0],
        "ekv: N separate calls": lambda: separate_calls(ekv, x, cos, sin),
        "skv: moelab stacked (GQA)": lambda: skv(x, cos, sin)[0],
        "skv: stacked, K/V tiled": lambda: skv_tiled(skv, x, cos, sin),
        "skv: N separate calls": lambda: separate_calls(skv, x, cos, sin),
    }
    dt = str(dtype).removeprefix("torch.")
    print(
        f"\n== {name}: batch {b}, seq {t}, d={hid}, {heads} heads, {e} experts, soft routing, {dt}, {device}"
    )
    fwd = median_ms(fns, reps, backward=False, device=device)
    fb = median_ms(fns, reps, backward=True, device=device)
    print(
        f"  {'variant':30s} {'fwd ms':>9s} {'fwd+bwd ms':>11s}   fwd+bwd speed-up of stacked over separate"
    )
    for n in fns:
        ref = (
            "ekv: N separate calls" if n.startswith("ekv") else "skv: N separate calls"
        )
        note = f"×{fb[ref] / fb[n]:.2f}" if n.startswith(("ekv", "skv")) else ""
        print(f"  {n:30s} {fwd[n]:9.2f} {fb[n]:11.2f}   {note}")
    return {
        "shape": name,
        "batch": b,
        "seq": t,
        "hidden": hid,
        "heads": heads,
        "experts": e,
        "dtype": dt,
        "device": device,
        "forward_ms": fwd,
        "forward+backward_ms": fb,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument(
        "--shapes", nargs="*", default=["demo", "medium"], help=f"of {sorted(SHAPES)}"
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the results here"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: the machine is shared)"
    )
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bam_attention.py: --device cuda but torch.cuda.is_available() is False"
        )
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    results = [
        time_shape(
            n, *SHAPES[n], reps=args.reps, device=args.device, dtype=DTYPES[args.dtype]
        )
        for n in args.shapes
    ]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
