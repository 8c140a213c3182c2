"""Directories that appear whole or not at all: write into a temporary sibling, then rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from moelab.errors import MoELabError


def _read_umask() -> int:
    # The only portable way to read the umask is to set it; do it once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def output_error(target: Path, e: OSError) -> MoELabError:
    """One line for a failure to create or write the output directory `target`: where, and what to do."""
    where = Path(e.filename) if e.filename else Path(target)
    if e.errno in _NO_SPACE:
        return MoELabError(
            f"{target}: no space left while writing it (disk full, quota or file size limit); "
            "free some space or choose an output directory on another disk"
        )
    if e.errno == errno.EROFS:
        return MoELabError(f"{where}: read-only file system; choose an output directory on a writable disk")
    if e.errno in (errno.EACCES, errno.EPERM):
        return MoELabError(f"{where}: permission denied; choose an output directory you can write to")
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return MoELabError(
            f"{target}: a part of this path is a file, not a directory; choose another output directory"
        )
    return MoELabError(
        f"{where}: cannot write the output ({e.strerror or e}); choose another output directory"
    )


def _is_output_failure(e: OSError, tmp: Path) -> bool:
    """A write into the temporary directory failed (not, say, reading an input inside the block)."""
    if e.errno in _NO_SPACE:
        return True
    return bool(e.filename) and Path(os.fsdecode(e.filename)).resolve().is_relative_to(tmp.resolve())


@contextmanager
def atomic_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary directory next to `target`; on success it becomes `target`.
    On any failure the temporary directory is removed and `target` is untouched; failures to
    create or write it are one-line MoELabErrors that name the path and what to do."""
    tmp = begin_dir(target, overwrite)
    try:
        yield tmp
    except BaseException as e:
        discard_dir(tmp, target, e)
    commit_dir(tmp, target)


def begin_dir(target: Path, overwrite: bool = False) -> Path:
    """atomic_dir's first half, for a directory whose writing outlives one block (an asynchronous
    checkpoint): the temporary directory, which commit_dir makes `target` or discard_dir removes."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise MoELabError(f"{target}: already exists (choose another --out or remove it)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise output_error(target, e) from None
    try:
        # mkdtemp makes 0700; a checkpoint should be as readable as any file the user writes.
        tmp.chmod(0o777 & ~_UMASK)
    except BaseException as e:
        discard_dir(tmp, target, e)
    return tmp


def commit_dir(tmp: Path, target: Path) -> None:
    """Syncs `tmp` to disk and renames it to `target` (replacing an older one); on failure `tmp` is
    removed and `target` untouched."""
    target = Path(target)
    try:
        _fsync_dir_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        _fsync(target.parent)
    except BaseException as e:
        discard_dir(tmp, target, e)


def discard_dir(tmp: Path, target: Path, e: BaseException) -> NoReturn:
    """Removes `tmp` after `e` and raises it: a failure to write into it as one line that names `target`."""
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError) and _is_output_failure(e, tmp):
        raise output_error(Path(target), e) from None
    raise e


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small file atomically (temp file + fsync + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; keep the user's umask instead
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync(Path(dirpath) / f)
        _fsync(Path(dirpath))
