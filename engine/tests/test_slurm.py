"""`moelab slurm submit|status|cancel|log` against a real Slurm: the local one of slurm_local.py, which
says when these tests run and when they skip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from slurm_local import FINAL_STATES, moelab, needs_slurm, wait_for

from moelab.launch import slurm_cli

DONE_TIMEOUT_S = 120
pytestmark = needs_slurm


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

    seen = wait_for(job_id, FINAL_STATES, DONE_TIMEOUT_S)
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
        wait_for(job_id, {"RUNNING"}, 60)
        res = moelab("slurm", "cancel", str(run_dir), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        seen = wait_for(job_id, {"CANCELLED", "COMPLETED", "FAILED"}, 60)
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
