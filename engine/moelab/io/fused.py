"""Phi-3 stores q/k/v as one `qkv_proj` and gate/up as one `gate_up_proj`; the engine keeps them
split (the names every method copies and averages by). The parts are consecutive row blocks of
the [out, in] weight, so a split is a slice of the tensor, or of its bytes on disk: no copy."""

from __future__ import annotations

import dataclasses
import re
from typing import TypeVar

import torch

from moelab.errors import CheckpointError
from moelab.io.tensor_io import TensorLoc
from moelab.models.config import ModelConfig

_QKV = re.compile(r"^(model\.layers\.\d+\.self_attn)\.qkv_proj\.weight$")
_GATE_UP = re.compile(r"^(model\.layers\.\d+\.mlp)\.gate_up_proj\.weight$")

T = TypeVar("T", torch.Tensor, TensorLoc)


def row_blocks(name: str, cfg: ModelConfig) -> list[tuple[str, int, int]] | None:
    """[(split name, first row, end row)] of a fused tensor, None for any other tensor."""
    if m := _QKV.match(name):
        q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        return [
            (f"{m[1]}.q_proj.weight", 0, q),
            (f"{m[1]}.k_proj.weight", q, q + kv),
            (f"{m[1]}.v_proj.weight", q + kv, q + 2 * kv),
        ]
    if m := _GATE_UP.match(name):  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2)
        f = cfg.intermediate_size
        return [(f"{m[1]}.gate_proj.weight", 0, f), (f"{m[1]}.up_proj.weight", f, 2 * f)]
    return None


def _rows(t: torch.Tensor | TensorLoc, r0: int, r1: int) -> torch.Tensor | TensorLoc:
    if isinstance(t, torch.Tensor):
        return t[r0:r1]
    rb = t.row_bytes
    return dataclasses.replace(
        t, offset=t.offset + r0 * rb, nbytes=(r1 - r0) * rb, shape=(r1 - r0, *t.shape[1:])
    )


def split_fused(tensors: dict[str, T], cfg: ModelConfig, where: object) -> dict[str, T]:
    """`tensors` (loaded, or their locations) with every fused tensor replaced by its parts; a
    family that fuses nothing gets `tensors` back as it is."""
    if not cfg.arch.fused_on_disk:
        return tensors
    out: dict[str, T] = {}
    for name, t in tensors.items():
        blocks = row_blocks(name, cfg)
        if blocks is None:
            out[name] = t
            continue
        rows = t.shape[0] if t.shape else 0
        if rows != blocks[-1][2]:
            raise CheckpointError(
                f"{where}: tensor {name!r} has {rows} rows, config.json implies {blocks[-1][2]}"
            )
        for part, r0, r1 in blocks:
            out[part] = _rows(t, r0, r1)  # type: ignore[assignment]
    return out
