"""The local Slurm of the Slurm tests (test_slurm*.py): whether jobs may and can run here, the CLI, and
waiting on a job.

Those tests submit jobs, so they run only where asked: under CI (CI=true) or with MOELAB_SLURM=1, when
`make test` first runs scripts/slurm-local.sh to start a one-node Slurm on localhost (or write why it
could not), or against a local Slurm that script already started. Elsewhere, or without a usable `sinfo`,
they skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moelab.launch import slurm_cli

MARKER = Path(os.environ.get("MOELAB_SLURM_DIR", "/var/tmp/moelab-slurm")) / "status"
HOW_TO_RUN = "MOELAB_SLURM=1 make test starts a local one-node Slurm and runs them"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def _asked() -> bool:
    """CI, the developer, or the local Slurm scripts/slurm-local.sh started: never a cluster by surprise."""
    marker = MARKER.read_text().strip() if MARKER.exists() else ""
    return os.environ.get("CI") in ("true", "1") or os.environ.get("MOELAB_SLURM") == "1" or marker == "ready"


def _slurm_usable() -> str | None:
    """None when jobs can run here, else the reason to skip."""
    if not _asked():
        return f"the Slurm tests run only under CI=true or MOELAB_SLURM=1 ({HOW_TO_RUN})"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        why = MARKER.read_text().strip() if MARKER.exists() else HOW_TO_RUN
        return f"no Slurm on this machine ({why})"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (slurmctld down? run scripts/slurm-local.sh)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states):
        return f"Slurm has no usable node (sinfo: {out.stderr.strip() or ' '.join(states) or 'nothing'})"
    return None


_reason = _slurm_usable()
needs_slurm = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def moelab(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moelab", *argv], capture_output=True, text=True, cwd=cwd, timeout=120, env=env
    )


def wait_for(job_id: str, done: set[str], timeout: float) -> list[str]:
    """Polls in-process (the CLI is dearer); returns the distinct states seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = slurm_cli.status(job_id).state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in done:
            return seen
        time.sleep(0.5)
    pytest.fail(f"job {job_id} not in {done} after {timeout}s (states seen: {seen})")
