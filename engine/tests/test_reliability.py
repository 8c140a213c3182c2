"""Reliability: SIGKILL at random points (during steps and during checkpoint writes), a full disk
while a checkpoint is written, hostile configs, and paths no shell may interpret.

Tiny models, so the whole file runs in a minute or two on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moelab.io.checkpoint import load_model
from moelab.io.safetensors_file import read_header
from moelab.train import testhooks
from moelab.train.checkpointing import latest_checkpoint
from moelab.train.runlog import read_jsonl

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
TINY_DATA = {"seq_len": 32, "synthetic_train_chars": 20000, "synthetic_eval_chars": 4000}
KILLS = 20
SEED = 1234


def write_config(tmp: Path, run_id: str, **kw) -> Path:
    cfg = {
        "run_id": run_id,
        "out": "runs",
        "steps": 12,
        "batch_size": 4,
        "log_every": 1,
        "eval_every": 1000,
        "ckpt_every": 6,
        "eval_batches": 1,
        "warmup_steps": 2,
        "model": TINY_MODEL,
        "data": TINY_DATA,
        "threads": 1,
        "device": "cpu",
        "keep_last": 2,
    }
    cfg.update(kw)
    path = tmp / f"{run_id}.json"
    path.write_text(json.dumps(cfg))
    return path


def moelab(*args: str, preexec=None, hooks: dict | None = None, **kw) -> subprocess.Popen:
    """`moelab ARGS` in a subprocess; `hooks` are test-only faults (moelab/train/testhooks.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **testhooks.env(**(hooks or {}))}
    return subprocess.Popen(
        [sys.executable, "-m", "moelab", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
        **kw,
    )


def cli_error(capsys, *args: str) -> str:
    """Runs the `moelab` CLI in this process (what the console script calls) and returns its one
    stderr line; the exit status must be non-zero and nothing may look like a traceback."""
    from moelab.cli import main

    rc = main(list(args))
    err = capsys.readouterr().err
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("moelab: error:"), err[:500]
    return lines[0]


def train_losses(run: Path) -> dict[int, float]:
    recs, _ = read_jsonl(run / "metrics.jsonl")
    out: dict[int, float] = {}
    for r in recs:
        if r.get("split") == "train":
            assert r["step"] not in out, f"step {r['step']} logged twice"
            out[r["step"]] = r["loss"]
    return out


def check_safetensors_whole(path: Path) -> None:
    """What the extension's reader checks: the header parses and the data section is exactly as long
    as the header's offsets say (a torn write would leave it short)."""
    header = read_header(path)
    size = path.stat().st_size
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    assert size == 8 + n + end, f"{path}: {size} bytes, header implies {8 + n + end}"


def check_readers(run: Path, ref: dict[int, float]) -> int:
    """After a kill: every checkpoint a reader can list is whole, `latest` loads, and every train
    record up to the latest checkpoint is there with the reference loss. Returns that step."""
    root = run / "checkpoints"
    visible = (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.exists()
        else []
    )
    for ck in visible:  # what the extension lists (checkpoints/step-N/)
        names = {p.name for p in ck.iterdir()}
        assert {"config.json", "model.safetensors", "trainer.pt", "optimizer.pt"} <= names, (
            f"{ck}: partial ({sorted(names)})"
        )
        json.loads((ck / "config.json").read_text())
        check_safetensors_whole(ck / "model.safetensors")
    latest = latest_checkpoint(root)
    if latest is None:
        return 0
    assert latest in visible
    load_model(latest)  # the engine's reader
    step = int(latest.name.split("-")[1])
    losses = train_losses(run)
    lost = [s for s in range(1, step + 1) if s not in losses]
    assert not lost, f"steps {lost[:5]}... logged before checkpoint {latest.name} are gone"
    for s in range(1, step + 1):
        assert losses[s] == ref[s], f"step {s}: loss {losses[s]} != reference {ref[s]}"
    return step


def _wait(pred, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.002) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(every)
    return False


def _writing_checkpoint(root: Path) -> bool:
    try:
        return any(n.startswith(".step-") and ".tmp-" in n for n in os.listdir(root))
    except OSError:
        return False


def test_sigkill_loop_never_shows_a_partial_checkpoint_and_resumes_the_same_curve(tmp_path):
    # At most ~12 steps between start and kill (0.25 s at 0.02 s a step), so 20 kills fit in 260 steps
    # however fast the machine is.
    kw = {"steps": 260, "ckpt_every": 4}
    write_config(tmp_path, "ref", **kw)
    cfg = write_config(tmp_path, "k", **kw)
    p = moelab("train", str(tmp_path / "ref.json"), "--quiet")
    assert p.wait(timeout=600) == 0, p.communicate()
    ref = train_losses(tmp_path / "runs" / "ref")
    assert sorted(ref) == list(range(1, 261))

    rng = random.Random(SEED)
    run = tmp_path / "runs" / "k"
    root = run / "checkpoints"
    kills = {"step": 0, "checkpoint": 0}
    progress = []
    for _ in range(KILLS):
        p = moelab("train", str(cfg), "--quiet", hooks={"step_delay": 0.02})
        # Let it get going (import, model, data), then kill it at a random moment: either while
        # a checkpoint directory is being written, or anywhere in the loop.
        started = _wait(
            lambda pid=p.pid: (
                (run / "metrics.jsonl").exists()
                and (run / "run.json").exists()
                and json.loads((run / "run.json").read_text() or "{}").get("pid") == pid
            ),
            120,
            p,
            0.01,
        )
        assert started, f"the run never started or ended early: {p.communicate()}"
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 0.1))
            hit = _wait(lambda: _writing_checkpoint(root), 10, p, 0.0005)
            time.sleep(rng.uniform(0.0, 0.003))
            kills["checkpoint" if hit else "step"] += 1
        else:
            time.sleep(rng.uniform(0.02, 0.25))
            kills["step"] += 1
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        p.communicate()
        assert p.returncode == -signal.SIGKILL, (
            f"the run ended before the kill ({p.returncode}): make it longer"
        )
        progress.append(check_readers(run, ref))
    assert sum(kills.values()) == KILLS and kills["checkpoint"] >= 3, kills
    print(f"kills: {kills}; latest checkpoint step after each: {progress}")
    p = moelab("train", str(cfg), "--quiet")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    check_readers(run, ref)
    assert train_losses(run) == ref  # the same curve, every step, exactly
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    # No temp or half-deleted checkpoint folders are left behind.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
    assert progress == sorted(progress), progress  # latest only moves forward


