"""Data parallelism: a 2-process gloo run under torchrun (DDP or FSDP) logs the losses of a 1-process
run with the same global batch, and only rank 0 writes the run directory, in the single-process format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchrun_cmd import needs_torchrun, torchrun

from moelab.errors import ConfigError
from moelab.io.checkpoint import load_model
from moelab.launch import distributed
from moelab.launch.distributed import Dist
from moelab.train import testhooks


def _config(run_id: str, **extra: object) -> dict:
    # An MoE from scratch with gradient accumulation: covers unused experts and no_sync.
    # The load-balancing loss is per rank by design (see launch/distributed.py), so it is off here.
    return {
        "run_id": run_id,
        "out": "runs",
        "steps": 4,
        "batch_size": 4,
        "grad_accum": 2,
        "warmup_steps": 1,
        "log_every": 1,
        "eval_every": 100,
        "eval_batches": 1,
        "ckpt_every": 2,
        "threads": 1,
        "device": "cpu",
        "load_balancing": {"ffn": 0.0, "attn": 0.0},
        "model": {
            "vocab_size": 256,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            "eos_token_id": 0,
            "moe": {"num_experts": 4, "top_k": 1, "moe_layers": [0, 1]},
        },
        "data": {"seq_len": 16, "synthetic_train_chars": 20000, "synthetic_eval_chars": 2000},
        **extra,
    }


def _env() -> dict[str, str]:
    # Two workers on a shared 2-core machine: one thread each, and no stray torchrun settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return {**env, "OMP_NUM_THREADS": "1"}


def _losses(run_dir: Path) -> list[tuple[int, str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], r["loss"]) for r in rows]


def _torchrun(config: str, ranks: int = 2) -> list[str]:
    return torchrun(ranks, "-m", "moelab", "train", config, "--quiet")


def _train(cwd: Path, run_id: str, ranks: int, **extra: object) -> Path:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / f"{run_id}.json").write_text(json.dumps(_config(run_id, **extra)))
    cmd = (
        _torchrun(f"{run_id}.json", ranks)
        if ranks > 1
        else [sys.executable, "-m", "moelab", "train", f"{run_id}.json", "--quiet"]
    )
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "runs" / run_id


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The reference: one process, the whole global batch."""
    return _train(tmp_path_factory.mktemp("single"), "single", 1)


def _same_curve(one: Path, two: Path) -> None:
    a, b = _losses(one), _losses(two)
    # Same records (rank 1 wrote none), same losses.
    assert [(s, k) for s, k, _ in a] == [(s, k) for s, k, _ in b]
    for (step, split, la), (_, _, lb) in zip(a, b):
        assert abs(la - lb) <= 1e-5, (step, split, la, lb)


