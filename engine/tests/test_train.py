"""Trainer: run directory contents, resume after SIGKILL with equal losses, SIGTERM, NaN, jsonl reader."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moelab.io.checkpoint import load_model
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.flops import train_flops
from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterLogits
from moelab.train import jsoncfg, testhooks
from moelab.train.checkpointing import latest_checkpoint
from moelab.train.config import TrainConfig, load_train_config
from moelab.train.evaluate import MAX_COACT_EXPERTS, RoutingStats
from moelab.train.runlog import read_jsonl, truncate_after
from moelab.train.schedule import lr_at
from moelab.train.trainer import TrainingDiverged, train

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
TINY_DATA = {"seq_len": 32, "synthetic_train_chars": 20000, "synthetic_eval_chars": 4000}


def tiny_config(tmp: Path, run_id: str = "r", **kw) -> dict:
    cfg = {
        "run_id": run_id,
        "out": "runs",
        "steps": 12,
        "batch_size": 4,
        "log_every": 1,
        "eval_every": 6,
        "ckpt_every": 6,
        "eval_batches": 1,
        "warmup_steps": 2,
        "model": TINY_MODEL,
        "data": TINY_DATA,
        "threads": 1,
        "device": "cpu",
    }
    cfg.update(kw)
    path = tmp / f"{run_id}.json"
    path.write_text(json.dumps(cfg))
    return cfg


def moelab(*args: str, hooks: dict | None = None, **kw) -> subprocess.Popen:
    """`moelab ARGS` in a subprocess; `hooks` are test-only faults (moelab/train/testhooks.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **testhooks.env(**(hooks or {}))}
    return subprocess.Popen(
        [sys.executable, "-m", "moelab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def train_losses(run: Path) -> dict[int, float]:
    recs, bad = read_jsonl(run / "metrics.jsonl")
    assert bad == 0
    train_recs = [r for r in recs if r["split"] == "train"]
    steps = [r["step"] for r in train_recs]
    assert steps == sorted(set(steps)), "duplicate or unordered steps"
    return {r["step"]: r["loss"] for r in train_recs}


def test_schedule():
    assert lr_at(0, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.1, 10) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(5, 10, 1.0, 0.1, 0) < 1.0


def test_train_writes_run_directory(tmp_path):
    tiny_config(tmp_path)
    res = train(load_train_config(tmp_path / "r.json"), quiet=True)
    run = tmp_path / "runs" / "r"
    assert res.status == "done" and res.checkpoint == run / "checkpoints" / "step-000012"
    info = json.loads((run / "run.json").read_text())
    for key in (
        "id",
        "stage",
        "method",
        "parents",
        "config",
        "status",
        "started",
        "ended",
        "host",
        "pid",
        "experiment",
        "total_steps",
        "error",
    ):
        assert key in info
    assert info["status"] == "done" and info["stage"] == "dense" and info["total_steps"] == 12
    recs, bad = read_jsonl(run / "metrics.jsonl")
    assert bad == 0
    tr = [r for r in recs if r["split"] == "train"]
    ev = [r for r in recs if r["split"] == "eval"]
    assert [r["step"] for r in tr] == list(range(1, 13))
    assert set(tr[0]) >= {
        "step",
        "tokens",
        "time",
        "flops",
        "split",
        "loss",
        "lr",
        "lb_loss",
        "z_loss",
        "grad_norm",
        "tokens_per_s",
        "domain",
    }
    assert [r["step"] for r in ev] == [6, 12] and set(ev[0]["domain"]) == {"code", "math", "prose"}
    assert tr[-1]["loss"] < tr[0]["loss"]
    ck = run / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step-000012"
    assert sorted(p.name for p in ck.iterdir() if p.is_dir()) == ["step-000006", "step-000012"]  # keep_last 2
    for f in ("config.json", "model.safetensors", "optimizer.pt", "trainer.pt", "moelab_tokenizer.json"):
        assert (ck / "step-000012" / f).exists()
    load_model(ck / "step-000012")
    final = json.loads((run / "eval.json").read_text())
    assert set(final["domains"]) == {"code", "math", "prose"} and final["average"]["ppl"] > 1
    # a finished run is skipped
    again = train(load_train_config(tmp_path / "r.json"), quiet=True)
    assert again.status == "done" and again.step == 12


def test_moe_training_logs_routing(tmp_path):
    init = _moe_init(tmp_path, MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1], attn_experts=True))
    tiny_config(
        tmp_path,
        "m",
        stage="moe",
        method="bam-ekv",
        init=init,
        steps=4,
        log_every=2,
        load_balancing={"ffn": 0.01, "attn": 0.0},
    )
    cfg = load_train_config(tmp_path / "m.json")
    cfg.model = None
    train(cfg, quiet=True)
    run = tmp_path / "runs" / "m"
    recs, _ = read_jsonl(run / "metrics.jsonl")
    assert all(r["lb_loss"] is not None and r["z_loss"] is not None for r in recs if r["split"] == "train")
    routing, bad = read_jsonl(run / "routing.jsonl")
    assert bad == 0 and {(r["layer"], r["router"]) for r in routing} == {
        (0, "ffn"),
        (1, "ffn"),
        (0, "attn"),
        (1, "attn"),
    }
    assert {r["step"] for r in routing} == {1, 2, 4}
    r = routing[0]
    assert len(r["load"]) == 3 and sum(r["load"]) == pytest.approx(1, abs=1e-3)
    assert sum(r["prob"]) == pytest.approx(1, abs=1e-3)
    assert set(r["by_domain"]) == {"code", "math", "prose"}
    assert json.loads((run / "run.json").read_text())["method"] == "bam-ekv"
    assert load_model(latest_checkpoint(run / "checkpoints")).config.moe.attn_experts
    # co-activation: top-k FFN routers only (the soft attention router uses every expert)
    loads = [r for r in routing if "load" in r]
    assert all(("coact" in r) == (r["router"] == "ffn") for r in loads)
    for r in (r for r in loads if "coact" in r):
        c = torch.tensor(r["coact"])
        assert c.shape == (3, 3) and bool(((c >= 0) & (c <= 1)).all())
        picked = torch.tensor(r["load"]) > 0
        assert torch.equal(c.diagonal(), picked.float())
    # saturation: appended at the end, one per (logged step, FFN layer), 1.0 at the final step
    sat = [r for r in routing if "saturation" in r]
    assert routing[-len(sat) :] == sat and all("load" not in r for r in sat)
    assert sorted((r["step"], r["layer"]) for r in sat) == [(s, layer) for s in (1, 2, 4) for layer in (0, 1)]
    assert all(r["router"] == "ffn" and 0 <= r["saturation"] <= 1 for r in sat)
    assert all(r["saturation"] == 1.0 for r in sat if r["step"] == 4)


