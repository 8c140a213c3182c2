"""Thin wrappers over Slurm's commands: sbatch, squeue, sacct, scontrol, scancel.

Always argument arrays (no shell). Job state comes from the best source that knows the job:
squeue while it is queued or running, then sacct (accounting), then `scontrol show job`, which
remembers finished jobs for MinJobAge seconds on clusters without accounting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from moelab.errors import MoELabError

ACTIVE_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
}
TIMEOUT_S = 30  # a wedged slurmctld must not hang the CLI (or the extension that called it)
_SCONTROL_KEY = re.compile(r" (?=[A-Za-z][A-Za-z0-9_:/()]*=)")


class SlurmError(MoELabError):
    """A Slurm command failed or is missing; the message names the command."""


@dataclass
class JobStatus:
    job_id: str
    state: str  # Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ... or UNKNOWN
    source: Literal["squeue", "sacct", "scontrol", "none"]
    reason: str | None = None
    exit_code: str | None = None
    elapsed: str | None = None
    nodes: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


def _run(argv: list[str], check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"{argv[0]}: not found on PATH (is this a Slurm login node? see docs/REMOTE.md)")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"{argv[0]}: no answer within {TIMEOUT_S}s (is slurmctld up?)") from e
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmError(f"{argv[0]} failed: {msg[-1] if msg else f'exit status {proc.returncode}'}")
    return proc


def sbatch(script: Path, extra: list[str], cwd: Path | None = None) -> str:
    """Submit; returns the job id. `extra` options come before the script so they override its #SBATCH lines."""
    out = _run(["sbatch", "--parsable", *extra, str(script)], cwd=cwd)
    job_id = out.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch: unexpected answer {out.stdout.strip()!r} (expected a job id)")
    return job_id


def scancel(job_id: str) -> None:
    _run(["scancel", job_id])


def show_job(job_id: str) -> dict[str, str] | None:
    """`scontrol show job` as a dict, or None when slurmctld no longer (or never) knew the job."""
    proc = _run(["scontrol", "show", "job", "-o", job_id], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        if "Invalid job id" in proc.stderr or not proc.stderr.strip():
            return None
        raise SlurmError(f"scontrol show job {job_id} failed: {proc.stderr.strip().splitlines()[-1]}")
    first = proc.stdout.strip().splitlines()[0]  # an array or het job prints one line per component
    fields: dict[str, str] = {}
    for item in _SCONTROL_KEY.split(first.strip()):
        key, _, value = item.partition("=")
        fields[key] = value
    return fields


def _from_squeue(job_id: str) -> JobStatus | None:
    proc = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%r|%M|%N"], check=False)
    line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    if not line:
        return None
    state, reason, elapsed, nodes = (line.split("|") + ["", "", "", ""])[:4]
    return JobStatus(
        job_id, state, "squeue", reason=_none(reason), elapsed=_none(elapsed), nodes=_none(nodes)
    )


def _from_sacct(job_id: str) -> JobStatus | None:
    if shutil.which("sacct") is None:
        return None
    # -X: the allocation only, not its steps. Fails ("accounting storage is disabled") without slurmdbd.
    proc = _run(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,Elapsed,NodeList,Reason"], check=False
    )
    line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    if not line:
        return None
    state, code, elapsed, nodes, reason = (line.split("|") + ["", "", "", "", ""])[:5]
    return JobStatus(
        job_id,
        _state(state),
        "sacct",
        reason=_none(reason),
        exit_code=_none(code),
        elapsed=_none(elapsed),
        nodes=_none(nodes),
    )


def _from_scontrol(job_id: str) -> JobStatus | None:
    job = show_job(job_id)
    if job is None:
        return None
    return JobStatus(
        job_id,
        _state(job.get("JobState", "UNKNOWN")),
        "scontrol",
        reason=_none(job.get("Reason")),
        exit_code=_none(job.get("ExitCode")),
        elapsed=_none(job.get("RunTime")),
        nodes=_none(job.get("NodeList")),
    )


def status(job_id: str) -> JobStatus:
    for probe in (_from_squeue, _from_sacct, _from_scontrol):
        found = probe(job_id)
        if found is not None:
            return found
    return JobStatus(
        job_id, "UNKNOWN", "none", reason="Slurm no longer knows this job (no accounting, past MinJobAge)"
    )


def _state(raw: str) -> str:
    # sacct says "CANCELLED by 0"; scontrol may append flags after a space.
    return raw.split()[0].rstrip("+") if raw.strip() else "UNKNOWN"


def _none(value: str | None) -> str | None:
    return None if value in (None, "", "None", "(null)", "n/a") else value
