"""Routers: logits, top-k selection, and the per-router record every MoE layer exposes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RouterLogits:
    """One router's logits for every token of the batch: [tokens, experts]."""

    layer: int
    kind: str  # "ffn" | "attn"
    logits: torch.Tensor
    top_k: int  # 0 = soft mixture over all experts

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=-1)

    def selected(self) -> torch.Tensor:
        """[tokens, k] indices of the experts each token is routed to (top-1 for a soft router)."""
        k = self.top_k if self.top_k > 0 else 1
        return self.logits.topk(k, dim=-1).indices

    @property
    def sparse(self) -> bool:
        """Top-k routing that leaves experts out: per-token expert sets (co-activation, saturation)
        mean something only then; a soft or all-expert router uses every expert for every token."""
        return 0 < self.top_k < self.logits.shape[-1]


def top_k_mask(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[tokens, k] expert indices -> [tokens, experts] float one-hot mask of each token's expert set."""
    idx = indices.reshape(-1, indices.shape[-1]).long()
    return torch.zeros(idx.shape[0], num_experts, device=idx.device).scatter_(1, idx, 1.0)


def route_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral's rule: softmax in fp32, keep the top k, renormalise so the kept weights sum to 1."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights, idx = probs.topk(k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, idx


def mixture_weights(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Dense [tokens, experts] mixture weights: softmax for k == 0 (soft), else renormalised top-k."""
    if k <= 0 or k >= logits.shape[-1]:
        return torch.softmax(logits.float(), dim=-1)
    weights, idx = route_top_k(logits, k)
    return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, idx, weights)
