"""Where an upcycled checkpoint came from: the parents' files and their sha256, and the options.

Hashing reads every input byte once more; it runs in a worker thread while the surgery streams
(hashlib releases the GIL on large updates), so it mostly overlaps the surgery's own I/O.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from moelab import __version__

_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_files(ckpt: Path) -> list[Path]:
    """The files that define a checkpoint's (or a PEFT adapter's) weights and architecture (not its tokenizer)."""
    names = ["config.json", "model.safetensors.index.json", "adapter_config.json"]
    files = [ckpt / n for n in names if (ckpt / n).is_file()]
    return files + sorted(ckpt.glob("*.safetensors"))


class ParentHasher:
    """Starts hashing every parent's files at once in the background; `parents()` waits."""

    def __init__(self, parents: list[tuple[str, Path]]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._parents = parents
        self._futures: dict[Path, Future[str]] = {}
        for _, ckpt in parents:
            for f in checkpoint_files(ckpt):
                if f.resolve() not in self._futures:
                    self._futures[f.resolve()] = self._pool.submit(sha256_file, f)

    def parents(self) -> list[dict[str, Any]]:
        out = []
        for role, ckpt in self._parents:
            files = [
                {"name": f.name, "sha256": self._futures[f.resolve()].result()}
                for f in checkpoint_files(ckpt)
            ]
            out.append({"role": role, "path": str(ckpt.resolve()), "files": files})
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def provenance(method: str, options: dict[str, Any], parents: list[dict[str, Any]]) -> dict[str, Any]:
    """The `moelab` object of config.json."""
    return {"method": method, "options": options, "parents": parents, "version": __version__}
