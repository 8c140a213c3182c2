"""Export-friendly forms of modules whose eager forward cannot be traced.

`Experts.forward` sizes its per-expert groups with host-side integers (`counts.tolist()`,
`int(counts.max())`): data that exporters cannot trace. While exporting we swap each `Experts` for
`TraceableExperts`, which loops over the (static) experts and selects each expert's tokens with
`nonzero` — a data-dependent *shape*, which torch.export and ONNX (NonZero) do handle — then adds
the weighted outputs back with `index_add` (ScatterND add). Same sum as the eager experts, same
FLOPs (top-k of E, not all E), and expert capacity is honoured. The swap shares the parameters
(no copy) and is undone on exit, so the model is left as it was.

Top-k attention experts pack each expert's tokens with host-side sizes too; while exporting they
run every expert and weight it by the sparse top-k weights (zero for the experts a token did not
pick): the same function at the soft mixture's cost, which the inspection graph can afford.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from moelab.models.attention import ExpertAttention
from moelab.models.ffn import Experts


class TraceableExperts(nn.Module):
    """Same call as `Experts` (x [N, d], idx [N, k], weights [N, k]) with no host-side sizes."""

    def __init__(self, experts: Experts) -> None:
        super().__init__()
        # The very same Parameter objects: the exported weights are the checkpoint's.
        self.w1, self.w2, self.w3 = experts.w1, experts.w2, experts.w3
        self.capacity_factor = float(getattr(experts, "capacity_factor", 0.0) or 0.0)
        self.act_fn = experts.act_fn

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n_experts = self.w1.shape[0]
        n_tok, k = idx.shape
        if self.capacity_factor > 0:
            weights = weights * self._kept(idx, n_tok, k, n_experts).to(weights.dtype)
        out = torch.zeros_like(x)
        for e in range(n_experts):
            hit = idx == e  # [N, k]; a token picks an expert at most once
            tokens = hit.any(-1).nonzero().squeeze(-1)
            w = (weights * hit.to(weights.dtype)).sum(-1).index_select(0, tokens).to(x.dtype)
            xe = x.index_select(0, tokens)
            ye = (self.act_fn(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())) @ self.w2[e].t()
            out = out.index_add(0, tokens, ye * w.unsqueeze(-1))
        return out

    def _kept(self, idx: torch.Tensor, n_tok: int, k: int, n_experts: int) -> torch.Tensor:
        """[N, k] mask of the slots an expert with capacity keeps: the eager rule (slots ranked by
        their flattened index token·k + j within their expert, rank < ceil(cf·N·k/E)) written
        with a cumulative sum instead of a sort."""
        onehot = F.one_hot(idx.reshape(-1), n_experts)  # [N·k, E]
        rank = ((onehot.cumsum(0) - onehot) * onehot).sum(-1)  # earlier slots of the same expert
        cap = torch.clamp(
            torch.ceil(torch.tensor(self.capacity_factor, dtype=torch.float64) * (n_tok * k) / n_experts),
            min=1,
        )
        return (rank < cap).view(n_tok, k)


def _stacked_matmul(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """ExpertAttention._stacked ([B, T, hid] × [E, out, hid] -> [B, T, E, out]) as one MatMul:
    onnxruntime's Einsum kernel is slower than its MatMul (about 10% of the demo model's time)."""
    e, o, h = w.shape
    y = (x @ w.reshape(e * o, h).t()).view(*x.shape[:-1], e, o)
    return y + bias if bias is not None else y


@contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every `Experts` of `model` is a `TraceableExperts` sharing its parameters,
    and attention experts stack their projections with MatMul."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    patched: list[nn.Module] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is Experts:
                    swapped.append((parent, name, child))
                    setattr(parent, name, TraceableExperts(child))
            # Only when the method exists with the expected role; otherwise the einsum stays
            # (correct, just slower in onnxruntime).
            if isinstance(parent, ExpertAttention) and callable(getattr(parent, "_stacked", None)):
                # Instance attributes that shadow the methods for the trace (restored below).
                parent._stacked = _stacked_matmul  # type: ignore[method-assign]
                parent._routed = parent._soft  # type: ignore[method-assign]
                patched.append(parent)
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
        for m in patched:
            del m._stacked, m._routed
