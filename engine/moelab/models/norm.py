"""RMSNorm as the families compute it: normalised in fp32, then scaled by w (Llama: after the
cast back; OLMo2, Gemma: before it) or by (1 + w) (Gemma)."""

from __future__ import annotations

import torch

from moelab.models.config import ModelConfig


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim, in fp32."""
    h = x.float()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def scale_normed(
    h: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype, offset: float, weight_fp32: bool
) -> torch.Tensor:
    """The fp32 normalised `h` times the norm weight, in `dtype`; `weight` broadcasts against h."""
    if weight_fp32:
        w = weight.float() + offset if offset else weight.float()
        return (h * w).to(dtype)
    return (weight + offset if offset else weight) * h.to(dtype)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float, offset: float = 0.0, weight_fp32: bool = False) -> None:
        super().__init__()
        # Gemma's stored weight is the deviation from 1, so an unscaled norm is all zeros.
        self.weight = torch.nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps, self.offset, self.weight_fp32 = eps, offset, weight_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale_normed(rms_normalize(x, self.eps), self.weight, x.dtype, self.offset, self.weight_fp32)


def family_norm(cfg: ModelConfig, dim: int) -> RMSNorm:
    arch = cfg.arch
    return RMSNorm(dim, cfg.rms_norm_eps, arch.norm_offset, arch.norm_weight_fp32)
