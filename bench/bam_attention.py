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
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from moelab.models.attention import Attention, ExpertAttention
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.rope import RotaryEmbedding, apply_rope
from moelab.models.routing import RouterLogits, mixture_weights

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


class SeparateAttentionExperts(nn.Module):
    """The peer: the same mixture Σᵢ wᵢ · Attentionᵢ(x) as N separate attention modules (plain
    torch, one nn.Linear per projection and expert; shared-KV: one K and V), mixed by the softmax
    router: what a straightforward implementation does. Built from an ExpertAttention, whose
    weights it copies; same call and return as ExpertAttention, so it can replace it in a model.
    Llama-style attention only (no q/k norms, biases, windows or soft-caps: the bench's models)."""

    def __init__(self, m: ExpertAttention) -> None:
        super().__init__()
        if m.qk_norm or m.experts.q_bias is not None or m.window or m.cap:
            raise ValueError(
                "SeparateAttentionExperts: plain Llama-style attention experts only"
            )
        self.layer, self.top_k, self.rule, self.shared_kv = (
            m.layer,
            m.top_k,
            m.rule,
            m.shared_kv,
        )
        self.n_heads, self.n_kv, self.head_dim, self.scale = (
            m.n_heads,
            m.n_kv,
            m.head_dim,
            m.scale,
        )
        self.router = copy.deepcopy(m.router)

        def linears(w: torch.Tensor) -> nn.ModuleList:
            out = nn.ModuleList()
            for wi in w.detach():
                lin = nn.Linear(
                    wi.shape[1],
                    wi.shape[0],
                    bias=False,
                    device=wi.device,
                    dtype=wi.dtype,
                )
                lin.weight.data.copy_(wi)
                out.append(lin)
            return out

        self.q_proj, self.o_proj = linears(m.experts.q_proj), linears(m.experts.o_proj)
        if self.shared_kv:
            self.k_proj, self.v_proj = copy.deepcopy(m.k_proj), copy.deepcopy(m.v_proj)
        else:
            self.k_proj, self.v_proj = (
                linears(m.experts.k_proj),
                linears(m.experts.v_proj),
            )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: object = None,
    ) -> tuple[torch.Tensor, RouterLogits]:
        b, t, _ = x.shape
        h, kv, d = self.n_heads, self.n_kv, self.head_dim
        logits = self.router(x).reshape(b * t, -1)
        w = mixture_weights(logits, self.top_k, self.rule).to(x.dtype).view(b, t, -1)

        def heads(y: torch.Tensor, n: int) -> torch.Tensor:
            return y.view(b, t, n, d).transpose(1, 2)

        if self.shared_kv:
            ks = apply_rope(heads(self.k_proj(x), kv), cos, sin)
            vs = heads(self.v_proj(x), kv)
        out = torch.zeros_like(x)
        for i, (q_proj, o_proj) in enumerate(
            zip(self.q_proj, self.o_proj, strict=True)
        ):
            q = apply_rope(heads(q_proj(x), h), cos, sin)
            if self.shared_kv:
                k, v = ks, vs
            else:
                k = apply_rope(heads(self.k_proj[i](x), kv), cos, sin)
                v = heads(self.v_proj[i](x), kv)
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.scale, enable_gqa=h != kv
            )
            out = out + w[..., i : i + 1] * o_proj(
                y.transpose(1, 2).reshape(b, t, h * d)
            )
        return out, RouterLogits(self.layer, "attn", logits, self.top_k)


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
    sep_ekv, sep_skv = SeparateAttentionExperts(ekv), SeparateAttentionExperts(skv)
    for m, sep in ((ekv, sep_ekv), (skv, sep_skv)):  # equal results before any timing
        torch.testing.assert_close(m(x, cos, sin)[0], sep(x, cos, sin)[0], **tol)
    torch.testing.assert_close(skv(x, cos, sin)[0], skv_tiled(skv, x, cos, sin), **tol)
    fns = {
        "dense attention (1 expert)": lambda: dense(x, cos, sin)[0],
        "ekv: moelab stacked": lambda: ekv(x, cos, sin)[0],
        "ekv: N separate calls": lambda: sep_ekv(x, cos, sin)[0],
        "skv: moelab stacked (GQA)": lambda: skv(x, cos, sin)[0],
        "skv: stacked, K/V tiled": lambda: skv_tiled(skv, x, cos, sin),
        "skv: N separate calls": lambda: sep_skv(x, cos, sin)[0],
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
