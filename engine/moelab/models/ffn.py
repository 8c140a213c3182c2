"""Gated feed-forward (SwiGLU; GeGLU for Gemma): the dense block, and the sparse mixture of FFN experts.

The experts have three interchangeable implementations that compute the same function (tested
to fp32 round-off, outputs and gradients, in tests/test_fast_paths.py):

- ``loop``: the reference. Tokens sorted by expert, one matmul per expert over its contiguous
  slice. Simple, and a Python loop over experts with one host sync (the group sizes).
- ``grouped_mm``: the same sort, then ONE grouped matmul per projection (``torch._grouped_mm``,
  offsets = int32 cumulative group ends): no Python loop, no host sync when dropless. On CUDA its
  CUTLASS kernel wants bf16 (under autocast we cast to it, as torchtitan's GroupedExperts does);
  other dtypes take ATen's host-synced per-group fallback, so ``auto`` uses it for bf16 only.
- ``padded``: slots scattered into an [E, C, d] buffer and run as batched matmuls (``bmm``),
  C = the capacity, or the largest group when dropless (one host sync). Static shapes when a
  capacity factor is set, so it is the GPU path for capacity-limited training and for dtypes the
  grouped kernel does not take.

``auto`` picks per device; the CPU choice is measured in bench/moe_layer.py (see RESULTS.md).

Capacity (``MoEConfig.capacity_factor`` > 0): expert e takes at most
``ceil(capacity_factor · N · k / E)`` of the N·k routed slots. Slots are ranked by token order
(the flattened [batch·time] index; GShard / Switch "first come"), the overflow is dropped: a
dropped slot contributes nothing and the token's other weights are NOT renormalised, so a token
dropped by all its experts leaves the MoE as zeros (the residual stream carries it). 0 = dropless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from moelab.models.config import ModelConfig
from moelab.models.grouped_mm import grouped_mm
from moelab.models.jitter import router_jitter
from moelab.models.routing import RouterLogits, route_top_k

IMPLEMENTATIONS = ("auto", "loop", "grouped_mm", "padded")
# The gate activations of the families (config.Family.hidden_act), as transformers' ACT2FN computes them.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
}


class DenseFFN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act_fn = ACTIVATIONS[cfg.arch.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def expert_capacity(capacity_factor: float, n_tokens: int, k: int, n_experts: int) -> int:
    """Slots per expert for a capacity factor; 0 means dropless."""
    if capacity_factor <= 0:
        return 0
    return max(1, math.ceil(capacity_factor * n_tokens * k / n_experts))


def _sort_slots(idx: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Routing slots (token·k + j) sorted by expert, stable so that within an expert the earlier
    token comes first (the capacity priority). Returns (expert of each slot [S], order [S],
    counts [E]). Counts come from scatter_add, not bincount: bincount syncs with the host on
    CUDA to size its output."""
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.zeros(n_experts, dtype=torch.int64, device=idx.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    return flat, order, counts


def _rank_in_expert(flat: torch.Tensor, order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """For each sorted slot, its position inside its expert's group."""
    starts = counts.cumsum(0) - counts
    return torch.arange(order.numel(), device=order.device) - starts[flat[order]]


def _combine(ys: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ys [S', d] in sorted-slot order (S' ≤ S = N·k; missing slots were dropped) -> Σⱼ wⱼ yⱼ [N, d].
    The slots go back to token order by a scatter with unique indices and are reduced by a
    batched matmul over k, not an index_add: no atomics, so it is deterministic on CUDA, and bmm
    accumulates low-precision inputs in fp32."""
    n_tok, k = weights.shape
    d = ys.shape[-1]
    y = ys.new_zeros(n_tok * k, d).index_copy(0, order, ys).view(n_tok, k, d)
    return torch.bmm(weights.to(ys.dtype).unsqueeze(1), y).squeeze(1)


def _grouped_mm_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether torch._grouped_mm runs its real kernel for these operands (no host-synced fallback)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    item = w.element_size()
    # The kernels need 16-byte aligned row strides for both operands.
    if any(s * item % 16 for s in w.shape[1:]):
        return False
    if x.device.type == "cuda":
        # CUTLASS grouped GEMM: bf16 only (ATen loops over groups with a host sync otherwise).
        return w.dtype == torch.bfloat16 or (
            torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
        )
    return x.device.type == "cpu" and x.dtype == w.dtype


def _gmm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """x [S, in] sorted by group, w [G, out, in] (nn.Linear layout) -> [S, out]."""
    if x.dtype != w.dtype:  # autocast: _grouped_mm is not autocast-aware, so cast by hand
        w = w.to(x.dtype)
    if torch.compiler.is_compiling() and w.dtype != torch.bfloat16:
        # torch's fake kernel takes bf16 only; ours traces any dtype (models/grouped_mm.py)
        return grouped_mm(x, w.transpose(-2, -1), offs)
    return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)


class Experts(nn.Module):
    """N SwiGLU experts stacked: w1 (gate) and w3 (up) [E, F, d], w2 (down) [E, d, F] (Mixtral's names).

    ``implementation`` (auto | loop | grouped_mm | padded) is a runtime attribute, not saved.
    """

    def __init__(
        self,
        n: int,
        hidden: int,
        inner: int,
        capacity_factor: float = 0.0,
        implementation: str = "auto",
        act: str = "silu",
    ) -> None:
        super().__init__()
        self.act_fn = ACTIVATIONS[act]
        self.w1 = nn.Parameter(torch.empty(n, inner, hidden))
        self.w3 = nn.Parameter(torch.empty(n, inner, hidden))
        self.w2 = nn.Parameter(torch.empty(n, hidden, inner))
        for p in (self.w1, self.w2, self.w3):
            nn.init.normal_(p, std=0.02)
        self.capacity_factor = capacity_factor
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"experts implementation {implementation!r}: expected one of {IMPLEMENTATIONS}")
        self.implementation = implementation

    @property
    def num_experts(self) -> int:
        return self.w1.shape[0]

    def select_implementation(self, x: torch.Tensor) -> str:
        if self.implementation != "auto":
            return self.implementation
        grouped = _grouped_mm_ok(x, self.w1)
        if x.device.type == "cuda":
            # Capacity: the padded path has static shapes (no host sync, CUDA-graph friendly).
            if self.capacity_factor > 0 or not grouped:
                return "padded"
            return "grouped_mm"
        if torch.compiler.is_compiling():
            # Dropless grouped_mm is one graph (the group sizes stay a tensor); with a capacity the
            # kept slots are data-dependent, the padded buffer's shape is not.
            return "padded" if self.capacity_factor > 0 or not grouped else "grouped_mm"
        # CPU: grouped_mm and the loop run the same GEMMs at the same speed at bench sizes; the
        # single grouped call saves per-expert dispatch, which is what small models pay for.
        return "grouped_mm" if grouped else "loop"

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x: [N, d]; idx, weights: [N, k]. Returns Σⱼ weights[:, j] · expert_idx[:, j](x), [N, d]."""
        if x.shape[0] == 0:
            return x.new_zeros(x.shape)
        impl = self.select_implementation(x)
        if impl == "loop":
            return self.forward_loop(x, idx, weights)
        if impl == "grouped_mm":
            return self.forward_grouped(x, idx, weights)
        return self.forward_padded(x, idx, weights)

    def _capacity(self, x: torch.Tensor, k: int) -> int:
        return expert_capacity(self.capacity_factor, x.shape[0], k, self.num_experts)

    def _kept(self, idx: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted slot order and per-expert counts after capacity drops (host sync when dropping)."""
        flat, order, counts = _sort_slots(idx, self.num_experts)
        if cap:
            order = order[_rank_in_expert(flat, order, counts) < cap]
            counts = counts.clamp(max=cap)
        return order, counts

    def forward_loop(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Reference: one matmul per expert over its contiguous slice of the sorted tokens."""
        n_tok, k = idx.shape
        order, counts = self._kept(idx, self._capacity(x, k))
        token_of_slot = order // k
        xs = x.index_select(0, token_of_slot)
        # unbind, not w[e]: the backward of E separate w[e] selects writes E full-size zero
        # gradients, unbind's backward stacks the E slices once.
        w1, w2, w3 = self.w1.unbind(0), self.w2.unbind(0), self.w3.unbind(0)
        outs = []
        start = 0
        for e, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            xe = xs[start : start + c]
            outs.append((self.act_fn(xe @ w1[e].t()) * (xe @ w3[e].t())) @ w2[e].t())
            start += c
        ys = torch.cat(outs) if outs else xs.new_zeros(0, x.shape[-1])
        ys = ys * weights.reshape(-1)[order].unsqueeze(-1).to(ys.dtype)
        return x.new_zeros(n_tok, x.shape[-1]).index_add_(0, token_of_slot, ys)

    def forward_grouped(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One torch._grouped_mm per projection over the expert-sorted slots."""
        k = idx.shape[1]
        order, counts = self._kept(idx, self._capacity(x, k))
        offs = counts.cumsum(0).to(torch.int32)
        xs = x.index_select(0, order // k)
        if x.is_cuda and torch.is_autocast_enabled("cuda"):
            xs = xs.to(torch.get_autocast_dtype("cuda"))
        h = self.act_fn(_gmm(xs, self.w1, offs)) * _gmm(xs, self.w3, offs)
        ys = _gmm(h, self.w2, offs)
        return _combine(ys, order, weights).to(x.dtype)

    def forward_padded(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Slots scattered into [E, C, d], three bmm's, gathered back. With a capacity the shapes
        are static and nothing syncs: overflow slots write to a spare row and are zeroed."""
        n_tok, k = idx.shape
        e, d = self.num_experts, x.shape[-1]
        flat, order, counts = _sort_slots(idx, e)
        rank = _rank_in_expert(flat, order, counts)
        cap = self._capacity(x, k)
        c = cap if cap else int(counts.max())  # dropless: one host sync for the buffer size
        keep = rank < c
        dest = torch.where(keep, flat[order] * c + rank, e * c)  # row e·c is the spare row
        buf = x.new_zeros(e * c + 1, d).index_copy(0, dest, x.index_select(0, order // k))
        xb = buf[: e * c].view(e, c, d)
        h = self.act_fn(torch.bmm(xb, self.w1.transpose(1, 2))) * torch.bmm(xb, self.w3.transpose(1, 2))
        y = torch.bmm(h, self.w2.transpose(1, 2)).reshape(e * c, d)
        ys = y.index_select(0, dest.clamp(max=e * c - 1))
        if cap:
            ys = ys * keep.unsqueeze(-1).to(ys.dtype)  # a dropped slot contributes (and learns) nothing
        return _combine(ys, order, weights).to(x.dtype)


class SparseMoE(nn.Module):
    """Top-k routed FFN experts; the router is `gate` as in Mixtral's `block_sparse_moe`."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.moe is not None
        self.layer, self.top_k, self.rule = layer, cfg.moe.top_k, cfg.moe.router_weights
        self.jitter_noise = cfg.moe.router_jitter_noise
        self.gate = nn.Linear(cfg.hidden_size, cfg.moe.num_experts, bias=False)
        self.experts = Experts(
            cfg.moe.num_experts,
            cfg.hidden_size,
            cfg.intermediate_size,
            capacity_factor=cfg.moe.capacity_factor,
            act=cfg.arch.hidden_act,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterLogits]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.gate(router_jitter(flat, self.jitter_noise, self.training))
        weights, idx = route_top_k(logits, self.top_k, self.rule)
        y = self.experts(flat, idx, weights)
        return y.view(shape), RouterLogits(self.layer, "ffn", logits, self.top_k)
