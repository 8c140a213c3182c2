"""Grouped-query attention, and BAM's attention experts (expert-KV or shared-KV, soft or top-k mixture).

Soft mixture: the attention experts run as ONE attention call over the stacked heads of all
experts; the router's weights scale each expert's head outputs, so one output projection over the
stacked heads computes Σᵢ wᵢ · MHAᵢ(x).

Top-k mixture: only the selected experts run for a token (Q projection, attention scores, O
projection); K and V still run for every token, since a later token routed to an expert attends to
all earlier tokens' keys of that expert. What is executed is what `moelab inspect` counts.

Shared-KV computes K and V once. Rather than tiling them E times (E copies of K and V in memory,
and E times the K/V gradient traffic), the query heads of all experts are ordered KV-group-major
(group g, expert i, head j within the group) so that SDPA's grouped-query attention
(``enable_gqa``) maps every expert's heads onto the one K/V: measured 15-25% faster forward and
backward on CPU than the tiled K/V (bench/bam_attention.py, RESULTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.models.config import ModelConfig
from moelab.models.jitter import router_jitter
from moelab.models.rope import apply_rope
from moelab.models.routing import RouterLogits, mixture_weights, route_top_k


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: [B, Hq, T, D]; k, v: [B, Hkv, T, D] with Hq a multiple of Hkv (GQA): query head n reads
    K/V head n // (Hq / Hkv). SDPA's enable_gqa does that without materialising repeated K/V."""
    if q.shape[1] != k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = h, kv, d
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, None]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        y = _causal_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1)), None


