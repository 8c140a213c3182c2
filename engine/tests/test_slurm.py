"""`moelab slurm submit|status|cancel|log` against a real Slurm.

They submit jobs, so they run only where asked: under CI (CI=true) or with MOELAB_SLURM=1, when `make
test` first runs scripts/slurm-local.sh to start a one-node Slurm on localhost (or write why it could
not), or against a local Slurm that script already started. Elsewhere, or without a usable `sinfo`, they
skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moelab.launch import slurm_cli

MARKER = Path(os.environ.get("MOELAB_SLURM_DIR", "/var/tmp/moelab-slurm")) / "status"
DONE_TIMEOUT_S = 120


HOW_TO_RUN = "MOELAB_SLURM=1 make test starts a local one-node Slurm and runs them"


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
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def moelab(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moelab", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _wait_for(job_id: str, done: set[str], timeout: float) -> list[str]:
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


TINY_TRAIN = {
    "steps": 3,
    "batch_size": 2,
    "warmup_steps": 1,
    "log_every": 1,
    "eval_every": 100,
    "eval_batches": 1,
    "ckpt_every": 3,
    "threads": 1,
    "device": "cpu",
    "model": {
        "vocab_size": 256,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32,
        "eos_token_id": 0,
    },
    "data": {"seq_len": 8, "synthetic_train_chars": 4000, "synthetic_eval_chars": 1000},
}


def test_submit_train_config_runs_and_status_goes_to_completed(tmp_path):
    cfg_dir = tmp_path / "my configs"  # a space on purpose: quoting in the script and on #SBATCH lines
    cfg_dir.mkdir()
    config = cfg_dir / "tiny.json"
    config.write_text(
        json.dumps(
            {
                **TINY_TRAIN,
                "run_id": "tiny-slurm",
                "out": "../runs",
                "slurm": {"time": "00:05:00", "partition": "debug"},
            }
        )
    )
    run_dir = tmp_path / "runs" / "tiny-slurm"

    script = moelab("slurm", "script", str(config), cwd=tmp_path)
    assert script.returncode == 0 and "#SBATCH --time=00:05:00" in script.stdout, script.stderr

    res = moelab("slurm", "submit", str(config), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert job_id.isdigit()
    record = json.loads((run_dir / "slurm.json").read_text())
    assert record["job_id"] == job_id and record["config"] == str(config)
    assert record["log"] == str(run_dir / f"slurm-{job_id}.out")
    assert record["options"]["time"] == "00:05:00" and Path(record["script"]).read_text() == script.stdout
    # Queued before it starts, for the Runs view; the trainer takes run.json over when it starts.
    assert json.loads((run_dir / "run.json").read_text())["status"] in ("queued", "running", "done")

    seen = _wait_for(
        job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}, DONE_TIMEOUT_S
    )
    log = Path(record["log"]).read_text() if Path(record["log"]).exists() else "(no log)"
    assert seen[-1] == "COMPLETED", (seen, log[-2000:])
    assert set(seen[:-1]) <= slurm_cli.ACTIVE_STATES, seen

    # The job trained: the run directory is the trainer's, complete.
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done", info
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-000003"

    st = moelab("slurm", "status", str(run_dir), "--json", cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    row = json.loads(st.stdout)
    assert row["state"] == "COMPLETED" and row["active"] is False and row["run_dir"] == str(run_dir)
    # Without accounting (the local test Slurm) sacct fails and scontrol must answer.
    assert row["source"] in ("sacct", "scontrol")

    listed = moelab("slurm", "status", "--runs", str(run_dir.parent), "--json", cwd=tmp_path)
    assert [r["job_id"] for r in json.loads(listed.stdout)] == [job_id]

    log = moelab("slurm", "log", job_id, "--runs", str(run_dir.parent), "--follow", cwd=tmp_path)
    assert log.returncode == 0 and "done:" in log.stdout, log.stderr


def test_cancel_a_running_job(tmp_path):
    script = tmp_path / "sleep.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --job-name=moelab-sleep\nsleep 300\n")
    run_dir = tmp_path / "runs" / "sleepy"
    res = moelab("slurm", "submit", "--script", str(script), "--run-dir", str(run_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    try:
        _wait_for(job_id, {"RUNNING"}, 60)
        res = moelab("slurm", "cancel", str(run_dir), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        seen = _wait_for(job_id, {"CANCELLED", "COMPLETED", "FAILED"}, 60)
        assert seen[-1] == "CANCELLED", seen
        st = json.loads(moelab("slurm", "status", job_id, "--json", cwd=tmp_path).stdout)
        assert st["state"] == "CANCELLED"
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)


def test_edited_generated_script_shows_its_run_as_queued(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_TRAIN, "run_id": "edited", "out": "runs"}))
    script = tmp_path / "edited.sbatch"
    assert moelab("slurm", "script", str(config), "--out", str(script), cwd=tmp_path).returncode == 0
    # The user's edit: the job sleeps instead of training, so it is still queued or running below.
    text = script.read_text()
    script.write_text(
        "\n".join("sleep 300" if " -m moelab " in line else line for line in text.splitlines()) + "\n"
    )
    res = moelab("slurm", "submit", "--script", str(script), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    try:
        info = json.loads((tmp_path / "runs" / "edited" / "run.json").read_text())
        assert info["status"] == "queued" and info["slurm_job_id"] == job_id and info["id"] == "edited"
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)


def test_unknown_job_and_bad_target(tmp_path):
    res = moelab("slurm", "status", "999999", "--json", cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["state"] == "UNKNOWN"
    res = moelab("slurm", "cancel", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 1 and "slurm.json" in res.stderr and "Traceback" not in res.stderr
