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
