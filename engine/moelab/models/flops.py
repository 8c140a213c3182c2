"""Executed FLOPs per token, from a ModelConfig alone (no weights).

What is counted is what the engine's forward runs, per token:
- matmuls with weights: attention Q, K, V, O projections, FFN (SwiGLU: gate, up, down), routers
  (d·E each), and the LM head (d·V; tied or not, it is a matmul).
- attention scores: QKᵀ and A·V, 2·keys·head_dim multiply-adds per query head, where keys is the
  number of positions a token attends to (see `Convention.attention`).
- attention experts (BAM): a soft mixture (attn_top_k 0, or ≥ num_experts) runs every expert;
  top-k runs Q, O and the scores for the k selected experts only, while expert-KV computes K and V
  of ALL experts for every token (a later token routed to expert i needs this token's Kᵢ, Vᵢ) and
  shared-KV one K and V. (The engine packs each expert's routed queries per batch row and pads
  the rows to the longest, so a batch of several rows runs some padding on top of this count.)
- FFN experts: top_k experts per token, dropless (a capacity factor can only drop work, so the
  count is then an upper bound). UpIT's LoRA experts: the shared gate and up projections once,
  then per selected expert the shared down projection and the three low-rank deltas.
Not counted (no matmul with a weight, and a few per cent at most): the embedding lookup, norms,
RoPE, softmax, SiLU, biases, residual adds and the router's mixing of expert outputs.

Units: a multiply-add (MAC) is 2 FLOPs. Training executes forward + backward; for matmuls the
backward computes the gradient of the input and of the weight, each as costly as the forward, so a
training token costs 3× its forward (`TRAIN_MULTIPLIER`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from moelab.errors import ConfigError
from moelab.models.config import ModelConfig

TRAIN_MULTIPLIER = 3  # forward 1× + backward 2× (input and weight gradients) for every matmul
ATTENTION_MODES = ("causal", "full", "none")
UNITS = ("flop", "mac")


@dataclass(frozen=True)
class Convention:
    """How a per-token count is stated; papers differ in each of these.

    attention: "causal" = the mean over the T positions of a causal sequence, (T+1)/2 keys per
    query (what a causal kernel that skips masked blocks runs, and the figure that reproduces
    the BAM paper's numbers); "full" = T keys per query (PaLM / Kaplan; what a dense-mask kernel
    and torch's FlopCounterMode count); "none" = scores left out (the 2·N rule).
    unit: "flop" (a multiply-add is 2) or "mac".
    lm_head: include the LM head's d·V (whole-model counts usually do; per-layer ones do not).
    """

    seq_len: int = 2048
    attention: Literal["causal", "full", "none"] = "causal"
    unit: Literal["flop", "mac"] = "flop"
    lm_head: bool = True

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ConfigError(f"FLOPs convention: seq_len {self.seq_len} must be positive")
        if self.attention not in ATTENTION_MODES:
            raise ConfigError(
                f"FLOPs convention: attention {self.attention!r}: expected one of {ATTENTION_MODES}"
            )
        if self.unit not in UNITS:
            raise ConfigError(f"FLOPs convention: unit {self.unit!r}: expected one of {UNITS}")

    @property
    def keys_per_query(self) -> float:
        if self.attention == "full":
            return float(self.seq_len)
        if self.attention == "causal":
            return (self.seq_len + 1) / 2
        return 0.0

    def describe(self) -> str:
        keys = {
            "causal": f"causal, mean (T+1)/2 keys per query at T={self.seq_len}",
            "full": f"full T={self.seq_len} keys per query",
            "none": "scores not counted",
        }[self.attention]
        unit = "FLOPs (1 multiply-add = 2)" if self.unit == "flop" else "multiply-adds"
        return f"forward {unit} per token; attention {keys}; LM head {'in' if self.lm_head else 'out'}"


@dataclass
class LayerMacs:
    """Forward multiply-adds per token in one decoder layer, by part."""

    layer: int
    attn_proj: float = 0.0  # Q, K, V, O projections
    attn_scores: float = 0.0  # QKᵀ and A·V
    ffn: float = 0.0
    router: float = 0.0

    @property
    def total(self) -> float:
        return self.attn_proj + self.attn_scores + self.ffn + self.router


@dataclass
class FlopCount:
    """Per-token forward count in the convention's unit: per layer, the LM head, and the total."""

    convention: Convention
    per_layer: list[dict[str, float]] = field(default_factory=list)
    lm_head: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "convention": self.convention.__dict__ | {"text": self.convention.describe()},
            "per_layer": self.per_layer,
            "lm_head": self.lm_head,
            "total": self.total,
        }


def active_attention_experts(cfg: ModelConfig) -> int:
    """Attention experts a token runs (Q, O, scores) in a MoE layer with attention experts."""
    m = cfg.moe
    assert m is not None
    return m.attn_top_k if 0 < m.attn_top_k < m.num_experts else m.num_experts


def layer_macs(cfg: ModelConfig, layer: int, keys_per_query: float) -> LayerMacs:
    d, h, kv, hd, f = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.intermediate_size,
    )
    q_o = 2 * d * h * hd  # Q and O projections of one attention (expert)
    k_v = 2 * d * kv * hd
    scores = 2 * keys_per_query * hd * h  # QKᵀ and A·V for h query heads
    out = LayerMacs(layer)
    m = cfg.moe
    if cfg.is_moe_layer(layer) and m is not None and m.attn_experts:
        k = active_attention_experts(cfg)
        out.attn_proj = k * q_o + (1 if m.shared_kv else m.num_experts) * k_v
        out.attn_scores = k * scores
        out.router += d * m.num_experts
    else:
        out.attn_proj, out.attn_scores = q_o + k_v, scores
    if not cfg.is_moe_layer(layer) or m is None:
        out.ffn = 3 * d * f
    elif m.lora_rank > 0:
        r = m.lora_rank
        # Shared gate and up once; per selected expert: shared down + low-rank deltas of all three.
        out.ffn = 2 * d * f + m.top_k * (d * f + 3 * r * (d + f))
        out.router += d * m.num_experts
    else:
        out.ffn = m.top_k * 3 * d * f
        out.router += d * m.num_experts
    return out


def forward_flops(cfg: ModelConfig, conv: Convention | None = None) -> FlopCount:
    """Forward FLOPs (or MACs) per token of the model `cfg` under `conv`."""
    conv = conv or Convention()
    scale = 2 if conv.unit == "flop" else 1
    count = FlopCount(conv)
    for i in range(cfg.num_hidden_layers):
        lay = layer_macs(cfg, i, conv.keys_per_query)
        count.per_layer.append(
            {
                "layer": i,
                "attn_proj": scale * lay.attn_proj,
                "attn_scores": scale * lay.attn_scores,
                "ffn": scale * lay.ffn,
                "router": scale * lay.router,
                "total": scale * lay.total,
            }
        )
    count.lm_head = scale * cfg.hidden_size * cfg.vocab_size if conv.lm_head else 0.0
    count.total = sum(p["total"] for p in count.per_layer) + count.lm_head
    return count


def train_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """FLOPs one training step executes on a [batch, seq_len] batch: forward + backward of every
    token, causal attention (each position attends to the positions up to it)."""
    per_token = forward_flops(cfg, Convention(seq_len=seq_len, attention="causal", unit="flop")).total
    return TRAIN_MULTIPLIER * per_token * batch * seq_len
