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

The families' attention features apply per expert as in the dense attention: q/k norms (per
expert; shared-KV's k_norm is shared with K), sliding windows, score soft-caps and scales.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from moelab.models.config import ModelConfig, QKNorm
from moelab.models.jitter import router_jitter
from moelab.models.kv_cache import KVCache
from moelab.models.norm import family_norm, rms_normalize, scale_normed
from moelab.models.rope import apply_rope
from moelab.models.routing import RouterLogits, mixture_weights, route_top_k


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: [B, Hq, T, D]; k, v: [B, Hkv, T, D] with Hq a multiple of Hkv (GQA): query head n reads
    K/V head n // (Hq / Hkv). SDPA's enable_gqa does that without materialising repeated K/V."""
    if q.shape[1] != k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def visible_keys(q_pos: torch.Tensor, t: int, window: int | None) -> torch.Tensor:
    """[..., Tq, T] bool, True where the query at position q_pos [..., Tq] may read the key at
    position j < t: j <= q_pos, and q_pos - j < window when windowed (transformers'
    sliding_window_overlay: a query sees itself and the window-1 keys before it)."""
    d = q_pos.unsqueeze(-1) - torch.arange(t, device=q_pos.device)
    return (d >= 0) & (d < window) if window is not None else d >= 0


def cached_mask(t: int, total: int, window: int | None, device: torch.device) -> torch.Tensor:
    """[t, total] `visible_keys` of t new queries after total - t cached keys (a KV cache)."""
    return visible_keys(torch.arange(total - t, total, device=device), total, window)


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap·tanh(x/cap) (Gemma2's attention scores and final logits); identity without a cap."""
    return x if cap is None else torch.tanh(x / cap) * cap


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    window: int | None = None,
    cap: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """GQA attention (q [B, Hq, Tq, D]; k, v [B, Hkv, T, D]) with a score scale (None: 1/sqrt(D)), an
    optional score soft-cap and a bool `mask` broadcasting to [B, Hq, Tq, T] (None: causal over Tq = T,
    within `window`). The plain causal case keeps SDPA's is_causal kernel; a soft-cap acts between
    the two matmuls, where SDPA has no hook, so it runs eagerly (scores [B, Hkv, Hq/Hkv, Tq, T])."""
    if mask is None and cap is None and window is None and scale is None:
        return _causal_attention(q, k, v)
    b, hq, tq, d = q.shape
    hkv, t = k.shape[1], k.shape[2]
    if mask is None:
        mask = visible_keys(torch.arange(tq, device=q.device), t, window)
    if cap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=hq != hkv)
    qg = q.view(b, hkv, hq // hkv, tq, d)
    scores = softcap((qg @ k.unsqueeze(2).transpose(-1, -2)) * (d**-0.5 if scale is None else scale), cap)
    grouped = mask.unsqueeze(-3) if mask.dim() > 2 else mask  # [B, 1, Tq, T] -> [B, 1, 1, Tq, T]
    probs = torch.softmax(scores.masked_fill(~grouped, float("-inf")).float(), dim=-1).to(q.dtype)
    return (probs @ v.unsqueeze(2)).view(b, hq, tq, d)


def qk_normed(
    y: torch.Tensor, norm: Callable[[torch.Tensor], torch.Tensor] | None, mode: QKNorm, head_dim: int
) -> torch.Tensor:
    """A q or k projection y [..., heads·d] through its norm: over each head (mode "head": Qwen3,
    Gemma3) or over all of y ("full": OLMo2); y itself when the family has none ("")."""
    if norm is None or not mode:
        return y
    if mode == "full":
        return norm(y)
    return norm(y.view(*y.shape[:-1], -1, head_dim)).view(y.shape)


def _layer_attention_settings(
    cfg: ModelConfig, layer: int
) -> tuple[float | None, int | None, float | None, QKNorm]:
    """The per-layer attention settings every attention module carries: score scale, window,
    soft-cap and q/k norm mode."""
    scale = cfg.attn_scale() if cfg.query_pre_attn_scalar is not None else None
    return scale, cfg.window(layer), cfg.attn_logit_softcapping, cfg.arch.qk_norm


class AttentionExperts(nn.Module):
    """The stacked parameters of BAM's attention experts ([E, ...] each), a module of its own so that
    they are saved as `self_attn.experts.*`. Expert-KV has k/v_proj here, shared-KV one K/V beside it;
    the q/k norms exist with the family's q/k norm only."""

    q_proj: nn.Parameter
    o_proj: nn.Parameter
    q_bias: nn.Parameter | None
    k_proj: nn.Parameter
    v_proj: nn.Parameter
    k_bias: nn.Parameter | None
    v_bias: nn.Parameter | None
    q_norm: nn.Parameter
    k_norm: nn.Parameter


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.layer = layer
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = h, kv, d
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)
        self.scale, self.window, self.cap, self.qk_norm = _layer_attention_settings(cfg, layer)
        if self.qk_norm:  # Qwen3/Gemma3: over each head (head_dim); OLMo2: over the whole projection
            self.q_norm = family_norm(cfg, d if self.qk_norm == "head" else h * d)
            self.k_norm = family_norm(cfg, d if self.qk_norm == "head" else kv * d)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, None]:
        b, t, _ = x.shape
        q = qk_normed(self.q_proj(x), getattr(self, "q_norm", None), self.qk_norm, self.head_dim)
        k = qk_normed(self.k_proj(x), getattr(self, "k_norm", None), self.qk_norm, self.head_dim)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        k = apply_rope(k, cos, sin)
        mask = None
        if cache is not None:
            k, v = cache.update(k, v, self.layer)
            mask = cached_mask(t, k.shape[2], self.window, x.device)
        y = attend(apply_rope(q, cos, sin), k, v, self.scale, self.window, self.cap, mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1)), None


