"""`moelab run` (experiment pipeline, skip done stages on rerun) and `moelab eval`."""

from __future__ import annotations

import json

from moelab.cli import main
from moelab.train.runlog import read_jsonl

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


def experiment(tmp_path):
    doc = {
        "name": "exp",
        "out": "runs",
        "device": "cpu",
        "threads": 1,
        "data": {"seq_len": 32, "synthetic_train_chars": 20000, "synthetic_eval_chars": 4000},
        "defaults": {
            "steps": 3,
            "batch_size": 4,
            "log_every": 1,
            "eval_every": 3,
            "ckpt_every": 3,
            "eval_batches": 1,
        },
        "stages": [
            {"kind": "dense", "model": TINY_MODEL, "steps": 6},
            {"kind": "branch", "domains": ["code", "math"]},
            {"kind": "upcycle", "methods": ["sparse", "btx"], "keep_seed": True},
            {"kind": "moe"},
            {"kind": "eval"},
        ],
    }
    path = tmp_path / "exp.moelab.json"
    path.write_text(json.dumps(doc))
    return path


def test_run_pipeline_and_rerun_skips(tmp_path, capsys):
    path = experiment(tmp_path)
    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "branch-code" in out and "btx" in out
    runs = tmp_path / "runs"
    expected = {
        "exp-seed": "dense",
        "exp-branch-code": "branch",
        "exp-branch-math": "branch",
        "exp-upcycle-sparse": "upcycle",
        "exp-upcycle-btx": "upcycle",
        "exp-moe-sparse": "moe",
        "exp-moe-btx": "moe",
        "exp-eval": "eval",
    }
    for run_id, stage in expected.items():
        info = json.loads((runs / run_id / "run.json").read_text())
        assert (info["id"], info["stage"], info["status"], info["experiment"]) == (
            run_id,
            stage,
            "done",
            "exp",
        )
    assert json.loads((runs / "exp-moe-btx" / "run.json").read_text())["parents"] == ["exp-upcycle-btx"]
    up = json.loads((runs / "exp-upcycle-btx" / "run.json").read_text())
    assert up["method"] == "btx" and up["parents"] == ["exp-seed", "exp-branch-code", "exp-branch-math"]
    assert (runs / "exp-upcycle-btx" / "checkpoint" / "config.json").exists()
    # branches train on their own domain only
    recs, _ = read_jsonl(runs / "exp-branch-math" / "metrics.jsonl")
    assert {d for r in recs if r["split"] == "train" for d in r["domain"]} == {"math"}
    routing, _ = read_jsonl(runs / "exp-moe-btx" / "routing.jsonl")
    assert routing and len(routing[0]["load"]) == 3  # two branches + the seed
    ev = json.loads((runs / "exp-eval" / "eval.json").read_text())
    assert set(ev["models"]) == {"seed", "branch-code", "branch-math", "sparse", "btx"}
    mtime = (runs / "exp-seed" / "metrics.jsonl").stat().st_mtime_ns
    # rerun: every stage is done, nothing retrains
    assert main(["run", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    for run_id in ("exp-seed", "exp-branch-code", "exp-upcycle-btx", "exp-moe-btx", "exp-eval"):
        assert f"[{run_id}] already done" in err
    assert (runs / "exp-seed" / "metrics.jsonl").stat().st_mtime_ns == mtime

    # moelab eval on a run directory and on user text
    out_file = tmp_path / "ev.json"
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(runs / "exp-moe-btx"),
                "--data",
                "code",
                "math",
                "--seq-len",
                "32",
                "--batches",
                "1",
                "--out",
                str(out_file),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(out_file.read_text())
    assert set(res["domains"]) == {"code", "math"} and res["average"]["ppl"] > 1
    assert {(r["layer"], r["router"]) for r in res["routing"]} == {(0, "ffn"), (1, "ffn")}
    assert set(res["routing"][0]["by_domain"]) == {"code", "math"}
    (tmp_path / "mine.txt").write_text("hello world, this is my own text.\n" * 30)
    assert (
        main(
            [
                "eval",
                "--ckpt",
                str(runs / "exp-seed"),
                "--data",
                f"mine={tmp_path / 'mine.txt'}",
                "--seq-len",
                "32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["domains"]["mine"]["tokens"] > 500  # the whole file, not a held-out tail
