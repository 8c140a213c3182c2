"""Rotary position embeddings with the Hugging Face rope types Llama-family checkpoints use."""

from __future__ import annotations

import math

import torch

from moelab.errors import ConfigError
from moelab.models.config import ModelConfig


def inv_frequencies(cfg: ModelConfig, local: bool = False) -> torch.Tensor:
    """The rotary frequencies of the full-attention layers, or (local) of Gemma3's sliding layers,
    which have their own base and no scaling."""
    dim = cfg.head_dim
    theta = cfg.rope_local_theta if local and cfg.rope_local_theta is not None else cfg.rope_theta
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = {} if local else cfg.rope_scaling or {}
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        return _llama3(inv, scaling)
    raise ConfigError(f"config.json: rope_type {kind!r} is not supported (default, linear, llama3 are)")


def _llama3(inv: torch.Tensor, s: dict) -> torch.Tensor:
    factor = float(s["factor"])
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_ctx = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(torch.nn.Module):
    inv_freq: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, cfg: ModelConfig, local: bool = False) -> None:
        super().__init__()
        self.cfg, self.local = cfg, local
        self.register_buffer("inv_freq", self.frequencies(), persistent=False)

    def frequencies(self) -> torch.Tensor:
        # Computed on the CPU even when the model is built on the meta device: it is tiny, and
        # meta arange/pow would pull in torch's reference-op machinery for nothing.
        with torch.device("cpu"):
            return inv_frequencies(self.cfg, self.local)

    def forward(
        self, seq_len: int, device: torch.device, dtype: torch.dtype, offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [seq_len, head_dim] for positions offset .. offset + seq_len - 1."""
        pos = torch.arange(offset, offset + seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(device=device, dtype=torch.float32))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, T, head_dim]; cos/sin: [T, head_dim]."""
    return x * cos + _rotate_half(x) * sin