def _limit_file_size(nbytes: int):
    def apply() -> None:
        # Writes past the limit fail with EFBIG instead of killing the process with SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_full_disk_during_checkpoint_keeps_the_previous_one_and_fails_clearly(tmp_path):
    # Train until the first checkpoint (step 6 of 12), then kill: the run resumes from there.
    cfg = write_config(tmp_path, "d", steps=12, ckpt_every=6)
    run = tmp_path / "runs" / "d"
    p = moelab("train", str(cfg), "--quiet", hooks={"step_delay": 0.3})
    assert _wait(lambda: latest_checkpoint(run / "checkpoints") is not None, 240, p, 0.005), p.communicate()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.communicate()
    before = latest_checkpoint(run / "checkpoints")
    assert before is not None and before.name == "step-000006"
    files_before = {f.name: f.read_bytes() for f in before.iterdir()}
    weights = (before / "model.safetensors").stat().st_size

    # Continue to step 12 with files capped below the checkpoint's size: its write must fail.
    cfg = write_config(tmp_path, "d", steps=12, ckpt_every=6)
    p = moelab("train", str(cfg), "--quiet", preexec=_limit_file_size(weights // 2))
    out, err = p.communicate(timeout=300)
    assert p.returncode != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("moelab: error:"), err
    assert "Traceback" not in err
    assert "too large" in err.lower() or "no space" in err.lower(), err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["error"] and ("too large" in info["error"].lower() or "no space" in info["error"].lower()), (
        info
    )
    # The previous checkpoint is intact, still `latest`, and loads; no temp folder is left.
    assert latest_checkpoint(run / "checkpoints") == before
    assert {f.name: f.read_bytes() for f in before.iterdir()} == files_before
    load_model(before)
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    # With room again, it resumes from there and finishes.
    p = moelab("train", str(cfg), "--quiet")
    assert p.wait(timeout=300) == 0, p.communicate()
    assert latest_checkpoint(run / "checkpoints").name == "step-000012"


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"run_id": "x", "steps": "many"}, "steps"),
        ({"run_id": "x", "lr": -1}, "lr"),
        ({"run_id": "x", "data": {"seq_len": 1}}, "data.seq_len"),
        ({"run_id": "x", "data": {"seq_lne": 8}}, "data.seq_lne"),
        ({"run_id": "x", "model": {"hidden_size": [1]}}, "model.hidden_size"),
        ({"run_id": "x", "load_balancing": {"ffn": "a lot"}}, "load_balancing.ffn"),
        ({"run_id": "../escape"}, "run_id"),
        ({"steps": 3}, "run_id"),
    ],
)
def test_config_schema_errors_name_the_field(tmp_path, capsys, cfg, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    line = cli_error(capsys, "train", str(path))
    assert field in line and "bad.json" in line, line


@pytest.mark.parametrize(
    ("exp", "field"),
    [
        ({"name": "e", "stages": [{"kind": "dense", "steps": "ten"}]}, "stages[0].steps"),
        ({"name": "e", "stages": [{"kind": "teleport"}]}, "stages[0].kind"),
        ({"name": "e", "stages": [{"kind": "upcycle", "top_kk": 2}]}, "stages[0].top_kk"),
        ({"name": "e", "stages": "dense"}, "stages"),
        ({"name": "x\0y", "stages": [{"kind": "dense"}]}, "name"),
        ({"name": "..", "stages": [{"kind": "dense"}]}, "name"),
    ],
)
def test_experiment_schema_errors_name_the_field(tmp_path, capsys, exp, field):
    path = tmp_path / "bad.moelab.json"
    path.write_text(json.dumps(exp))
    line = cli_error(capsys, "run", str(path))
    assert field in line and "bad.moelab.json" in line, line


HOSTILE_CONFIGS = {
    "empty": b"",
    "open-brace": b"{",
    "binary": b"\xff\xfe garbage",
    "array": b"[1, 2]",
    "infinite-steps": b'{"run_id": "x", "steps": 1e999}',
    "deep-nesting": b"{" * 100000,
    "huge-string": b'"' + b"a" * 5_000_000 + b'"',
    "nul-bytes": b'{"run_id": "x\\u0000y"}',
}


@pytest.mark.parametrize("raw", list(HOSTILE_CONFIGS.values()), ids=list(HOSTILE_CONFIGS))
def test_hostile_config_files_fail_in_one_line(tmp_path, capsys, raw):
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    t0 = time.monotonic()
    for command in ("train", "run"):
        line = cli_error(capsys, command, str(path))
        assert "bad.json" in line and len(line) < 1000, line[:300]
    assert time.monotonic() - t0 < 30


HOSTILE_NAMES = [
    'with space, quote\'s "double"',
    "$(touch PWNED) `touch PWNED3`",
    "-rf semi;colon; touch PWNED2",
]


def test_paths_with_shell_characters_reach_the_engine_verbatim(tmp_path):
    """Every path is one argv element (no shell): files land where named, nothing else runs."""
    base = tmp_path / "dir with $(touch PWNED0) and ; and 'quotes'"
    base.mkdir()
    for name in HOSTILE_NAMES:
        d = base / name
        d.mkdir()
        cfg = write_config(d, "run", steps=2, ckpt_every=2, out=str(d / "runs out $(id)"))
        p = moelab("train", str(cfg), "--quiet", cwd=str(d))
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert latest_checkpoint(d / "runs out $(id)" / "run" / "checkpoints") is not None
        ck = latest_checkpoint(d / "runs out $(id)" / "run" / "checkpoints")
        # And a second command takes the checkpoint path as an argument.
        exp = d / "export; touch PWNED4"
        p = moelab("export", "--ckpt", str(ck), "--format", "hf", "--out", str(exp))
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert (exp / "config.json").exists()
    pwned = [p for p in tmp_path.rglob("PWNED*")] + [
        Path.cwd() / f"PWNED{i}" for i in range(5) if (Path.cwd() / f"PWNED{i}").exists()
    ]
    assert pwned == []
