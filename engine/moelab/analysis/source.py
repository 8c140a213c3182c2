"""Row chunks of tensors read straight from safetensors files with positioned reads.

Why not `safe_open`: it memory-maps the whole file, and every page touched while streaming a
7B model stays mapped and counted in the process's RSS until the handle closes. Reading byte
ranges into a fresh buffer keeps memory at the chunk actually being used. Headers are still
validated by `io.safetensors_file` (offsets inside the file, sizes matching shapes), so a
truncated or hostile file fails before any data is read.
"""

from __future__ import annotations

import io
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.errors import CheckpointError
from moelab.io import layout
from moelab.io.safetensors_file import DTYPE_SIZES, read_header, tensor_files

# Dtypes whose values are weights; integer tensors are never analysed as weights.
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
# Every dtype safetensors stores; comparison reads any of them (as float64), analysis only floats.
ALL_DTYPES: dict[str, torch.dtype] = {
    **FLOAT_DTYPES,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class Entry:
    path: Path
    offset: int  # absolute byte offset of the tensor's data in the file
    dtype: str
    shape: tuple[int, ...]

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def cols(self) -> int:
        """Elements per row (product of the trailing dims; a 1-D tensor has rows of one)."""
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1


class ChunkReader:
    """Reads rows [r0, r1) of any float tensor of a checkpoint directory as float64."""

    def __init__(self, ckpt: Path) -> None:
        if sys.byteorder != "little":  # safetensors data is little-endian and read here without swapping
            raise CheckpointError("reading safetensors on a big-endian host is not supported")
        self.ckpt = Path(ckpt)
        files = tensor_files(self.ckpt)
        self.entries: dict[str, Entry] = {}
        for path in sorted(set(files.values())):
            header = read_header(path)
            start = 8 + _header_len(path)
            for name, info in header.items():
                if files.get(name) == path:
                    # Keyed by the engine's names whatever the layout (Qwen3-MoE's expert names too).
                    self.entries[layout.engine_name(name)] = Entry(
                        path, start + info["data_offsets"][0], info["dtype"], tuple(info["shape"])
                    )
        self._fh: dict[Path, io.BufferedReader] = {}

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._fh.values():
            f.close()
        self._fh.clear()

    def shapes(self) -> dict[str, tuple[list[int], str]]:
        return {n: (list(e.shape), e.dtype) for n, e in self.entries.items()}

    def entry(self, name: str) -> Entry:
        e = self.entries.get(name)
        if e is None:
            raise CheckpointError(f"{self.ckpt}: tensor {name!r} is missing")
        return e

    def rows(self, name: str, r0: int, r1: int, any_dtype: bool = False) -> torch.Tensor:
        """Rows r0..r1 of `name` as a float64 [r1 - r0, cols] tensor (integer dtypes only if any_dtype)."""
        e = self.entry(name)
        if e.dtype not in (ALL_DTYPES if any_dtype else FLOAT_DTYPES):
            raise CheckpointError(f"{e.path}: tensor {name!r} has dtype {e.dtype}, expected a float dtype")
        r0, r1 = max(0, r0), min(e.rows, r1)
        size = DTYPE_SIZES[e.dtype]
        nbytes = (r1 - r0) * e.cols * size
        buf = bytearray(nbytes)
        if nbytes:
            f = self._fh.get(e.path)
            if f is None:
                try:
                    f = self._fh[e.path] = e.path.open("rb")
                except OSError as err:
                    raise CheckpointError(f"{e.path}: cannot open ({err.strerror})") from None
            f.seek(e.offset + r0 * e.cols * size)
            got = f.readinto(buf)
            if got != nbytes:  # the file shrank after its header was checked
                raise CheckpointError(
                    f"{e.path}: tensor {name!r} is truncated (read {got} of {nbytes} bytes)"
                )
        t = torch.frombuffer(buf, dtype=ALL_DTYPES[e.dtype]) if nbytes else torch.empty(0)
        return t.to(torch.float64).reshape(r1 - r0, e.cols)

    def full(self, name: str) -> torch.Tensor:
        return self.rows(name, 0, self.entry(name).rows)


def _header_len(path: Path) -> int:
    with path.open("rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def rows_per_chunk(cols: int, arrays: int, budget_bytes: int) -> int:
    """Rows per chunk so that `arrays` float64 arrays of [rows, cols] fit in the budget (at least 1)."""
    return max(1, budget_bytes // max(1, 8 * cols * arrays))
