"""A sharded model straight from a checkpoint: no process ever holds the whole model.

The model is built on the meta device (names and shapes, no storage), sharded (FSDP2 puts each
parameter's dim-0 rows on the ranks), given storage for this rank's rows only (`to_empty`), and
then filled from the safetensors files by reading just those rows: a plain tensor's rows are one
contiguous byte range on disk; a stacked expert parameter's rows are whole experts, read one
expert tensor at a time. Peak host memory is this rank's shards plus one expert tensor.

Without a process group the same code fills an unsharded model (every row is local), which is
how the tests compare it with `io.checkpoint.load_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from moelab.errors import CheckpointError
from moelab.io import dcp_file, layout
from moelab.io.checkpoint import compute_rotary_frequencies, load_config
from moelab.io.fused import split_fused
from moelab.io.tensor_io import FileCache, TensorLoc, bytes_to_tensor, locate
from moelab.models.config import ModelConfig
from moelab.models.model import MoELabForCausalLM, meta_model


def load_sharded(
    ckpt: Path,
    device: torch.device,
    shard: Callable[[MoELabForCausalLM], object],
    prepare: Callable[[MoELabForCausalLM], object] | None = None,
) -> MoELabForCausalLM:
    """The checkpoint's model, sharded by `shard` (e.g. launch/fsdp.shard) before any weight exists.
    `prepare` runs on the meta model first: whatever must be decided before sharding (frozen
    parameters, MoE options)."""
    ckpt = Path(ckpt)
    cfg = load_config(ckpt)
    model = meta_model(cfg)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if prepare is not None:
        prepare(model)
    shard(model)
    model.to_empty(device=device)
    if dcp_file.is_dcp(ckpt):  # a sharded training checkpoint: DCP reads each rank its rows
        from moelab.launch import dcp_state

        dcp_state.load(ckpt, model, None)
    else:
        fill_from_checkpoint(model, ckpt, cfg)
    compute_rotary_frequencies(model, device)
    return model


def fill_from_checkpoint(model: MoELabForCausalLM, ckpt: Path, cfg: ModelConfig | None = None) -> None:
    """Copies this process's part of every parameter and persistent buffer from `ckpt`, in place
    (non-persistent buffers, the rotary frequencies, are the caller's: load_sharded computes them)."""
    cfg = cfg or load_config(ckpt)
    locs = {layout.engine_name(n): loc for n, loc in split_fused(locate(ckpt), cfg, ckpt).items()}
    tied = cfg.tie_word_embeddings
    persistent = set(model.state_dict())
    with FileCache() as files, torch.no_grad():
        seen: set[int] = set()
        for name, p in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]:
            if name not in persistent or id(p) in seen or (tied and name == "lm_head.weight"):
                continue
            seen.add(id(p))
            local, offset = _local_part(p)
            _fill(local, offset, tuple(p.shape), name, locs, files, ckpt)


def _local_part(p: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """This rank's storage of `p` and the global index of its first element in each dim."""
    from torch.distributed.tensor import DTensor

    if not isinstance(p, DTensor):
        return p.data, (0,) * p.dim()
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return p.to_local(), tuple(offset)


def _fill(
    local: torch.Tensor,
    offset: tuple[int, ...],
    shape: tuple[int, ...],
    name: str,
    locs: dict[str, TensorLoc],
    files: FileCache,
    ckpt: Path,
) -> None:
    rows = local.shape[0] if local.dim() else 1
    if local.numel() == 0:
        return
    row0 = offset[0] if offset else 0
    if layout.is_stacked(name):
        # Row e is expert e's tensor on disk; split on dim 1 (launch/fsdp.py), a rank holds a run
        # of each expert's own rows, contiguous in the file too.
        for i in range(rows):
            disk = layout.disk_name_of(name, row0 + i)
            if disk not in locs:
                raise CheckpointError(f"{ckpt}: tensor {disk!r} is missing")
            expert = locs[disk]
            _check_shape(expert, shape[1:], disk, ckpt)
            part = local[i]
            first = offset[1] if len(offset) > 1 else 0
            n = part.shape[0] if part.dim() else 1
            buf = files.read(expert, first * expert.row_bytes, n * expert.row_bytes)
            part.copy_(bytes_to_tensor(buf, expert.dtype, tuple(part.shape)))
        return
    if any(offset[1:]):
        # FSDP2 splits other parameters on dim 0 only; another placement needs another reader.
        raise CheckpointError(f"{ckpt}: {name}: a split on a dim other than 0 is not supported")
    loc = locs.get(name)
    if loc is None:
        raise CheckpointError(f"{ckpt}: tensor {name!r} is missing")
    _check_shape(loc, shape, name, ckpt)
    if local.dim() == 0:
        local.copy_(bytes_to_tensor(files.read(loc), loc.dtype, loc.shape))
        return
    buf = files.read(loc, row0 * loc.row_bytes, rows * loc.row_bytes)
    local.copy_(bytes_to_tensor(buf, loc.dtype, (rows, *loc.shape[1:])))


def _check_shape(loc: TensorLoc, want: tuple[int, ...], name: str, ckpt: Path) -> None:
    if tuple(loc.shape) != want:
        raise CheckpointError(
            f"{ckpt}: tensor {name!r} has shape {list(loc.shape)}, config.json implies {list(want)}"
        )
