"""`runs/<id>/slurm.json`: which Slurm job runs (or ran) a run, its script and its log.

The extension and `moelab slurm status|cancel|log RUN_DIR` read it; it is the only Slurm state
kept by MoE Lab (Slurm itself is asked for the live state). Resubmitting the same run keeps the
earlier job ids in "history", newest last.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moelab.errors import MoELabError
from moelab.io.atomic import write_text_atomic

RECORD = "slurm.json"
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


def write(
    run_dir: Path, job_id: str, script: Path, log: Path, options: dict[str, Any], config: Path | None
) -> dict[str, Any]:
    previous = read(run_dir)
    history = list(previous.get("history", [])) if previous else []
    if previous and previous.get("job_id"):
        history.append({k: previous.get(k) for k in ("job_id", "submitted", "log")})
    record = {
        "job_id": job_id,
        "script": str(script),
        "log": str(log),
        "run_dir": str(run_dir),
        "config": str(config) if config else None,
        "options": options,
        "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "submit_host": socket.gethostname(),
        "history": history,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")
    return record


def read(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RECORD
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MoELabError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or "job_id" not in data:
        raise MoELabError(f"{path}: not a MoE Lab Slurm record (no job_id)")
    return data


def records(runs_root: Path) -> list[dict[str, Any]]:
    """Every run under `runs_root` that was submitted to Slurm, oldest submission first."""
    found = []
    # Experiments record their job under <runs>/.slurm/<name>/ (they span many run directories).
    paths = [*Path(runs_root).glob(f"*/{RECORD}"), *Path(runs_root).glob(f".slurm/*/{RECORD}")]
    for path in sorted(paths):
        try:
            rec = read(path.parent)
        except MoELabError:
            continue  # one damaged record must not hide the others
        if rec:
            found.append(rec)
    return sorted(found, key=lambda r: str(r.get("submitted", "")))


def resolve(target: str, runs_root: Path) -> tuple[str, dict[str, Any] | None]:
    """JOBID or RUN_DIR -> (job id, its record if MoE Lab submitted it)."""
    path = Path(target)
    if path.is_dir():
        rec = read(path)
        if rec is None:
            raise MoELabError(f"{path}: no {RECORD} (the run was not submitted with `moelab slurm submit`)")
        return str(rec["job_id"]), rec
    if _JOB_ID.match(target):
        for rec in records(runs_root):
            if str(rec.get("job_id")) == target:
                return target, rec
        return target, None
    raise MoELabError(f"{target}: neither a Slurm job id nor a run directory")
