"""A 2-rank FSDP run on the local Slurm (slurm_local.py says when this runs): cancelled once it has
published a sharded (DCP) checkpoint, then submitted again, it resumes from its run directory's last
complete checkpoint and finishes on the loss curve of an uninterrupted run."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from slurm_local import FINAL_STATES, moelab, needs_slurm, wait_for
from test_distributed import _config, _env, _same_curve, _train
from torchrun_cmd import needs_torchrun

from moelab.launch import slurm_cli
from moelab.train import testhooks

pytestmark = [needs_slurm, needs_torchrun]

STEPS = 8
# FSDP with two ranks: the periodic checkpoints are DCP shards, the last one a model directory.
EXTRA = {"parallel": "fsdp", "steps": STEPS, "ckpt_every": 2}


def _free_port() -> int:
    # The rendezvous port: a fixed one could be taken by another torchrun on this machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(cwd: Path, config: str, step_delay: float) -> str:
    env = {**_env(), "MOELAB_RDZV_PORT": str(_free_port()), **testhooks.env(step_delay=step_delay)}
    # sbatch passes the submitting environment on to the job.
    res = moelab("slurm", "submit", config, "--nodes", "1", "--procs-per-node", "2", cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True)  # a finished job: nothing to do


def _log(run: Path, job_id: str) -> str:
    path = run / f"slurm-{job_id}.out"
    return path.read_text() if path.exists() else "(no log)"


def _wait_for_checkpoint(run: Path, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "checkpoints" / "latest").exists():
        state = slurm_cli.status(job_id).state
        if state in FINAL_STATES or time.monotonic() > deadline:
            pytest.fail(f"job {job_id} ({state}) published no checkpoint:\n{_log(run, job_id)[-3000:]}")
        time.sleep(0.3)


def test_cancelled_job_resubmitted_resumes_from_last_dcp_checkpoint(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(_config("run", **EXTRA)))
    run = tmp_path / "runs" / "run"
    with ThreadPoolExecutor(1) as pool:
        # The uninterrupted reference, one process, trained while the job waits out its step delays.
        reference = pool.submit(_train, tmp_path / "ref", "run", 1, **EXTRA)
        first = _submit(tmp_path, "run.json", step_delay=1.0)
        try:
            _wait_for_checkpoint(run, first, timeout=90)
            res = moelab("slurm", "cancel", str(run), cwd=tmp_path)  # scancel: SIGTERM, then SIGKILL
            assert res.returncode == 0, res.stderr
            assert wait_for(first, FINAL_STATES, 60)[-1] == "CANCELLED"
        finally:
            _cancel(first)
        ref = reference.result()

    last = (run / "checkpoints" / "latest").read_text().strip()
    assert 2 <= int(last.split("-")[1]) < STEPS, last
    assert sorted(p.name for p in (run / "checkpoints" / last / "dcp").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]

    second = _submit(tmp_path, "run.json", step_delay=0.0)
    try:
        seen = wait_for(second, FINAL_STATES, 120)
    finally:
        _cancel(second)
    log = _log(run, second)
    assert seen[-1] == "COMPLETED", (seen, log[-3000:])
    assert log.count(f"[run] resuming from {last}") == 1, log[-3000:]  # rank 0's line
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    assert json.loads((run / "slurm.json").read_text())["history"][0]["job_id"] == first
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{STEPS:06d}"
    _same_curve(ref, run)  # every step once, each loss within 1e-5 of the uninterrupted run's
