"""Safetensors files and checkpoint directories, validated before any tensor is read.

safetensors itself rejects bad files, but with messages that do not name the file and, for some
corruptions, only when a tensor is touched. Checking the header first gives one clear line.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from moelab.errors import CheckpointError

DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
MAX_HEADER = 100 * 1024 * 1024
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_header(path: Path) -> dict[str, Any]:
    """The tensor entries of one safetensors file ({name: {dtype, shape, data_offsets}}), checked."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > MAX_HEADER:
                raise CheckpointError(
                    f"{path}: header claims {n} bytes but the file has {size - 8} after the length"
                )
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    try:
        header = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise CheckpointError(f"{path}: header is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: header is not valid JSON (nested too deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: entry is not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CheckpointError(f"{where}: bad shape {shape!r}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            raise CheckpointError(f"{where}: bad data_offsets {offs!r}")
        if offs[1] > data_len:
            raise CheckpointError(
                f"{where}: data ends at byte {offs[1]} but the file holds {data_len} (truncated?)"
            )
        if offs[1] - offs[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise CheckpointError(f"{where}: {offs[1] - offs[0]} bytes do not match shape {shape} of {dtype}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap")
    return header


def tensor_files(ckpt: Path) -> dict[str, Path]:
    """{tensor name: file} for a checkpoint directory, single-file or sharded; every header checked."""
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: not a directory")
    index = ckpt / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
                raise TypeError("weight_map is not an object of tensor name to shard file name")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise CheckpointError(f"{index}: invalid index ({e})") from None
        files = {}
        for shard in sorted(set(weight_map.values())):
            p = ckpt / shard
            if os.sep in shard or shard.startswith(".") or not p.is_file():
                raise CheckpointError(f"{index}: shard {shard!r} is missing")
            names = read_header(p)
            missing = [t for t, s in weight_map.items() if s == shard and t not in names]
            if missing:
                raise CheckpointError(f"{p}: index lists {missing[0]!r} but the shard does not hold it")
            files[shard] = p
        return {t: files[s] for t, s in weight_map.items()}
    single = ckpt / SINGLE_NAME
    if not single.exists():
        if (ckpt / "dcp" / ".metadata").is_file():
            raise CheckpointError(
                f"{ckpt}: a sharded (DCP) training checkpoint; write safetensors from it first with "
                f"`moelab export {ckpt} --format hf --out DIR`"
            )
        raise CheckpointError(f"{ckpt}: no {SINGLE_NAME} or {INDEX_NAME}")
    return dict.fromkeys(read_header(single), single)


def tensor_shapes(ckpt: Path) -> dict[str, tuple[list[int], str]]:
    """{name: (shape, dtype)} from the headers alone."""
    out = {}
    for path in sorted(set(tensor_files(ckpt).values())):
        for name, info in read_header(path).items():
            out[name] = (info["shape"], info["dtype"])
    return out


class TensorReader:
    """Reads tensors one at a time from a checkpoint directory (memory-mapped, never all at once)."""

    def __init__(self, ckpt: Path) -> None:
        self.ckpt = Path(ckpt)
        self.files = tensor_files(self.ckpt)
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return list(self.files)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        path = self.files.get(name)
        if path is None:
            raise CheckpointError(f"{self.ckpt}: tensor {name!r} is missing")
        h = self._handles.get(path)
        if h is None:
            try:
                h = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as e:  # safetensors raises its own types
                raise CheckpointError(f"{path}: {e}") from None
            self._handles[path] = h
        try:
            return h.get_tensor(name)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read tensor {name!r} ({e})") from None

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.files:
            yield name, self.get(name)