def _grad_norms(run: Path) -> list[float]:
    return [
        r["grad_norm"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "train"
    ]


def _same_checkpoints(one: Path, two: Path) -> None:
    from safetensors.torch import load_file

    info = json.loads((two / "run.json").read_text())
    assert info["status"] == "done" and info["error"] is None
    assert (two / "checkpoints" / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(
        p.name for p in (one / "checkpoints").iterdir()
    )
    assert (two / "eval.json").exists()
    wa = load_file(one / "checkpoints" / "step-000004" / "model.safetensors")
    wb = load_file(two / "checkpoints" / "step-000004" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) <= 1e-5


@needs_torchrun
def test_two_gloo_ranks_match_one_process(tmp_path, single):
    two = _train(tmp_path, "ddp", 2, loggers=["tensorboard"])
    _same_curve(single, two)
    _same_checkpoints(single, two)
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0's only


@needs_torchrun
def test_fsdp_two_gloo_ranks_match_one_process(tmp_path, single):
    two = _train(tmp_path, "fsdp", 2, parallel="fsdp")
    _same_curve(single, two)
    _same_checkpoints(single, two)
    # Gradient norms are global ones (not a rank's shard), and optimizer.pt has one process's layout,
    # so the checkpoint resumes under any world size.
    assert _grad_norms(single) == pytest.approx(_grad_norms(two), abs=1e-5)
    oa, ob = (
        torch.load(d / "checkpoints" / "step-000004" / "optimizer.pt", weights_only=True)
        for d in (single, two)
    )
    assert [g["params"] for g in oa["param_groups"]] == [g["params"] for g in ob["param_groups"]]
    assert oa["state"].keys() == ob["state"].keys()
    for i, st in oa["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(st[k], ob["state"][i][k], atol=1e-6), (i, k)


@needs_torchrun
def test_fsdp_stop_and_resume_continues_the_curve(tmp_path, single):
    cfg = "fsdp_stop.json"
    (tmp_path / cfg).write_text(json.dumps(_config("fsdp_stop", parallel="fsdp")))
    run = tmp_path / "runs" / "fsdp_stop"
    env = {**_env(), **testhooks.env(step_delay=1.0)}  # time to stop it before its last step
    proc = subprocess.Popen(
        _torchrun(cfg), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.1)
        proc.terminate()  # torchrun passes SIGTERM on to its workers, which agree on a step and checkpoint
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped", info
    assert (run / "checkpoints" / "latest").read_text().strip() < "step-000004"
    _train(tmp_path, "fsdp_stop", 2, parallel="fsdp")  # same config, resumed from `latest`
    _same_curve(single, run)


@needs_torchrun
def test_sharded_checkpoint_resumes_at_one_and_three_ranks(tmp_path):
    """2 FSDP ranks die right after their step-2 checkpoint (DCP: each rank wrote its shards); the run
    resumes from it in one process and at 3 ranks, each continuing the uninterrupted curve. With 3
    experts the 2 ranks split the expert stacks on dim 1 (launch/fsdp.py) and the 3 ranks on dim 0:
    DCP reshards between the layouts."""
    model = {**_config("run")["model"], "moe": {"num_experts": 3, "top_k": 1, "moe_layers": [0, 1]}}
    # 6 rows split over 1, 2 and 3 ranks
    extra = {"parallel": "fsdp", "batch_size": 6, "grad_accum": 1, "model": model}
    ref = _train(tmp_path / "ref", "run", 1, **extra)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "run.json").write_text(json.dumps(_config("run", **extra)))
    env = {**_env(), **testhooks.env(crash_after_step=2)}
    done = subprocess.run(
        _torchrun("run.json"), cwd=crashed, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    ckpt = crashed / "runs" / "run" / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (ckpt / "model.safetensors").exists()
    for ranks in (1, 3):
        shutil.copytree(crashed, tmp_path / f"resume{ranks}")
        resumed = _train(tmp_path / f"resume{ranks}", "run", ranks, **extra)
        _same_curve(ref, resumed)
        assert (resumed / "checkpoints" / "step-000004" / "model.safetensors").exists()  # the run's output


def test_single_process_is_a_no_op():
    d = Dist()
    batch, rows = torch.zeros(4, 3), ["a", "b", "c", "d"]
    assert d.shard(batch, rows) == (batch, rows)
    assert d.mean([1.0, 2.0]) == [1.0, 2.0] and d.any(True) and not d.any(False)
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model) is model
    assert d.on_main(lambda: 7) == 7
    d.check_batch(3)


def test_fsdp_in_one_process_trains_unsharded_and_says_so_once(monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "_told_unsharded", False)
    for _ in range(2):
        d = distributed.setup(torch.device("cpu"), "fsdp")
        assert not d.sharded and d.build_device == torch.device("cpu")
    assert capsys.readouterr().err.count("parallel=fsdp needs torchrun") == 1
    assert Dist(rank=0, world_size=2, parallel="fsdp").sharded and not Dist(rank=0, world_size=2).sharded


def test_shards_partition_the_global_batch():
    batch, rows = torch.arange(12).view(6, 2), list("abcdef")
    parts = [Dist(rank=r, world_size=3).shard(batch, rows) for r in range(3)]
    assert sorted(x for p in parts for x in p[1]) == rows
    assert sorted(int(v) for p in parts for v in p[0][:, 0]) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(ConfigError, match="batch_size: 4 .* 3 data-parallel"):
        Dist(rank=0, world_size=3).check_batch(4)


def test_workers_write_only_their_failure():
    class FakeRunDir:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str | None]] = []

        def set_status(self, status: str, error: str | None = None) -> None:
            self.calls.append((status, error))

        def file(self, name: str) -> str:
            return name

    rd = FakeRunDir()
    worker = Dist(rank=1, world_size=2).guard_run_dir(rd)
    worker.set_status("running")
    worker.set_status("done")
    worker.set_status("failed", "boom")
    assert rd.calls == [("failed", "rank 1: boom")]
    assert worker.file("metrics.jsonl") == "metrics.jsonl"
    assert Dist(rank=1, world_size=2).main_only(lambda: 1 / 0).write({"x": 1}) is None


@needs_torchrun
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_frozen_backbone_under_two_ranks(tmp_path, parallel):
    """`freeze`: DDP and FSDP leave the frozen parameters out of gradient sync and the optimizer."""

    one = _train(tmp_path, "one", 1, freeze=["backbone", "routers"])
    two = _train(tmp_path, parallel, 2, parallel=parallel, freeze=["backbone", "routers"])
    _same_curve(one, two)
    _same_checkpoints(one, two)
    # Under FSDP step 2 is a sharded (DCP) checkpoint and the last one a model directory.
    first = load_model(two / "checkpoints" / "step-000002").state_dict()
    last = load_model(two / "checkpoints" / "step-000004").state_dict()
    assert all(torch.equal(first[k], last[k]) == (".experts." not in k) for k in first)
