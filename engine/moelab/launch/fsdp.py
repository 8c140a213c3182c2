"""FSDP2 (`fully_shard`, per-parameter DTensor sharding) for models that do not fit one GPU.

Used through `distributed.Dist` when the train config says `"parallel": "fsdp"` under torchrun.
Checkpoints keep the single-process format: the full state dicts are gathered onto rank 0 (on the
CPU, so no GPU ever holds the whole model), and optimizer.pt keeps `optimizer.state_dict()`'s
integer parameter ids, so a checkpoint resumes under any world size and either parallelism.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from moelab.io import layout

# Gathered on rank 0 only and moved to the CPU as it arrives: the other ranks get empty dicts.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Rank 0 reads the checkpoint and scatters each rank its shards: one CPU copy per machine, not per rank.
_SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def shard(
    model: torch.nn.Module,
    device: torch.device,
    param_dtype: torch.dtype | None,
    ignored: set[torch.nn.Parameter] | None = None,
) -> torch.nn.Module:
    """Shards each decoder layer, then the root (embeddings, final norm, head), as torchtitan does:
    a layer's parameters are all-gathered just before it runs and freed after, so the peak memory is
    one layer's full weights plus everyone's shards. Sharding happens in place; `model` is returned.
    `ignored` parameters are left as they are (expert-parallel experts, already split over the ranks)."""
    # `param_dtype` (bf16) for the gathered parameters and the compute, fp32 for the gradient reduction
    # and the sharded master weights the optimizer updates; None: fp32 throughout.
    mp = (
        MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype is not None
        else MixedPrecisionPolicy()
    )
    placement = _expert_placement(model, torch.distributed.get_world_size())
    for layer in model.model.layers:  # type: ignore[union-attr]
        fully_shard(layer, mp_policy=mp, ignored_params=ignored, shard_placement_fn=placement)
    fully_shard(model, mp_policy=mp, ignored_params=ignored, shard_placement_fn=placement)
    return model


def _expert_placement(model: torch.nn.Module, ranks: int) -> Callable[[torch.nn.Parameter], Shard | None]:
    """FSDP2 splits dim 0 in `ranks` chunks of ceil(n / ranks) rows, so a stack of 4 experts over
    8 ranks gives every rank a whole expert's storage (ranks 4-7 hold padding): twice the even share.
    Such stacks are split on dim 1 instead (each expert's rows, as torchtitan does when experts are
    fewer than ranks) where dim 1 divides evenly, which FSDP2 requires of any dim but 0; the rest keep
    dim 0 (None: fully_shard's default)."""
    on_1 = {
        id(p)
        for name, p in model.named_parameters()
        if layout.is_stacked(name) and stack_split_dim(tuple(p.shape), ranks) == 1
    }
    return lambda p: Shard(1) if id(p) in on_1 else None


def stack_split_dim(shape: tuple[int, ...], ranks: int) -> int:
    """The dim FSDP2 splits a stacked expert tensor [E, ...] on over `ranks` (see _expert_placement);
    moelab plan counts the same."""
    return 1 if len(shape) >= 2 and shape[0] % ranks and shape[1] % ranks == 0 else 0


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0 (CPU tensors); {} elsewhere. A collective: every rank calls it."""
    # torch types the values as any state entry; a model's are tensors.
    return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=_GATHER))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` of the unsharded model on rank 0; {} elsewhere. A collective."""
    # torch types it as nested unions of every state entry; its layout is optimizer.state_dict()'s.
    by_name = cast(dict[str, Any], get_optimizer_state_dict(model, optimizer, options=_GATHER))
    if not by_name:
        return {}
    ids = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [ids[n] for n in g["params"]]} for g in by_name["param_groups"]]
    return {"state": {ids[n]: s for n, s in by_name["state"].items()}, "param_groups": groups}


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any] | None
) -> None:
    """Loads an `optimizer.state_dict()` (read on rank 0; None elsewhere) into the sharded optimizer.
    A collective."""
    by_name: dict[str, Any] = {}
    if state is not None:
        names = _param_names(model, optimizer)
        by_name = {
            "state": {names[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
        }
    set_optimizer_state_dict(model, optimizer, by_name, options=_SCATTER)


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ of DTensor gradients returns a DTensor: the global norm is its full value."""
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in `optimizer.state_dict()`'s id order (ids count through the groups in order)."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for g in optimizer.param_groups for p in g["params"]]
