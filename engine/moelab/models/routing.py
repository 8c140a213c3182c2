"""Routers: logits, top-k selection, and the per-router record every MoE layer exposes."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import torch

RouterKind = Literal["ffn", "attn"]  # an FFN (block_sparse_moe.gate) or an attention (BAM) router
ROUTER_KINDS: tuple[RouterKind, ...] = typing.get_args(RouterKind)


@dataclass
class RouterLogits:
    """One router's logits for every token of the batch: [tokens, experts]."""

    layer: int
    kind: RouterKind
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


# How the kept top-k probabilities become mixture weights (MoEConfig.router_weights):
# - "st" (default): the forward value is Mixtral's renormalised weight (the kept weights sum to 1,
#   so identical experts reproduce the dense model exactly, for every k), the gradient is that of
#   the kept raw probabilities (straight-through). Renormalising alone makes the single weight of
#   top-1 routing the constant 1: the router would get no gradient from the language-model loss.
# - "renorm": Mixtral exactly, forward and gradient (no LM-loss gradient at k = 1).
# - "raw": Switch Transformer: the kept probabilities unnormalised, forward and gradient. The
#   weights of a token sum to less than 1, so the identical-experts invariant does not hold.
RouterWeights = Literal["st", "renorm", "raw"]
ROUTER_WEIGHTS: tuple[RouterWeights, ...] = typing.get_args(RouterWeights)


def route_top_k(
    logits: torch.Tensor, k: int, rule: RouterWeights = "st"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax in fp32, keep the top k; returns ([tokens, k] weights, [tokens, k] expert indices)."""
    probs = torch.softmax(logits.float(), dim=-1)
    kept, idx = probs.topk(k, dim=-1)
    if rule == "raw":
        return kept, idx
    renorm = kept / kept.sum(dim=-1, keepdim=True)
    if rule == "renorm":
        return renorm, idx
    if rule != "st":
        raise ValueError(f"router_weights {rule!r}: expected one of {ROUTER_WEIGHTS}")
    return kept + (renorm - kept).detach(), idx


def mixture_weights(logits: torch.Tensor, k: int, rule: RouterWeights = "st") -> torch.Tensor:
    """Dense [tokens, experts] mixture weights: softmax for k == 0 (soft), else top-k by `rule`."""
    if k <= 0 or k >= logits.shape[-1]:
        return torch.softmax(logits.float(), dim=-1)
    weights, idx = route_top_k(logits, k, rule)
    return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, idx, weights)
