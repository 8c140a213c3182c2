"""Tensor bytes in and out of safetensors files with plain positioned file I/O.

Weight surgery touches every byte of several multi-GB checkpoints once. Reading through a
memory map would leave every touched page resident (and counted in RSS) until the map closes;
positioned reads into a fresh buffer keep memory at one chunk, and same-dtype copies go
file-to-file in the kernel (copy_file_range) without passing through Python at all.

`StreamingShardWriter` lays out every output shard up front from a plan of (name, shape,
dtype), writes the headers first, and then accepts tensor bytes in any order at their final
offsets: nothing is buffered and no shard is rewritten.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.errors import CheckpointError, MoELabError
from moelab.io.safetensors_file import DTYPE_SIZES, INDEX_NAME, SINGLE_NAME, read_header, tensor_files

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
ST_DTYPES = {v: k for k, v in TORCH_DTYPES.items()}


@dataclass(frozen=True)
class TensorLoc:
    """Where one tensor's bytes lie: `nbytes` bytes at absolute `offset` of `path`."""

    path: Path
    offset: int
    nbytes: int
    dtype: str  # safetensors dtype name (F32, BF16, ...)
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        """Bytes of one slice along dim 0 (the unit chunked processing works in)."""
        return self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes


def locate(ckpt: Path) -> dict[str, TensorLoc]:
    """{tensor name: location} for a checkpoint directory; every header is validated first."""
    out: dict[str, TensorLoc] = {}
    files = tensor_files(Path(ckpt))
    for path in sorted(set(files.values())):
        # A shard holding a tensor the index assigns elsewhere: the index wins.
        out.update((name, loc) for name, loc in locate_file(path).items() if files.get(name) == path)
    return out


def locate_file(path: Path) -> dict[str, TensorLoc]:
    """{tensor name: location} for one safetensors file (its header validated first)."""
    header = read_header(path)
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = TensorLoc(path, 8 + n + start, end - start, info["dtype"], tuple(info["shape"]))
    return out


def read_bytes(fd: int, offset: int, nbytes: int, path: Path) -> bytearray:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    done = 0
    while done < nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CheckpointError(
                f"{path}: file ends at byte {offset + done}, expected {offset + nbytes} (truncated?)"
            )
        done += got
    return buf


def bytes_to_tensor(buf: bytearray, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not buf:
        return torch.empty(shape, dtype=TORCH_DTYPES[dtype])
    return torch.frombuffer(buf, dtype=TORCH_DTYPES[dtype]).reshape(shape)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, without a copy when it is contiguous."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")


class FileCache:
    """Open read-only descriptors, one per input file, closed together."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise CheckpointError(f"{path}: cannot open ({e.strerror})") from None
            self._fds[path] = fd
        return fd

    def read(self, loc: TensorLoc, start: int = 0, nbytes: int | None = None) -> bytearray:
        """`nbytes` bytes of the tensor from byte `start` of its data (default: all of it)."""
        n = loc.nbytes - start if nbytes is None else nbytes
        return read_bytes(self.fd(loc.path), loc.offset + start, n, loc.path)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> FileCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Slot:
    shard: int
    offset: int  # absolute offset in the shard file
    nbytes: int
    written: int = 0


def _shard_header(entries: list[tuple[str, tuple[int, ...], str]], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    pos = 0
    for name, shape, dtype in entries:
        n = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header so the data starts 8-aligned
    return struct.pack("<Q", len(raw)) + raw


class StreamingShardWriter:
    """Shards of at most `max_shard_bytes` (a larger tensor gets a shard of its own), laid out
    from `plan` at construction; `write`/`copy` put bytes at their final place in any order;
    `close` checks that every planned byte was written and writes the index."""

    def __init__(
        self,
        out: Path,
        plan: list[tuple[str, tuple[int, ...], str]],
        max_shard_bytes: int,
        metadata: dict[str, str] | None = None,
        disk_name: Callable[[str], str] | None = None,
    ) -> None:
        """`disk_name` maps a planned name to the name written in the files (a native MoE type's
        layout); `write` and `copy` keep taking the planned names."""
        if max_shard_bytes <= 0:
            raise MoELabError(f"max shard size must be positive (got {max_shard_bytes})")
        self.out = Path(out)
        self._disk_name = disk_name or (lambda n: n)
        groups: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
        size = 0
        for entry in plan:
            n = math.prod(entry[1]) * DTYPE_SIZES[entry[2]]
            if groups[-1] and size + n > max_shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(entry)
            size += n
        count = len(groups)
        self.names = (
            [SINGLE_NAME]
            if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self.slots: dict[str, _Slot] = {}
        self._fds: list[int] = []
        self.total_bytes = 0
        meta = {"format": "pt", **(metadata or {})}
        for i, entries in enumerate(groups):
            head = _shard_header([(self._disk_name(n), s, d) for n, s, d in entries], meta)
            fd = os.open(self.out / self.names[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, head, 0)
            pos = len(head)
            for name, shape, dtype in entries:
                n = math.prod(shape) * DTYPE_SIZES[dtype]
                self.slots[name] = _Slot(i, pos, n)
                pos += n
                self.total_bytes += n
            os.ftruncate(fd, pos)

    def write(self, name: str, data: memoryview | bytes | bytearray, start: int = 0) -> None:
        """Bytes `data` of tensor `name`, beginning at byte `start` of its data."""
        slot = self.slots[name]
        view = memoryview(data).cast("B")
        if start + len(view) > slot.nbytes:
            raise MoELabError(
                f"internal error: {len(view)} bytes at {start} overflow tensor {name!r} ({slot.nbytes} bytes)"
            )
        fd, done = self._fds[slot.shard], 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], slot.offset + start + done)
        slot.written += len(view)

    def write_tensor(self, name: str, t: torch.Tensor, start: int = 0) -> None:
        self.write(name, tensor_bytes(t), start)

    def copy(self, name: str, src: TensorLoc, src_fd: int) -> None:
        """The bytes of `src` verbatim into tensor `name`, file to file in the kernel."""
        slot = self.slots[name]
        if src.nbytes != slot.nbytes:
            raise MoELabError(f"internal error: copying {src.nbytes} bytes into {name!r} of {slot.nbytes}")
        fd, done = self._fds[slot.shard], 0
        while done < src.nbytes:
            try:
                got = os.copy_file_range(src_fd, fd, src.nbytes - done, src.offset + done, slot.offset + done)
            except OSError:  # another filesystem or an old kernel: copy through user space
                got = 0
            if got <= 0:
                buf = read_bytes(src_fd, src.offset + done, src.nbytes - done, src.path)
                self.write(name, buf, done)
                return
            done += got
            slot.written += got

    def written_bytes(self) -> int:
        return sum(s.written for s in self.slots.values())

    def close_files(self) -> None:
        """Closes the shard files (idempotent); on failure the caller removes the directory."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def close(self) -> list[str]:
        """Checks completeness, closes the shards, writes the index; returns the shard names."""
        self.close_files()
        short = [n for n, s in self.slots.items() if s.written != s.nbytes]
        if short:
            raise MoELabError(f"internal error: tensor {short[0]!r} was not written completely")
        if len(self.names) > 1:
            weight_map = {self._disk_name(n): self.names[s.shard] for n, s in self.slots.items()}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return list(self.names)