def test_coactivation_matches_a_hand_count():
    # 4 tokens, 4 experts, top-2: {0,1}, {0,2}, {0,1}, {1,2}; expert 3 is never picked.
    logits = torch.tensor([[5.0, 4, 0, -1], [5, 0, 4, -1], [4, 5, 0, -1], [0, 5, 4, -1]])
    stats = RoutingStats()
    stats.add([RouterLogits(0, "ffn", logits, 2), RouterLogits(0, "attn", logits, 0)], ["code"] * 2)
    ffn, attn = sorted(stats.records(1), key=lambda r: r["router"], reverse=True)
    # P(b | a) = tokens with a and b / tokens with a; a = 0 is picked by 3 tokens, 1 by 3, 2 by 2
    assert ffn["coact"] == [
        [1.0, round(2 / 3, 4), round(1 / 3, 4), 0.0],
        [round(2 / 3, 4), 1.0, round(1 / 3, 4), 0.0],
        [0.5, 0.5, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    assert "coact" not in attn
    many = RoutingStats()
    many.add([RouterLogits(0, "ffn", torch.randn(8, MAX_COACT_EXPERTS + 1), 2)], ["code"])
    assert "coact" not in many.records(1)[0]  # E*E numbers a record: only for small E


def _moe_init(tmp_path: Path, moe: MoEConfig) -> str:
    from moelab.io.checkpoint import save_model

    init = tmp_path / "moe-init"
    init.mkdir()
    save_model(MoELabForCausalLM(ModelConfig(**TINY_MODEL, model_type="moelab", moe=moe)), init)
    return str(init)


def test_logged_aux_losses_are_the_means_of_the_models_per_router_losses(tmp_path):
    # The trainer reads the auxiliary losses to the host once per logged step; what it logs must be
    # what the model's own router outputs give, per router: the mean over routers and micro-batches.
    from moelab.data.mixture import MixtureSampler, build_domains
    from moelab.data.tokenizer import load_tokenizer
    from moelab.models.aux_losses import load_balancing_loss, z_loss

    init = _moe_init(tmp_path, MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1], attn_experts=True))
    tiny_config(tmp_path, "a", stage="moe", init=init, steps=2, grad_accum=2, ckpt_every=1, keep_last=3)
    cfg = load_train_config(tmp_path / "a.json")
    cfg.model = None
    train(cfg, quiet=True)
    run = tmp_path / "runs" / "a"
    logged = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl")[0] if r["split"] == "train"}
    mcfg = load_model(init).config
    tok = load_tokenizer(Path(init), mcfg.vocab_size, mcfg.eos_token_id)
    domains = build_domains(cfg.data, tok)
    sampler = MixtureSampler(
        {d: t.train for d, t in domains.items()},
        {s.domain: s.weight for s in cfg.data.sources},
        cfg.data.seq_len,
        cfg.batch_size,
        cfg.data.seed,
    )
    for step, weights in ((1, init), (2, run / "checkpoints" / "step-000001")):
        model = load_model(weights).train()  # the weights that step trained from
        lb, z, ce = [], [], []
        with torch.no_grad():
            for micro in range(cfg.grad_accum):
                batch, _ = sampler.batch(step - 1, micro)
                out = model(batch[:, :-1])
                assert {r.kind for r in out.router_logits} == {"ffn", "attn"}
                lb += [load_balancing_loss(r).item() for r in out.router_logits]
                z += [z_loss(r).item() for r in out.router_logits]
                ce.append(
                    torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten()).item()
                )
        assert len(lb) == 2 * 4  # 2 micro-batches × (2 FFN + 2 attention routers)
        rec = logged[step]
        assert rec["lb_loss"] == pytest.approx(sum(lb) / len(lb), rel=1e-6, abs=1e-9)
        assert rec["z_loss"] == pytest.approx(sum(z) / len(z), rel=1e-6, abs=1e-9)
        assert rec["loss"] == pytest.approx(sum(ce) / len(ce), rel=1e-6)


