"""Metric sinks: TensorBoard events read back with TensorBoard's own reader, the W&B offline run read
back with W&B's own record dump, both equal to metrics.jsonl at every step, across a resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator  # a test dependency (engine[test])

from moelab.errors import ConfigError
from moelab.train import jsoncfg
from moelab.train.config import TrainConfig
from moelab.train.experiment import ExperimentConfig
from moelab.train.pipeline import Pipeline
from moelab.train.runlog import read_jsonl
from moelab.train.trackers import open_sinks, scalars
from moelab.train.trainer import train

TINY = {
    "run_id": "tr",
    "steps": 8,
    "batch_size": 2,
    "log_every": 1,
    "eval_every": 4,
    "ckpt_every": 4,
    "eval_batches": 1,
    "warmup_steps": 1,
    "threads": 1,
    "device": "cpu",
    "model": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    },
    "data": {"seq_len": 16, "synthetic_train_chars": 4000, "synthetic_eval_chars": 1000},
}


def _train(tmp: Path, loggers: list[str]) -> Path:
    cfg = jsoncfg.from_dict(TrainConfig, {**TINY, "out": str(tmp / "runs"), "loggers": loggers})
    train(cfg, quiet=True)
    return tmp / "runs" / "tr"


def _resume_from_step_4(run: Path, loggers: list[str]) -> None:
    """As if the run died after step 8 was logged but before its checkpoint was written."""
    ckpts = run / "checkpoints"
    for d in ckpts.glob("step-*"):
        if d.name != "step-000004":
            shutil.rmtree(d)
    (ckpts / "latest").write_text("step-000004\n")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    _train(run.parent.parent, loggers)


def _expected(run: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as tag -> {step: value}; a step must not appear twice for one tag."""
    recs, bad = read_jsonl(run / "metrics.jsonl")
    assert bad == 0 and recs
    out: dict[str, dict[int, float]] = {}
    for rec in recs:
        for tag, value in scalars(rec).items():
            assert rec["step"] not in out.setdefault(tag, {}), f"{tag} twice at step {rec['step']}"
            out[tag][rec["step"]] = value
    return out


def _tensorboard(run: Path) -> dict[str, dict[int, float]]:
    acc = event_accumulator.EventAccumulator(
        str(run / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0}
    )  # 0 = keep all
    acc.Reload()
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step shown twice {steps}"
        out[tag] = {e.step: e.value for e in events}
    return out


def _assert_same(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]]) -> None:
    assert set(got) == set(want)
    for tag, series in want.items():
        assert sorted(got[tag]) == sorted(series), tag
        assert got[tag] == pytest.approx(series, rel=1e-6), tag  # event files store float32


def test_scalar_names_follow_metrics_jsonl():
    rec = {
        "step": 3,
        "tokens": 96,
        "time": 0.5,
        "flops": 1e9,
        "split": "eval",
        "loss": 2.5,
        "ppl": 12.2,
        "lb_loss": None,
        "domain": {"code": 2.0, "prose": 3.0},
    }
    assert scalars(rec) == {
        "eval/tokens": 96.0,
        "eval/time": 0.5,
        "eval/flops": 1e9,
        "eval/loss": 2.5,
        "eval/ppl": 12.2,
        "eval/domain/code": 2.0,
        "eval/domain/prose": 3.0,
    }


def test_tensorboard_events_equal_metrics_and_resume_does_not_duplicate(tmp_path):
    run = _train(tmp_path, ["tensorboard"])
    want = _expected(run)
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/loss", "eval/domain/code"} <= set(want)
    _assert_same(_tensorboard(run), want)
    first = sorted((run / "tensorboard").iterdir())
    _resume_from_step_4(run, ["tensorboard"])
    assert len(sorted((run / "tensorboard").iterdir())) == len(first) + 1  # appended, earlier file kept
    _assert_same(_tensorboard(run), _expected(run))


def _wandb_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """One offline W&B run directory's history rows, through `wandb leet inspect` (W&B's own reader of
    its .wandb log) and the protobuf text format of W&B's Record."""
    from google.protobuf import text_format
    from wandb.proto.wandb_internal_pb2 import Record

    log = next(run_dir.glob("run-*.wandb"))
    dump = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows: dict[int, dict[str, float]] = {}
    for block in dump.split("\n# record ")[1:]:
        rec = text_format.Parse(block.split("\n", 1)[1], Record())
        if rec.WhichOneof("record_type") == "history":
            items = {
                i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in rec.history.item
            }
            assert rec.history.step.num not in rows
            rows[rec.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    return rows


def test_wandb_offline_run_holds_the_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not importable here (pip install 'moelab[trackers]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    run = _train(tmp_path, ["wandb", "tensorboard"])
    sessions = sorted((run / "wandb").glob("offline-run-*-tr"))
    assert len(sessions) == 1
    want = _expected(run)
    rows = {
        step: {tag: series[step] for tag, series in want.items() if step in series}
        for step in {s for series in want.values() for s in series}
    }
    assert _wandb_history(sessions[0]) == rows  # W&B keeps float64: exactly metrics.jsonl's numbers
    _tensorboard(run)  # both loggers at once
    _resume_from_step_4(run, ["wandb", "tensorboard"])
    sessions = sorted((run / "wandb").glob("offline-run-*-tr"))
    assert len(sessions) == 2  # the same W&B run id, continued by a second session
    resumed = _wandb_history(sessions[1])
    assert sorted(resumed) == [5, 6, 7, 8]  # it continues after the checkpoint, it does not start over
    want = _expected(run)
    assert resumed == {s: {t: v[s] for t, v in want.items() if s in v} for s in resumed}


def test_unknown_or_missing_logger_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="'mlflow' is not a logger"):
        open_sinks(["mlflow"], tmp_path, "r", {}, resume_step=0)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import raises ImportError
    with pytest.raises(ConfigError) as e:
        open_sinks(["wandb"], tmp_path, "r", {}, resume_step=0)
    assert "\n" not in str(e.value) and "pip install 'moelab[trackers]'" in str(e.value)
    with pytest.raises(ConfigError, match="loggers"):
        jsoncfg.from_dict(TrainConfig, {**TINY, "loggers": ["mlflow"]})


def test_experiment_loggers_reach_its_training_runs(tmp_path):
    exp = jsoncfg.from_dict(
        ExperimentConfig,
        {"out": str(tmp_path), "loggers": ["tensorboard", "wandb"], "stages": [{"kind": "dense"}]},
    )
    cfg = Pipeline(exp, quiet=True)._train_config(exp.stages[0], "experiment-seed", "dense")
    assert cfg.loggers == ["tensorboard", "wandb"]
    assert (
        jsoncfg.from_dict(ExperimentConfig, {"stages": [{"kind": "dense"}]}).loggers == []
    )  # off by default