class ExpertAttention(nn.Module):
    """BAM attention experts. Parameters are stacked over experts (dim 0); on disk each expert's
    slice is `self_attn.experts.{e}.{q,k,v,o}_proj.weight` (io/layout.py)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.moe is not None
        m = cfg.moe
        e, h, kv, d, hid = m.num_experts, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
        self.layer, self.n_experts, self.top_k, self.shared_kv = layer, e, m.attn_top_k, m.shared_kv
        self.rule = m.router_weights
        self.n_heads, self.n_kv, self.head_dim = h, kv, d
        self.jitter_noise = m.router_jitter_noise
        self.router = nn.Linear(hid, e, bias=False)
        self.experts = nn.Module()
        self.experts.q_proj = nn.Parameter(torch.empty(e, h * d, hid))
        self.experts.o_proj = nn.Parameter(torch.empty(e, hid, h * d))
        self.experts.q_bias = nn.Parameter(torch.zeros(e, h * d)) if cfg.attention_bias else None
        if self.shared_kv:
            self.k_proj = nn.Linear(hid, kv * d, bias=cfg.attention_bias)
            self.v_proj = nn.Linear(hid, kv * d, bias=cfg.attention_bias)
        else:
            self.experts.k_proj = nn.Parameter(torch.empty(e, kv * d, hid))
            self.experts.v_proj = nn.Parameter(torch.empty(e, kv * d, hid))
            self.experts.k_bias = nn.Parameter(torch.zeros(e, kv * d)) if cfg.attention_bias else None
            self.experts.v_bias = nn.Parameter(torch.zeros(e, kv * d)) if cfg.attention_bias else None
        for p in (self.experts.q_proj, self.experts.o_proj, getattr(self.experts, "k_proj", None),
                  getattr(self.experts, "v_proj", None)):
            if isinstance(p, nn.Parameter):
                nn.init.normal_(p, std=0.02)

    def _stacked(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[B, T, hid] × [E, out, hid] -> [B, T, E, out]: one GEMM over the experts' rows stacked
        (a free reshape of the parameter), rather than an einsum that may permute and copy."""
        e, o, hid = w.shape
        y = F.linear(x, w.reshape(e * o, hid), None if bias is None else bias.reshape(e * o))
        return y.view(*x.shape[:-1], e, o)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, RouterLogits]:
        b, t, _ = x.shape
        logits = self.router(router_jitter(x, self.jitter_noise, self.training)).reshape(b * t, self.n_experts)
        if 0 < self.top_k < self.n_experts:
            out = self._routed(x, logits, cos, sin)
        else:
            out = self._soft(x, logits, cos, sin)
        return out, RouterLogits(self.layer, "attn", logits, self.top_k)

    def _keys_values(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Roped K and V for every token: [B, E·kv, T, d] (expert-KV: experts' heads side by side)
        or [B, kv, T, d] (shared-KV). Every expert needs the keys of every earlier token, whichever
        experts those tokens were routed to, so K/V run for all tokens."""
        b, t, _ = x.shape
        kv, d = self.n_kv, self.head_dim
        if self.shared_kv:
            k = self.k_proj(x).view(b, t, kv, d).transpose(1, 2)
            v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        else:
            e = self.n_experts
            k = self._stacked(x, self.experts.k_proj, self.experts.k_bias).reshape(b, t, e * kv, d).transpose(1, 2)
            v = self._stacked(x, self.experts.v_proj, self.experts.v_bias).reshape(b, t, e * kv, d).transpose(1, 2)
        return apply_rope(k, cos, sin), v

    def _soft(self, x: torch.Tensor, logits: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Every expert for every token, mixed by the softmax of the router: one attention call over
        the stacked heads of all experts."""
        b, t, _ = x.shape
        e, h, kv, d = self.n_experts, self.n_heads, self.n_kv, self.head_dim
        weights = mixture_weights(logits, self.top_k, self.rule).to(x.dtype).view(b, t, e)
        q = self._stacked(x, self.experts.q_proj, self.experts.q_bias)  # [B, T, E, h*d]
        if self.shared_kv:
            # Query heads ordered (kv group g, expert i, head j of the group): GQA then sends all
            # E·h/kv heads of group g to the one shared K/V head g, no tiled copies of K and V.
            q = q.view(b, t, e, kv, h // kv, d).permute(0, 3, 2, 4, 1, 5).reshape(b, e * h, t, d)
        else:
            # Heads of all experts side by side: expert i's head j is head i*h + j, its K/V head
            # i*kv + j // (h/kv): the plain GQA mapping over the stacked heads.
            q = q.reshape(b, t, e * h, d).transpose(1, 2)
        k, v = self._keys_values(x, cos, sin)
        y = _causal_attention(apply_rope(q, cos, sin), k, v)  # [B, E*h, T, d]
        # Back to [B, T, E, h, d] (shared-KV: undo the group-major head order).
        y = y.view(b, kv, e, h // kv, t, d).permute(0, 4, 2, 1, 3, 5) if self.shared_kv else y.transpose(1, 2)
        y = y.reshape(b, t, e, h * d) * weights.unsqueeze(-1)
        # Σᵢ wᵢ Oᵢ yᵢ as one matmul over the stacked heads.
        o = self.experts.o_proj.permute(1, 0, 2).reshape(-1, e * h * d)
        return y.reshape(b, t, e * h * d) @ o.t()

    def _routed(self, x: torch.Tensor, logits: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Top-k: each expert's Q projection, attention and O projection run only for the tokens
        routed to it. Per expert, each batch row's routed tokens are packed to the front (in position
        order) and attend, through a position mask, over the expert's keys of all earlier tokens."""
        b, t, hid = x.shape
        e, h, kv, d = self.n_experts, self.n_heads, self.n_kv, self.head_dim
        weights, idx = route_top_k(logits, self.top_k, self.rule)
        w = torch.zeros(b * t, e, dtype=weights.dtype, device=x.device).scatter(1, idx, weights).view(b, t, e)
        routed = torch.zeros(b * t, e, dtype=torch.bool, device=x.device).scatter(1, idx, True).view(b, t, e)
        k, v = self._keys_values(x, cos, sin)
        counts = routed.sum(dim=1)  # [B, E]
        longest = counts.max(dim=0).values.tolist()  # one host sync for all experts' buffer sizes
        # unbind, not q_proj[i]: the backward of E separate selects writes E full-size zero gradients.
        wq, wo = self.experts.q_proj.unbind(0), self.experts.o_proj.unbind(0)
        bq = self.experts.q_bias.unbind(0) if self.experts.q_bias is not None else [None] * e
        positions = torch.arange(t, device=x.device)
        out = x.new_zeros(b, t, hid)
        for i in range(e):
            tq = longest[i]
            if tq == 0:
                continue
            # Routed positions first, in order (stable sort); the padding after them carries weight 0.
            pos = torch.argsort((~routed[..., i]).to(torch.int8), dim=1, stable=True)[:, :tq]  # [B, tq]
            xq = x.gather(1, pos.unsqueeze(-1).expand(b, tq, hid))
            q = F.linear(xq, wq[i], bq[i]).view(b, tq, h, d).transpose(1, 2)
            q = apply_rope(q, cos[pos].unsqueeze(1), sin[pos].unsqueeze(1))
            heads = slice(None) if self.shared_kv else slice(i * kv, (i + 1) * kv)
            visible = (positions <= pos.unsqueeze(-1)).unsqueeze(1)  # [B, 1, tq, T]: causal at packed positions
            y = F.scaled_dot_product_attention(q, k[:, heads], v[:, heads], attn_mask=visible, enable_gqa=h != kv)
            o = F.linear(y.transpose(1, 2).reshape(b, tq, h * d), wo[i])
            wi = w[..., i].gather(1, pos).to(o.dtype).unsqueeze(-1)
            out = out.scatter_add(1, pos.unsqueeze(-1).expand(b, tq, hid), o * wi)
        return out
