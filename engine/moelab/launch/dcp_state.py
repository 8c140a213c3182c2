"""Sharded training checkpoints in torch.distributed.checkpoint (DCP) format.

Under FSDP each rank writes its own shards of the model and optimizer state (no gather onto
rank 0), and a load reshards to whatever the current world size is: a checkpoint written by 2
ranks resumes at 1 or 3. The keys are the model's own (`model.<name>`, `optim.state.<name>.…`),
so a single process without a process group loads it too, and io/dcp_file.py reads it tensor by
tensor for export and inspection.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from moelab.errors import CheckpointError
from moelab.io.dcp_file import DCP_DIR, first_line, write_index


def save(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Writes this rank's shards into ckpt_dir/dcp. A collective: every rank calls it, with the same
    ckpt_dir (on storage every rank sees)."""
    dcp.save(
        _state(model, optimizer), checkpoint_id=Path(ckpt_dir) / DCP_DIR, no_dist=not dist.is_initialized()
    )
    finish(ckpt_dir)


def save_async(
    ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, group: Any = None
) -> Future[Any]:
    """`save`, written in a background thread: the state is copied (staged) before this returns, so
    training may go on changing it. Call finish(ckpt_dir) once the future is done. `group` is a
    process group for the writer's own collectives, apart from training's (None without one: DCP
    then writes in one process)."""
    written = dcp.async_save(
        _state(model, optimizer),
        checkpoint_id=Path(ckpt_dir) / DCP_DIR,
        process_group=group,
        no_dist=not dist.is_initialized(),
    )
    # An AsyncSaveResponse comes back only with a custom async stager; the default gives a Future.
    assert isinstance(written, Future), type(written)
    return written


def finish(ckpt_dir: Path) -> None:
    """Rank 0's part once the shards are written: the tensor index readers without torch use."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_index(Path(ckpt_dir))


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}


def load(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Fills `model` (sharded or not) and, if given, `optimizer` from ckpt_dir/dcp, resharding as
    needed. A collective under a process group."""
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    _read(ckpt_dir, state)
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])


def load_optimizer(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer state alone, for a model already filled (by launch/sharded_init.py or io)."""
    state: dict[str, Any] = {"optim": get_optimizer_state_dict(model, optimizer)}
    _read(ckpt_dir, state)
    set_optimizer_state_dict(model, optimizer, state["optim"])


def _read(ckpt_dir: Path, state: dict[str, Any]) -> None:
    path = Path(ckpt_dir) / DCP_DIR
    try:
        with warnings.catch_warnings():  # one process without a process group is a supported resume
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
    except Exception as e:  # DCP reports reader failures as its own exception types
        raise CheckpointError(f"{path}: cannot load ({first_line(e)})") from None
