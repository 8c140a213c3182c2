"""Router jitter noise (Switch Transformer; Mixtral's `router_jitter_noise`): in training only, the
router's input is multiplied elementwise by noise drawn uniformly from [1-ε, 1+ε], so routing
decisions near a tie flip and the router explores. Only the router sees the noise: the experts
compute on the clean input (Switch's rule)."""

from __future__ import annotations

import torch


def router_jitter(x: torch.Tensor, eps: float, training: bool) -> torch.Tensor:
    if not training or eps <= 0:
        return x
    return x * torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)
