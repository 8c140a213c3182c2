"""Asynchronous DCP checkpoints (train config `async_checkpoint`): 2 FSDP gloo ranks write them in
the background while training goes on, with the same loss curve and the same checkpoints as
synchronous saves; a run killed while one is pending resumes from the previous complete one. (One
torchrun costs ~15 s on a shared machine, so a single killed-and-resumed run shows both.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distributed import _config, _env, _same_curve, _torchrun, _train
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torchrun_cmd import needs_torchrun

from moelab.io.dcp_file import DCP_DIR
from moelab.train import testhooks

pytestmark = needs_torchrun

# Every checkpoint sharded (the last one too, written synchronously), and all of them kept.
_EXTRA = {"steps": 6, "parallel": "fsdp", "checkpoint_format": "dcp", "keep_last": 10}


@pytest.fixture(scope="module")
def sync(tmp_path_factory) -> Path:
    """The reference: synchronous checkpoints after every step."""
    return _train(tmp_path_factory.mktemp("sync"), "run", 2, ckpt_every=1, **_EXTRA)


def _tensors(ckpt: Path, into: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, model and optimizer state, by its DCP key."""
    dcp_to_torch_save(ckpt / DCP_DIR, into)  # the whole state in one process
    flat, _ = flatten_state_dict(torch.load(into, weights_only=False))
    return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}


def _same_checkpoints(run: Path, sync: Path, steps: tuple[int, ...], atol: float) -> None:
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", *(f"step-{s:06d}" for s in steps)]
    assert (ckpts / "latest").read_text().strip() == f"step-{steps[-1]:06d}"
    for step in steps:
        name = f"step-{step:06d}"
        got = _tensors(ckpts / name, run / f"{name}.pt")
        want = _tensors(sync / "checkpoints" / name, run / f"{name}.sync.pt")
        assert got.keys() == want.keys() and any(k.startswith("optim.state.") for k in got)
        for k, t in want.items():
            torch.testing.assert_close(got[k], t, rtol=0, atol=atol, msg=f"{name} {k}")
        assert (ckpts / name / DCP_DIR / "tensors.json").exists()  # rank 0's index, after the shards
        assert json.loads((ckpts / name / "trainer_state.json").read_text())["step"] == step


def test_killed_while_pending_resumes_the_curve_with_the_same_checkpoints(tmp_path, sync):
    """Checkpoints every 2 steps: step 2's is written while step 3 runs. Both ranks die right after
    starting step 4's, before it is published: `latest` still names step 2. The resume continues the
    uninterrupted curve, prunes the leftover, and its checkpoints equal the synchronous ones."""
    extra = {"ckpt_every": 2, "async_checkpoint": True, **_EXTRA}
    (tmp_path / "run.json").write_text(json.dumps(_config("run", **extra)))
    env = {**_env(), **testhooks.env(crash_after_step=4)}
    done = subprocess.run(
        _torchrun("run.json"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-000002"
    assert not (ckpts / "step-000004").exists()
    assert [p.name.split(".tmp-")[0] for p in ckpts.glob(".step-*")] == [".step-000004"]
    resumed = _train(tmp_path, "run", 2, **extra)  # same config, resumed from `latest`
    _same_curve(sync, resumed)
    _same_checkpoints(resumed, sync, (2, 4, 6), atol=0)


def test_one_process_writes_them_without_a_process_group(tmp_path, sync):
    """No torchrun: DCP's async_save writes with no_dist. 2 ranks match one process (test_distributed),
    to 1e-5."""
    run = _train(tmp_path, "run", 1, ckpt_every=1, async_checkpoint=True, **_EXTRA)
    _same_curve(sync, run)
    _same_checkpoints(run, sync, (1, 2, 3, 4, 5, 6), atol=1e-5)


def test_safetensors_checkpoints_say_they_are_synchronous(tmp_path):
    """async_checkpoint applies to DCP checkpoints: a run writing safetensors says so, once."""
    cfg = _config("run", steps=1, ckpt_every=1, async_checkpoint=True, checkpoint_format="safetensors")
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "moelab", "train", "run.json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("async_checkpoint: this run's checkpoints are safetensors") == 1, done.stderr
    assert (tmp_path / "runs" / "run" / "checkpoints" / "step-000001" / "model.safetensors").exists()