def _train_moe(tmp_path: Path, run_id: str, init: str) -> Path:
    tiny_config(tmp_path, run_id, stage="moe", init=init, steps=8, log_every=2, ckpt_every=4, eval_every=4)
    cfg = load_train_config(tmp_path / f"{run_id}.json")
    cfg.model = None
    train(cfg, quiet=True)
    return tmp_path / "runs" / run_id


def test_saturation_survives_a_resume(tmp_path):
    init = _moe_init(tmp_path, MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1]))
    ref = _train_moe(tmp_path, "ref", init)
    run = _train_moe(tmp_path, "killed", init)
    # As if killed after the final records were written but before the run was marked done, and
    # the final checkpoint was lost: it resumes from step 4, whose trainer state holds the probe.
    shutil.rmtree(run / "checkpoints" / "step-000008")
    (run / "checkpoints" / "latest").write_text("step-000004\n")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    _train_moe(tmp_path, "killed", init)
    expected = (ref / "routing.jsonl").read_text()
    assert '"saturation"' in expected and (run / "routing.jsonl").read_text() == expected


def test_flops_accumulate_and_continue_across_resume(tmp_path):
    init = _moe_init(tmp_path, MoEConfig(num_experts=3, top_k=1, moe_layers=[1], attn_experts=True))
    run = _train_moe(tmp_path, "f", init)
    per_step = train_flops(load_model(init).config, 4, TINY_DATA["seq_len"])  # batch 4, grad_accum 1
    recs, _ = read_jsonl(run / "metrics.jsonl")
    assert len(recs) > 4 and all(r["flops"] == r["step"] * per_step for r in recs)  # train and eval records
    info = json.loads((run / "run.json").read_text())
    assert info["flops"] == 8 * per_step and info["flops_per_token"] == per_step / (4 * TINY_DATA["seq_len"])

    # Resume from step 4, whose trainer state says (as if counted differently) 1e6 FLOPs more:
    # the curve continues from the checkpoint's count, it is not recomputed from the step.
    def resume_from_step_4(edit) -> list[dict]:
        shutil.rmtree(run / "checkpoints" / "step-000008", ignore_errors=True)
        (run / "checkpoints" / "latest").write_text("step-000004\n")
        st_path = run / "checkpoints" / "step-000004" / "trainer.pt"
        st = torch.load(st_path, weights_only=False)
        edit(st)
        torch.save(st, st_path)
        (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
        _train_moe(tmp_path, "f", init)
        return read_jsonl(run / "metrics.jsonl")[0]

    recs = resume_from_step_4(lambda st: st.update(flops=st["flops"] + 1e6))
    assert all(r["flops"] == r["step"] * per_step + (1e6 if r["step"] > 4 else 0) for r in recs)
    assert json.loads((run / "run.json").read_text())["flops"] == 8 * per_step + 1e6
    # A checkpoint from before the count (no "flops"): every step so far is counted at today's cost.
    recs = resume_from_step_4(lambda st: st.pop("flops"))
    assert all(r["flops"] == r["step"] * per_step for r in recs)


def test_read_jsonl_partial_and_garbage(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"step": 1}\nnot json\n[1, 2]\n\n{"step": 2}\n\xff\xfe\n{"step": 3, "lo')
    recs, bad = read_jsonl(p)
    assert [r["step"] for r in recs] == [1, 2] and bad == 3
    p.write_bytes(b'{"step": 1}\n{"step": 2}')  # complete JSON without its newline
    assert read_jsonl(p) == ([{"step": 1}, {"step": 2}], 0)
    assert read_jsonl(tmp_path / "missing.jsonl") == ([], 0)
    p.write_bytes(b'{"step": 1}\n{"step": 5}\ngarbage\n{"step": 3}\n{"st')
    truncate_after(p, 3)
    assert read_jsonl(p) == ([{"step": 1}, {"step": 3}], 0)


def test_nan_marks_run_diverged(tmp_path, monkeypatch):
    tiny_config(tmp_path, "n", steps=12)
    monkeypatch.setenv(testhooks.ENV, json.dumps({"nan_at_step": 9}))
    with pytest.raises(TrainingDiverged, match="diverged at step 9.*step-000006"):
        train(load_train_config(tmp_path / "n.json"), quiet=True)
    run = tmp_path / "runs" / "n"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "diverged" and "step 9" in info["error"]
    assert latest_checkpoint(run / "checkpoints").name == "step-000006"
    recs, _ = read_jsonl(run / "metrics.jsonl")
    assert max(r["step"] for r in recs) == 8


def test_test_hooks_come_from_the_environment_only(monkeypatch):
    from moelab.errors import ConfigError

    assert "debug_nan_at_step" not in {f.name for f in dataclasses.fields(TrainConfig)}
    monkeypatch.delenv(testhooks.ENV, raising=False)
    assert testhooks.from_env() == testhooks.Hooks()
    monkeypatch.setenv(testhooks.ENV, json.dumps({"nan_at_step": 3, "step_delay": 0.5}))
    assert testhooks.from_env() == testhooks.Hooks(nan_at_step=3, step_delay=0.5)
    monkeypatch.setenv(testhooks.ENV, json.dumps({"nan_at": 3}))
    with pytest.raises(
        ConfigError, match=r"^MOELAB_TEST_HOOKS.nan_at: unknown field \(did you mean 'nan_at_step'"
    ):
        testhooks.from_env()
    monkeypatch.setenv(testhooks.ENV, "{nan")
    with pytest.raises(ConfigError, match=r"^MOELAB_TEST_HOOKS: not JSON"):
        testhooks.from_env()


def test_nan_cli_one_line(tmp_path):
    tiny_config(tmp_path, "n", steps=4)
    p = moelab("train", str(tmp_path / "n.json"), "--quiet", hooks={"nan_at_step": 2})
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("moelab: error: run n diverged at step 2") and "Traceback" not in err


def _wait_for(pred, timeout: float, proc: subprocess.Popen) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_resume_after_sigkill_continues_same_curve(tmp_path):
    kw = {"steps": 30, "ckpt_every": 10, "eval_every": 10}
    slow = {"step_delay": 0.05}  # time to kill it a few steps past a checkpoint
    tiny_config(tmp_path, "ref", **kw)
    tiny_config(tmp_path, "killed", **kw)
    p = moelab("train", str(tmp_path / "ref.json"), "--quiet", hooks=slow)
    assert p.wait(timeout=300) == 0, p.communicate()
    ref = train_losses(tmp_path / "runs" / "ref")

    run = tmp_path / "runs" / "killed"
    p = moelab("train", str(tmp_path / "killed.json"), "--quiet", hooks=slow)
    _wait_for(lambda: latest_checkpoint(run / "checkpoints") is not None, 240, p)
    time.sleep(0.15)  # a few steps past the checkpoint: those lines must be dropped on resume
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    # a torn last line, as a kill mid-write leaves it
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "spl')
    p = moelab("train", str(tmp_path / "killed.json"), "--quiet", hooks=slow)
    assert p.wait(timeout=300) == 0, p.communicate()
    resumed = train_losses(run)
    assert resumed == ref  # exactly: same data order, same optimizer state, same arithmetic
    assert json.loads((run / "run.json").read_text())["status"] == "done"


def test_sigterm_checkpoints_and_stops(tmp_path):
    tiny_config(tmp_path, "t", steps=400, ckpt_every=1000, eval_every=1000)
    run = tmp_path / "runs" / "t"
    p = moelab("train", str(tmp_path / "t.json"), "--quiet", hooks={"step_delay": 0.02})
    _wait_for(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size > 0, 120, p)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 143 and "stopped at step" in out
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped"
    ck = latest_checkpoint(run / "checkpoints")
    step = int(ck.name.split("-")[1])
    assert 0 < step < 400
    recs, _ = read_jsonl(run / "metrics.jsonl")
    assert max(r["step"] for r in recs) == step
    # and it resumes from there
    cfg = load_train_config(tmp_path / "t.json")
    cfg.steps = step + 2
    assert train(cfg, quiet=True).step == step + 2


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"run_id": "x", "lr": "fast"}))
    from moelab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^bad.json: lr: expected a number, got the string 'fast'$"):
        load_train_config(bad)
    bad.write_text(json.dumps({"run_id": "x", "data": {"seq_lne": 3}}))
    with pytest.raises(ConfigError, match=r"data.seq_lne: unknown field \(did you mean 'seq_len'\?\)"):
        load_train_config(bad)
    bad.write_text(json.dumps({"steps": 3}))
    with pytest.raises(ConfigError, match="run_id: missing"):
        load_train_config(bad)
    bad.write_text(json.dumps({"run_id": "x", "model": {"num_attention_heads": 3, "num_key_value_heads": 2}}))
    with pytest.raises(ConfigError, match="model: num_attention_heads"):
        load_train_config(bad)
    cfg = jsoncfg.from_dict(TrainConfig, jsoncfg.to_dict(TrainConfig(run_id="x")))
    assert cfg == TrainConfig(run_id="x")


def test_moelab_device_env_chooses_auto(monkeypatch):
    """The extension's `moelab.device` setting reaches the engine as MOELAB_DEVICE."""
    from moelab.errors import ConfigError
    from moelab.train.trainer import resolve_device

    monkeypatch.setenv("MOELAB_DEVICE", "cpu")
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setenv("MOELAB_DEVICE", "tpu-9")
    with pytest.raises(ConfigError, match="MOELAB_DEVICE"):
        resolve_device("auto")
    assert resolve_device("cpu").type == "cpu"  # an explicit config wins over the environment
