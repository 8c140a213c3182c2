"""Which FLOPs convention reproduces the BAM paper's per-token figures (BTX 21.51M, BAM 48.26M)?

The paper's small configuration: d_model 1024, FFN 4096, 8 heads (head_dim 128), 6 layers,
SwiGLU, 4 experts (domains), BTX top-2 FFN experts, BAM expert-KV with soft attention experts.
Every figure here comes from the engine's own count (moelab.models.flops), varied over the
convention choices papers make: unit (FLOP = 2 MAC, or MAC), scope (one layer, the 6 layers, or
with the LM head), attention scores (causal mean (T+1)/2 keys, full T, none) and T, the FFN
experts a token runs (top-1/top-2), the FFN inner size (4096; 2048 if "FFN 4096" names the fused
gate+up output; 1024 if the 4096 is split over the 4 experts; 2730 = 2/3·4096), and routers in or out. It prints the table of the usual conventions, then
every grid point matching both figures to the paper's two decimals.

    PYTHONPATH=engine python bench/flops_convention.py [--vocab 32000]
"""

from __future__ import annotations

import argparse
import itertools
from typing import NamedTuple

from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.flops import Convention, forward_flops

PAPER = {"btx": 21.51e6, "bam": 48.26e6}
D, FFN, HEADS, LAYERS, E = 1024, 4096, 8, 6, 4


def config(method: str, ffn: int, top_k: int, vocab: int) -> ModelConfig:
    moe = MoEConfig(
        num_experts=E,
        top_k=top_k,
        moe_layers=list(range(LAYERS)),
        attn_experts=method == "bam",
        method="btx" if method == "btx" else "bam-ekv",
    )
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=D,
        intermediate_size=ffn,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        model_type="moelab",
        moe=moe,
    )


class Way(NamedTuple):
    """One way of counting. scope: "layer" (one MoE layer), "layers" (all 6), "model" (+ LM head)."""

    ffn: int
    top_k: int
    unit: str
    attention: str
    seq: int
    scope: str
    router: bool = True


def per_token(method: str, w: Way, vocab: int) -> float:
    conv = Convention(
        seq_len=w.seq, attention=w.attention, unit=w.unit, lm_head=w.scope == "model"
    )  # type: ignore[arg-type]
    count = forward_flops(config(method, w.ffn, w.top_k, vocab), conv)
    layers = count.per_layer[:1] if w.scope == "layer" else count.per_layer
    return (
        sum(p["total"] - (0 if w.router else p["router"]) for p in layers)
        + count.lm_head
    )


def matches(btx: float, bam: float) -> bool:
    return round(btx / 1e6, 2) == round(PAPER["btx"] / 1e6, 2) and round(
        bam / 1e6, 2
    ) == round(PAPER["bam"] / 1e6, 2)


ROWS = [  # (label, options)
    (
        "engine default: whole model + LM head, FLOPs, causal T=2048, top-2",
        Way(FFN, 2, "flop", "causal", 2048, "model"),
    ),
    (
        "one layer, FLOPs, causal T=2048, top-2",
        Way(FFN, 2, "flop", "causal", 2048, "layer"),
    ),
    ("one layer, FLOPs, full T=128, top-2", Way(FFN, 2, "flop", "full", 128, "layer")),
    ("one layer, MACs, no scores, top-1", Way(FFN, 1, "mac", "none", 1, "layer")),
    (
        "one layer, FLOPs, full T=128, top-1, FFN inner 2048",
        Way(FFN // 2, 1, "flop", "full", 128, "layer"),
    ),
    (
        "one layer, FLOPs, causal T=256, top-1, FFN inner 2048",
        Way(FFN // 2, 1, "flop", "causal", 256, "layer"),
    ),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--vocab",
        type=int,
        default=32000,
        help="vocabulary for the LM head (not in the paper summary)",
    )
    args = ap.parse_args()
    print(
        f"BAM small configuration: d={D}, FFN {FFN} SwiGLU, {HEADS} heads, {LAYERS} layers, {E} experts; "
        f"vocab {args.vocab} (LM head rows only). Paper: BTX 21.51M, BAM 48.26M, ratio 2.24.\n"
    )
    print(
        "| convention | BTX | BAM (expert-KV, soft) | BAM/BTX | both match |\n|---|---|---|---|---|"
    )
    for label, way in ROWS:
        btx, bam = (per_token(m, way, args.vocab) for m in ("btx", "bam"))
        print(
            f"| {label} | {btx / 1e6:.2f}M | {bam / 1e6:.2f}M | {bam / btx:.2f} | {'yes' if matches(btx, bam) else 'no'} |"
        )

    grid = itertools.product(
        (FFN, FFN // 2, FFN // 4, 2 * FFN // 3),
        (1, 2),
        ("flop", "mac"),
        ("causal", "full", "none"),
        (64, 128, 256, 512, 1024, 2048, 4096, 8192),
        ("layer", "layers", "model"),
        (True, False),
    )
    hits = []
    for ffn, k, unit, attention, seq, scope, router in grid:
        if attention == "none" and seq != 64:
            continue  # T does not enter
        way = Way(ffn, k, unit, attention, seq, scope, router)
        btx, bam = (per_token(m, way, args.vocab) for m in ("btx", "bam"))
        if matches(btx, bam):
            hits.append(
                f"  ffn inner {ffn}, top-{k}, {unit}, {attention} T={seq}, {scope}, "
                f"router {'in' if router else 'out'}: BTX {btx / 1e6:.4f}M, BAM {bam / 1e6:.4f}M"
            )
    print(f"\ngrid points matching both figures to two decimals ({len(hits)}):")
    print("\n".join(hits) or "  none")


if __name__ == "__main__":
    main()
