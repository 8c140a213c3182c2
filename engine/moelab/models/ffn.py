"""SwiGLU feed-forward: the dense block, and the sparse mixture of FFN experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.models.config import ModelConfig
from moelab.models.routing import RouterLogits, route_top_k


class DenseFFN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Experts(nn.Module):
    """N SwiGLU experts stacked: w1 (gate) and w3 (up) [E, F, d], w2 (down) [E, d, F] (Mixtral's names)."""

    def __init__(self, n: int, hidden: int, inner: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n, inner, hidden))
        self.w3 = nn.Parameter(torch.empty(n, inner, hidden))
        self.w2 = nn.Parameter(torch.empty(n, hidden, inner))
        for p in (self.w1, self.w2, self.w3):
            nn.init.normal_(p, std=0.02)

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x: [N, d]; idx, weights: [N, k]. Tokens are sorted by expert so each expert runs one
        matmul over a contiguous slice (dropless)."""
        n_tok, k = idx.shape
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        token_of_slot = order // k
        counts = torch.bincount(flat, minlength=self.w1.shape[0]).tolist()
        xs = x.index_select(0, token_of_slot)
        outs = []
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            xe = xs[start : start + c]
            outs.append((F.silu(xe @ self.w1[e].t()) * (xe @ self.w3[e].t())) @ self.w2[e].t())
            start += c
        ys = torch.cat(outs) if outs else xs.new_zeros(0, x.shape[-1])
        ys = ys * weights.reshape(-1)[order].unsqueeze(-1).to(ys.dtype)
        return x.new_zeros(n_tok, x.shape[-1]).index_add_(0, token_of_slot, ys)


class SparseMoE(nn.Module):
    """Top-k routed FFN experts; the router is `gate` as in Mixtral's `block_sparse_moe`."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        assert cfg.moe is not None
        self.layer, self.top_k = layer, cfg.moe.top_k
        self.gate = nn.Linear(cfg.hidden_size, cfg.moe.num_experts, bias=False)
        self.experts = Experts(cfg.moe.num_experts, cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterLogits]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.gate(flat)
        weights, idx = route_top_k(logits, self.top_k)
        y = self.experts(flat, idx, weights)
        return y.view(shape), RouterLogits(self.layer, "ffn", logits, self.top_k)
