"""Parameter counts of a checkpoint from its safetensors headers (no weight is read).

- total: every tensor on disk (a tied head is stored once, as the embedding).
- active per token: total minus what a token does not use, the same rule as the FLOPs count
  (models/flops.py): in each MoE layer the (E - top_k) FFN experts it is not routed to and, for
  top-k attention experts, the Q and O projections of the (E - attn_top_k) unselected experts.
  Expert-KV K and V run for every expert (later tokens routed there read them): all active.
  A soft attention mixture runs every expert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from moelab.io import layout
from moelab.io.safetensors_file import tensor_shapes
from moelab.models.config import ModelConfig
from moelab.models.flops import active_attention_experts


@dataclass
class ParamCount:
    total: int = 0
    active: int = 0
    per_layer: list[dict[str, int]] = field(default_factory=list)  # layer, params, ffn_experts, attn_experts
    numel: dict[str, int] = field(default_factory=dict)
    dtypes: list[str] = field(default_factory=list)


def count_params(ckpt: Path, cfg: ModelConfig) -> ParamCount:
    shapes = tensor_shapes(ckpt)
    numel = {layout.engine_name(n): math.prod(s) for n, (s, _) in shapes.items()}
    out = ParamCount(total=sum(numel.values()), numel=numel, dtypes=sorted({dt for _, dt in shapes.values()}))
    # (layer, "ffn"|"attn") -> expert -> proj -> params
    experts: dict[tuple[int, str], dict[int, dict[str, int]]] = {}
    for name, n in numel.items():
        for kind, pattern in (("ffn", layout.FFN_EXPERT), ("attn", layout.ATTN_EXPERT)):
            if m := pattern.match(name):
                by_proj = experts.setdefault((int(m[1]), kind), {}).setdefault(int(m[2]), {})
                by_proj[m[3]] = by_proj.get(m[3], 0) + n
    inactive = 0
    for i in range(cfg.num_hidden_layers):
        ffn, attn = experts.get((i, "ffn"), {}), experts.get((i, "attn"), {})
        if ffn and cfg.moe:
            all_ffn = sum(sum(p.values()) for p in ffn.values())
            inactive += all_ffn - round(cfg.moe.top_k * all_ffn / len(ffn))
        if attn and cfg.moe:
            q_o = sum(
                n for p in attn.values() for proj, n in p.items() if proj in layout.ATTN_PER_TOKEN_MATRICES
            )
            inactive += q_o - round(active_attention_experts(cfg) * q_o / len(attn))
        out.per_layer.append(
            {
                "layer": i,
                "ffn_experts": len(ffn),
                "attn_experts": len(attn),
                "params": sum(n for name, n in numel.items() if name.startswith(f"model.layers.{i}.")),
            }
        )
    out.active = out.total - inactive
    return out
