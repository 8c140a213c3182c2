"""The run directory of ARCHITECTURE.md §4: run.json (rewritten atomically on every status change),
metrics.jsonl, routing.jsonl, checkpoints/, eval.json.

Training runs add to run.json "flops" (training FLOPs executed, as of the newest checkpoint; the
total when done) and "flops_per_token" (forward + backward per training token), and to every
metrics.jsonl record "flops" (cumulative at that step); models/flops.py states the count."""

from __future__ import annotations

import json
import os
import socket
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from moelab.io.atomic import write_text_atomic

RunStage = Literal["dense", "branch", "upcycle", "moe", "eval"]
RunStatus = Literal["queued", "running", "done", "failed", "stopped", "diverged"]
STAGES: tuple[RunStage, ...] = typing.get_args(RunStage)
STATUSES: tuple[RunStatus, ...] = typing.get_args(RunStatus)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(Path(path), json.dumps(obj, indent=2) + "\n")


def read_run_json(run_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


class RunDir:
    """One run's directory and its run.json."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        stage: RunStage,
        *,
        method: str = "",
        parents: list[str] | None = None,
        config: dict[str, Any] | None = None,
        experiment: str = "",
        total_steps: int = 0,
    ) -> None:
        assert stage in STAGES, stage
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if stage in ("dense", "branch", "moe"):
            (self.path / "checkpoints").mkdir(exist_ok=True)
        previous = read_run_json(self.path) or {}
        self.info: dict[str, Any] = {
            "id": run_id,
            "stage": stage,
            "method": method or None,
            "experiment": experiment or None,
            "parents": list(parents or []),
            "config": config or {},
            "status": previous.get("status", "queued"),
            "total_steps": total_steps,
            "started": previous.get("started"),
            "ended": previous.get("ended"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "error": None,
        }

    @property
    def status(self) -> RunStatus:
        return self.info["status"]

    def set_status(self, status: RunStatus, error: str | None = None) -> None:
        assert status in STATUSES, status
        self.info["status"] = status
        if status == "running":
            self.info["started"] = self.info.get("started") or now_iso()
            self.info["ended"] = None
            self.info["pid"] = os.getpid()
            self.info["host"] = socket.gethostname()
        elif status != "queued":
            self.info["ended"] = now_iso()
        self.info["error"] = error
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path / "run.json", self.info)

    def file(self, name: str) -> Path:
        return self.path / name


def mark_queued(run_dir: Path, raw_config: dict[str, Any], run_id: str, job_id: str) -> bool:
    """Writes run.json with status "queued" for a run that has none yet, so the Runs view shows a
    submitted job before it starts; the trainer keeps "queued" until it sets "running". An existing
    run.json (a resubmitted run) is left as it is. Returns whether it wrote one."""
    if read_run_json(run_dir) is not None:
        return False
    stage = raw_config.get("stage", "dense")
    rd = RunDir(
        run_dir,
        run_id,
        stage if stage in STAGES else "dense",
        method=str(raw_config.get("method") or ""),
        parents=list(raw_config.get("parents") or []),
        config=raw_config,
        experiment=str(raw_config.get("experiment") or ""),
        total_steps=int(raw_config.get("steps") or 0),
    )
    rd.info.update(pid=None, slurm_job_id=job_id)  # the submitting process is not the run's
    rd.save()
    return True


def mark_cancelled(run_dir: Path, job_id: str) -> bool:
    """A job cancelled before it started never writes run.json: say so there ("stopped")."""
    info = read_run_json(run_dir)
    if not info or info.get("status") != "queued":
        return False
    info.update(status="stopped", ended=now_iso(), error=f"Slurm job {job_id} cancelled before it started")
    write_json_atomic(Path(run_dir) / "run.json", info)
    return True
