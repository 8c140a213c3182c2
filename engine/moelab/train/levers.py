"""Memory and speed levers of a training run, from the train config: the compute dtype, activation
checkpointing per decoder layer, and torch.compile per decoder layer (torchtitan's order: checkpoint,
then compile, then shard, so each compiled block is what FSDP gathers and frees)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from moelab.models.model import MoELabForCausalLM


def compute_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 where the run computes in it, None for fp32."""
    if mixed_precision == "bf16" or (mixed_precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast: parameters stay fp32 (the optimizer's master copy), matmuls run in `dtype`."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def apply(model: MoELabForCausalLM, activation_checkpointing: bool, compile_layers: bool) -> None:
    """In place, before the model is wrapped or sharded; parameter names stay as they are, so
    checkpoints do not change."""
    model.model.checkpoint_layers = activation_checkpointing
    if compile_layers:
        for layer in model.model.layers:
            layer.compile()  # nn.Module.compile: compiled in place, state-dict keys unchanged