class ExpertAttention(nn.Module):
    """BAM attention experts. Parameters are stacked over experts (dim 0); on disk each expert's
    slice is `self_attn.experts.{e}.{q,k,v,o}_proj.weight` (io/layout.py)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.moe is not None
        m = cfg.moe
        e, h, kv, d, hid = (
            m.num_experts,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.hidden_size,
        )
        self.layer, self.n_experts, self.top_k, self.shared_kv = layer, e, m.attn_top_k, m.shared_kv
        self.rule = m.router_weights
        self.n_heads, self.n_kv, self.head_dim = h, kv, d
        self.jitter_noise = m.router_jitter_noise
        self.router = nn.Linear(hid, e, bias=False)
        self.experts = AttentionExperts()
        self.scale, self.window, self.cap, self.qk_norm = _layer_attention_settings(cfg, layer)
        self.norm_args = (cfg.rms_norm_eps, cfg.arch.norm_offset, cfg.arch.norm_weight_fp32)
        if self.qk_norm:
            # q/k norms belong to their projection: per expert, except shared-KV's one k_norm.
            fill = torch.zeros if cfg.arch.norm_offset else torch.ones
            self.experts.q_norm = nn.Parameter(fill(e, d if self.qk_norm == "head" else h * d))
            if self.shared_kv:
                self.k_norm = family_norm(cfg, d if self.qk_norm == "head" else kv * d)
            else:
                self.experts.k_norm = nn.Parameter(fill(e, d if self.qk_norm == "head" else kv * d))
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
        for p in (
            self.experts.q_proj,
            self.experts.o_proj,
            getattr(self.experts, "k_proj", None),
            getattr(self.experts, "v_proj", None),
        ):
            if isinstance(p, nn.Parameter):
                nn.init.normal_(p, std=0.02)

    def _stacked(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """[B, T, hid] × [E, out, hid] -> [B, T, E, out]: one GEMM over the experts' rows stacked
        (a free reshape of the parameter), rather than an einsum that may permute and copy."""
        e, o, hid = w.shape
        y = F.linear(x, w.reshape(e * o, hid), None if bias is None else bias.reshape(e * o))
        return y.view(*x.shape[:-1], e, o)

    def _expert_norm(self, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """Per-expert q/k norm of projections y [..., E, heads·d] with weights w [E, n], or of one
        expert's y [..., heads·d] with its w [n]; y itself when the family has no q/k norm (w None)."""
        if not self.qk_norm or w is None:
            return y
        eps, offset, fp32 = self.norm_args
        wb = (
            w.unsqueeze(-2) if self.qk_norm == "head" and w.dim() == 2 else w
        )  # [E, 1, d] vs [..., E, heads, d]
        return qk_normed(
            y,
            lambda z: scale_normed(rms_normalize(z, eps), wb, z.dtype, offset, fp32),
            self.qk_norm,
            self.head_dim,
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, RouterLogits]:
        b, t, _ = x.shape
        logits = self.router(router_jitter(x, self.jitter_noise, self.training)).reshape(
            b * t, self.n_experts
        )
        k, v = self._keys_values(x, cos, sin)
        mask = None
        if cache is not None:  # k, v then start with the cached tokens' (all experts' heads)
            k, v = cache.update(k, v, self.layer)
            mask = cached_mask(t, k.shape[2], self.window, x.device)
        if 0 < self.top_k < self.n_experts:
            out = self._routed(x, logits, k, v, cos, sin)
        else:
            out = self._soft(x, logits, k, v, cos, sin, mask)
        return out, RouterLogits(self.layer, "attn", logits, self.top_k)

    def _keys_values(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Roped K and V for every token: [B, E·kv, T, d] (expert-KV: experts' heads side by side)
        or [B, kv, T, d] (shared-KV). Every expert needs the keys of every earlier token, whichever
        experts those tokens were routed to, so K/V run for all tokens."""
        b, t, _ = x.shape
        kv, d = self.n_kv, self.head_dim
        if self.shared_kv:
            k = (
                qk_normed(self.k_proj(x), getattr(self, "k_norm", None), self.qk_norm, d)
                .view(b, t, kv, d)
                .transpose(1, 2)
            )
            v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        else:
            e = self.n_experts
            k = self._stacked(x, self.experts.k_proj, self.experts.k_bias)
            k = (
                self._expert_norm(k, getattr(self.experts, "k_norm", None))
                .reshape(b, t, e * kv, d)
                .transpose(1, 2)
            )
            v = (
                self._stacked(x, self.experts.v_proj, self.experts.v_bias)
                .reshape(b, t, e * kv, d)
                .transpose(1, 2)
            )
        return apply_rope(k, cos, sin), v

    def _soft(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every expert for every token, mixed by the softmax of the router: one attention call over
        the stacked heads of all experts."""
        b, t, _ = x.shape
        e, h, kv, d = self.n_experts, self.n_heads, self.n_kv, self.head_dim
        weights = mixture_weights(logits, self.top_k, self.rule).to(x.dtype).view(b, t, e)
        q = self._stacked(x, self.experts.q_proj, self.experts.q_bias)  # [B, T, E, h*d]
        q = self._expert_norm(q, getattr(self.experts, "q_norm", None))
        if self.shared_kv:
            # Query heads ordered (kv group g, expert i, head j of the group): GQA then sends all
            # E·h/kv heads of group g to the one shared K/V head g, no tiled copies of K and V.
            q = q.view(b, t, e, kv, h // kv, d).permute(0, 3, 2, 4, 1, 5).reshape(b, e * h, t, d)
        else:
            # Heads of all experts side by side: expert i's head j is head i*h + j, its K/V head
            # i*kv + j // (h/kv): the plain GQA mapping over the stacked heads.
            q = q.reshape(b, t, e * h, d).transpose(1, 2)
        y = attend(apply_rope(q, cos, sin), k, v, self.scale, self.window, self.cap, mask)  # [B, E*h, T, d]
        # Back to [B, T, E, h, d] (shared-KV: undo the group-major head order).
        y = y.view(b, kv, e, h // kv, t, d).permute(0, 4, 2, 1, 3, 5) if self.shared_kv else y.transpose(1, 2)
        y = y.reshape(b, t, e, h * d) * weights.unsqueeze(-1)
        # Σᵢ wᵢ Oᵢ yᵢ as one matmul over the stacked heads.
        o = self.experts.o_proj.permute(1, 0, 2).reshape(-1, e * h * d)
        return y.reshape(b, t, e * h * d) @ o.t()

    def _routed(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """Top-k: each expert's Q projection, attention and O projection run only for the tokens
        routed to it. Per expert, each batch row's routed tokens are packed to the front (in position
        order) and attend, through a position mask, over the expert's keys of all earlier tokens."""
        b, t, hid = x.shape
        e, h, kv, d = self.n_experts, self.n_heads, self.n_kv, self.head_dim
        weights, idx = route_top_k(logits, self.top_k, self.rule)
        w = torch.zeros(b * t, e, dtype=weights.dtype, device=x.device).scatter(1, idx, weights).view(b, t, e)
        routed = torch.zeros(b * t, e, dtype=torch.bool, device=x.device).scatter(1, idx, True).view(b, t, e)
        counts = routed.sum(dim=1)  # [B, E]
        longest = counts.max(dim=0).values.tolist()  # one host sync for all experts' buffer sizes
        # unbind, not q_proj[i]: the backward of E separate selects writes E full-size zero gradients.
        wq, wo = self.experts.q_proj.unbind(0), self.experts.o_proj.unbind(0)
        bq = self.experts.q_bias.unbind(0) if self.experts.q_bias is not None else [None] * e
        nq = self.experts.q_norm.unbind(0) if self.qk_norm else [None] * e
        past = k.shape[2] - t  # cached tokens before x's (0 without a cache)
        out = x.new_zeros(b, t, hid)
        for i in range(e):
            tq = longest[i]
            if tq == 0:
                continue
            # Routed positions first, in order (stable sort); the padding after them carries weight 0.
            pos = torch.argsort((~routed[..., i]).to(torch.int8), dim=1, stable=True)[:, :tq]  # [B, tq]
            xq = x.gather(1, pos.unsqueeze(-1).expand(b, tq, hid))
            q = self._expert_norm(F.linear(xq, wq[i], bq[i]), nq[i]).view(b, tq, h, d).transpose(1, 2)
            q = apply_rope(q, cos[pos].unsqueeze(1), sin[pos].unsqueeze(1))
            heads = slice(None) if self.shared_kv else slice(i * kv, (i + 1) * kv)
            visible = visible_keys(pos + past, k.shape[2], self.window).unsqueeze(
                1
            )  # [B, 1, tq, T]: causal at packed positions
            y = attend(q, k[:, heads], v[:, heads], self.scale, self.window, self.cap, mask=visible)
            o = F.linear(y.transpose(1, 2).reshape(b, tq, h * d), wo[i])
            wi = w[..., i].gather(1, pos).to(o.dtype).unsqueeze(-1)
            out = out.scatter_add(1, pos.unsqueeze(-1).expand(b, tq, hid), o * wi)
        return out
