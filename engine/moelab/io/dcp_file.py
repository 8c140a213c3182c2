"""Reading a torch.distributed.checkpoint (DCP) checkpoint one tensor at a time.

Training under FSDP writes checkpoints/step-N/dcp/ (each rank its own shards; launch/dcp_state.py)
beside config.json, instead of model.safetensors. The model's tensors are stored under
`model.<engine name>` (stacked experts as one tensor), the optimizer's under `optim.`. Any process
reads them back without a process group and without loading the checkpoint whole: DCP reads only
the byte ranges of the one tensor asked for, whichever ranks wrote it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from moelab.errors import CheckpointError
from moelab.io import layout
from moelab.io.atomic import write_text_atomic

DCP_DIR = "dcp"
MODEL_PREFIX = "model."
# The model's tensors in the safetensors layout (per-expert names, dtype names, shapes, bytes), for
# readers without torch: DCP's own .metadata is a pickle. Written by rank 0 after a save.
INDEX_NAME = "tensors.json"


def is_dcp(ckpt: Path) -> bool:
    return (Path(ckpt) / DCP_DIR / ".metadata").is_file()


def model_tensors(ckpt: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{engine name: (shape, dtype)} of the model's tensors, from the metadata alone."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    out = {}
    for key, md in _metadata(ckpt).state_dict_metadata.items():
        if key.startswith(MODEL_PREFIX) and isinstance(md, TensorStorageMetadata):
            out[key[len(MODEL_PREFIX) :]] = (tuple(md.size), md.properties.dtype)
    return out


def write_index(ckpt: Path) -> None:
    """dcp/tensors.json: {"format": "dcp", "tensors": {disk name: {"dtype", "shape", "bytes"}}}."""
    from moelab.io.tensor_io import ST_DTYPES

    tensors: dict[str, dict[str, object]] = {}
    for name, (shape, dtype) in model_tensors(ckpt).items():
        meta = torch.empty(shape, dtype=dtype, device="meta")
        for disk, t in layout.to_disk({name: meta}).items():
            tensors[disk] = {
                "dtype": ST_DTYPES[dtype],
                "shape": list(t.shape),
                "bytes": t.numel() * t.element_size(),
            }
    text = json.dumps({"format": "dcp", "tensors": tensors}, indent=1) + "\n"
    write_text_atomic(Path(ckpt) / DCP_DIR / INDEX_NAME, text)


def read_tensor(ckpt: Path, name: str) -> torch.Tensor:
    """One model tensor (engine name), whole; only its bytes are read."""
    shape, dtype = model_tensors(ckpt)[name]
    return next(iter_model_tensors(ckpt, {name: (shape, dtype)}))[1]


def iter_model_tensors(
    ckpt: Path, only: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(engine name, tensor) for every model tensor, one at a time: the memory of one tensor."""
    import torch.distributed.checkpoint as dcp

    reader_path = Path(ckpt) / DCP_DIR
    for name, (shape, dtype) in (only or model_tensors(ckpt)).items():
        t = torch.empty(shape, dtype=dtype)
        try:
            with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
                warnings.simplefilter("ignore", UserWarning)
                dcp.load({"model": {name: t}}, storage_reader=dcp.FileSystemReader(reader_path), no_dist=True)
        except Exception as e:  # DCP wraps every reader failure in its own exception types
            raise CheckpointError(f"{reader_path}: cannot read tensor {name!r} ({first_line(e)})") from None
        yield name, t


def _metadata(ckpt: Path):  # -> torch.distributed.checkpoint.Metadata
    import torch.distributed.checkpoint as dcp

    path = Path(ckpt) / DCP_DIR
    try:
        return dcp.FileSystemReader(path).read_metadata()
    except Exception as e:  # a missing, truncated or foreign .metadata (a pickle)
        raise CheckpointError(f"{path}: not a readable DCP checkpoint ({first_line(e)})") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
