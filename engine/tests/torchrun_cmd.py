"""torchrun for the multi-process tests: the one beside this interpreter (a torchrun on PATH may
belong to another environment), and the mark that skips a test where there is none."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

_BESIDE = Path(sys.executable).with_name("torchrun")
TORCHRUN = str(_BESIDE) if _BESIDE.exists() else "torchrun"
needs_torchrun = pytest.mark.skipif(
    not _BESIDE.exists() and shutil.which("torchrun") is None, reason="torchrun not installed"
)


def torchrun(ranks: int, *args: object) -> list[str]:
    """`torchrun --standalone` with `ranks` processes on this machine, running `args`."""
    return [TORCHRUN, "--standalone", "--nproc-per-node", str(ranks), *map(str, args)]
