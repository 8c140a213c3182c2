"""`moelab slurm script`: the generated sbatch script, options and quoting. No Slurm needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.errors import ConfigError
from moelab.launch import slurm_options, train_target
from moelab.launch.sbatch_script import JobSpec, config_of_script, render, run_dir_of_script
from moelab.launch.slurm_options import SlurmOptions


def _config(tmp_path: Path, **extra) -> Path:
    d = tmp_path / "my configs"  # a space on purpose
    d.mkdir(exist_ok=True)
    path = d / "tiny.json"
    path.write_text(json.dumps({"run_id": "tiny-1", "out": "../runs", **extra}))
    return path


def _script(capsys, *argv: str) -> str:
    assert main(["slurm", "script", *argv]) == 0
    return capsys.readouterr().out


def test_single_process_runs_plain_python(tmp_path, capsys):
    text = _script(capsys, str(_config(tmp_path)))
    assert "torch.distributed.run" not in text and "srun" not in text
    assert f"PYTHON={sys.executable}" in text or f"PYTHON='{sys.executable}'" in text
    assert "-m moelab train" in text
    run_dir = tmp_path / "runs" / "tiny-1"
    assert (
        f'#SBATCH --output="{run_dir}/slurm-%j.out"' in text
        or f"#SBATCH --output={run_dir}/slurm-%j.out" in text
    )
    assert run_dir_of_script(text) == run_dir
    assert config_of_script(text) == _config(tmp_path).resolve()


def test_config_slurm_object_and_cli_overrides(tmp_path, capsys):
    cfg = _config(tmp_path, slurm={"nodes": 2, "gpus_per_node": 4, "time": "01:00:00", "partition": "gpu"})
    text = _script(capsys, str(cfg), "--partition", "big", "--account", "proj", "--cpus-per-task", "16")
    for line in (
        "--nodes=2",
        "--gpus-per-node=4",
        "--time=01:00:00",
        "--partition=big",
        "--account=proj",
        "--cpus-per-task=16",
        "--ntasks-per-node=1",
    ):
        assert f"#SBATCH {line}\n" in text
    assert "srun --kill-on-bad-exit=1" in text
    assert "--nproc-per-node 4" in text and "--rdzv-backend c10d" in text and '"$head:$port"' in text
    assert '--nnodes "$SLURM_NNODES"' in text


def test_procs_per_node_runs_cpu_workers_under_torchrun(tmp_path, capsys):
    """CPU data parallelism on one node: torchrun with the workers asked for, still one Slurm task."""
    text = _script(capsys, str(_config(tmp_path, slurm={"procs_per_node": 2})))
    assert "--nproc-per-node 2" in text and "#SBATCH --ntasks-per-node=1\n" in text
    assert "--gpus-per-node" not in text and "#SBATCH --cpus-per-task=2\n" in text  # a CPU per worker
    text = _script(
        capsys, str(_config(tmp_path)), "--nodes", "2", "--gpus-per-node", "4", "--procs-per-node", "2"
    )
    assert "--nproc-per-node 2" in text and "#SBATCH --gpus-per-node=4\n" in text


def test_procs_per_node_errors_name_the_option(tmp_path, capsys):
    cfg = str(_config(tmp_path))
    assert main(["slurm", "script", cfg, "--gpus-per-node", "2", "--procs-per-node", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--procs-per-node 3: more than the 2 GPUs" in err
    # An edited script carries its own torchrun line: the flag cannot reach it through sbatch.
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    assert main(["slurm", "submit", "--script", str(script), "--procs-per-node", "2"]) == 1
    assert "--procs-per-node: not with --script" in capsys.readouterr().err


def test_paths_with_spaces_and_quotes_are_shell_safe(tmp_path):
    weird = tmp_path / "a b'c$(touch pwned)"
    spec = JobSpec(
        python="/opt/py env/bin/python",
        engine_args=["train", str(weird / "c.json")],
        workdir=weird,
        run_dir=tmp_path / "runs x" / "r",
        job_name="moelab-r",
        source="test",
    )
    text = render(spec, SlurmOptions())
    script = tmp_path / "job.sh"
    script.write_text(text)
    # bash -n parses without running; then run the body with a fake python that prints its arguments.
    subprocess.run(["bash", "-n", str(script)], check=True)
    weird.mkdir()
    fake = tmp_path / "fake python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "ARG:$a"; done\n')
    fake.chmod(0o755)
    text = text.replace(
        f"PYTHON={__import__('shlex').quote(spec.python)}", f"PYTHON={__import__('shlex').quote(str(fake))}"
    )
    script.write_text(text)
    out = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert f"ARG:{weird / 'c.json'}" in out.splitlines()
    assert not (tmp_path / "pwned").exists() and not (weird / "pwned").exists()


def test_sbatch_injection_rejected(tmp_path):
    spec = JobSpec(
        python="python",
        engine_args=["train", "x"],
        workdir=tmp_path,
        run_dir=tmp_path / 'bad"dir',
        job_name="j",
        source="t",
    )
    with pytest.raises(ConfigError, match="double quote"):
        render(spec, SlurmOptions())
    with pytest.raises(ConfigError, match="--partition"):
        SlurmOptions().merged({"partition": "gpu\n#SBATCH --uid=0"})


@pytest.mark.parametrize(
    "bad",
    [
        {"nodes": 0},
        {"nodes": "2"},
        {"gpus_per_node": -1},
        {"procs_per_node": 0},
        {"time": "soon"},
        {"account": "a b"},
        {"gpu": 1},
    ],
)
def test_bad_slurm_object_names_the_field(tmp_path, bad):
    cfg = _config(tmp_path, slurm=bad)
    with pytest.raises(ConfigError, match=r"tiny\.json: slurm\."):
        slurm_options.from_config(train_target.load(cfg).raw, cfg.name)


def test_cli_error_is_one_line(tmp_path, capsys):
    assert main(["slurm", "script", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err


def test_script_out_writes_file(tmp_path, capsys):
    out = tmp_path / "sub" / "job.sbatch"
    assert main(["slurm", "script", str(_config(tmp_path)), "--out", str(out)]) == 0
    assert out.read_text().startswith("#!/bin/bash\n")


def test_queued_run_json_and_cancel_before_start(tmp_path):
    from moelab.train import rundir

    run_dir = tmp_path / "runs" / "r1"
    raw = {"run_id": "r1", "stage": "moe", "method": "btx", "steps": 7}
    assert rundir.mark_queued(run_dir, raw, "r1", "42")
    info = json.loads((run_dir / "run.json").read_text())
    assert (
        info["status"] == "queued"
        and info["stage"] == "moe"
        and info["slurm_job_id"] == "42"
        and info["pid"] is None
    )
    assert not rundir.mark_queued(run_dir, raw, "r1", "43")  # a resubmission keeps the run's own run.json
    assert rundir.mark_cancelled(run_dir, "42")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "stopped" and "42" in info["error"]


def test_experiment_runs_as_one_process(tmp_path, capsys):
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"name": "demo", "stages": [{"kind": "dense"}], "slurm": {"gpus_per_node": 2}}))
    text = _script(capsys, str(exp))
    assert "torch.distributed.run" not in text and "-m moelab run" in text and "--gpus-per-node=2" in text
    assert run_dir_of_script(text) == tmp_path / "runs" / ".slurm" / "demo"
    assert main(["slurm", "script", str(exp), "--nodes", "2"]) == 1
    assert "one process on one node" in capsys.readouterr().err
