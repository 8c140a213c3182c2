"""Router auxiliary losses, computed per router (attention routers included, as BAM does)."""

from __future__ import annotations

import torch

from moelab.models.routing import RouterLogits


def load_balancing_loss(r: RouterLogits) -> torch.Tensor:
    """N · Σᵢ fᵢ Pᵢ (Switch / Mixtral): fᵢ the fraction of routing slots given to expert i,
    Pᵢ its mean router probability. Equals 1 for a perfectly balanced router. A soft router's
    fᵢ counts each token's top-1 expert."""
    probs = r.probs()
    n = probs.shape[-1]
    sel = r.selected()
    counts = torch.zeros(n, device=probs.device, dtype=probs.dtype)
    counts.scatter_add_(0, sel.reshape(-1), torch.ones(sel.numel(), device=probs.device, dtype=probs.dtype))
    f = counts / sel.numel()
    return n * (f * probs.mean(dim=0)).sum()


def z_loss(r: RouterLogits) -> torch.Tensor:
    """mean over tokens of logsumexp(logits)² (ST-MoE): keeps router logits small."""
    return torch.logsumexp(r.logits.float(), dim=-1).pow(2).mean()


def mixtral_aux_loss_coef(alpha: float, top_k: int, n_moe_layers: int) -> float:
    """transformers' Mixtral `router_aux_loss_coef` that balances as strongly as α does here.

    Per router, transformers' loss is k times ours (it counts routed slots per token, not per
    token·k: a balanced router scores k, ours 1). Across layers, transformers computes ONE loss
    over all L layers' concatenated router logits, E·k·Σᵢ F̄ᵢ P̄ᵢ with F̄, P̄ the slot fractions and
    mean probabilities averaged over the layers, where the engine sums L per-router losses
    α·Σ_l E·Σᵢ f_{l,i} P_{l,i}. So coef = α·L / k makes the two equal in value and in gradient
    whenever every layer has the same expert loads (balanced routers included); when the loads
    differ, transformers pushes each layer's probabilities against the load averaged over the
    layers (∂/∂P_{l,i} ∝ F̄ᵢ), the engine against the layer's own load (∝ f_{l,i})."""
    return alpha * n_moe_layers / top_k
