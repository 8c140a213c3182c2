"""Asynchronous DCP checkpoints (train config `async_checkpoint`): 2 FSDP gloo ranks write them in
the background while training goes on, with the same loss curve and the same checkpoints as
synchronous saves; a run killed while one is pending resumes from the previous complete one."""

from __future__ import annotations

import json
import subprocess
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
_EXTRA = {"parallel": "fsdp", "checkpoint_format": "dcp", "keep_last": 10}


@pytest.fixture(scope="module")
def sync(tmp_path_factory) -> Path:
    """The reference: synchronous checkpoints after every step."""
    return _train(tmp_path_factory.mktemp("sync"), "run", 2, ckpt_every=1, **_EXTRA)


def _tensors(ckpt: Path, into: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, model and optimizer state, by its DCP key."""
    dcp_to_torch_save(ckpt / DCP_DIR, into)  # the whole state in one process
    flat, _ = flatten_state_dict(torch.load(into, weights_only=False))
    return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}


def test_same_curve_and_checkpoints_as_synchronous_saves(tmp_path, sync):
    run = _train(tmp_path, "run", 2, ckpt_every=2, async_checkpoint=True, **_EXTRA)
    _same_curve(sync, run)
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-000004"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-000002", "step-000004"]
    for name in ("step-000002", "step-000004"):
        got = _tensors(ckpts / name, tmp_path / f"{name}.a.pt")
        want = _tensors(sync / "checkpoints" / name, tmp_path / f"{name}.s.pt")
        assert got.keys() == want.keys() and any(k.startswith("optim.state.") for k in got)
        for k, t in want.items():
            torch.testing.assert_close(got[k], t, rtol=0, atol=0, msg=f"{name} {k}")
        assert (ckpts / name / DCP_DIR / "tensors.json").exists()  # rank 0's index, written after the shards
        state = json.loads((ckpts / name / "trainer_state.json").read_text())
        assert state["step"] == int(name.split("-")[1])


def test_killed_while_pending_resumes_from_the_previous_checkpoint(tmp_path, sync):
    """Both ranks die right after starting step 3's asynchronous save, before it is published: `latest`
    still names step 2, the resume continues the uninterrupted curve and prunes the leftover."""
    extra = {"ckpt_every": 1, "async_checkpoint": True, **_EXTRA}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "run.json").write_text(json.dumps(_config("run", **extra)))
    env = {**_env(), **testhooks.env(crash_after_step=3)}
    done = subprocess.run(
        _torchrun("run.json"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-000002"
    assert not (ckpts / "step-000003").exists()
    assert [p.name.split(".tmp-")[0] for p in ckpts.glob(".step-*")] == [".step-000003"]
    resumed = _train(tmp_path, "run", 2, **extra)  # same config, resumed from `latest`
    _same_curve(sync, resumed)
    assert (ckpts / "latest").read_text().strip() == "step-000004"
    assert not list(ckpts.glob(".*")), "the killed run's temp folder was not pruned"
