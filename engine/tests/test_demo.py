"""`moelab demo --quick` end to end (about 20 s alone on 2 cores; allow for shared machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from moelab.io.checkpoint import load_config
from moelab.models.flops import train_flops
from moelab.train.demo import ATTN_ABLATION, DEMO_METHODS

CONTROLS = [v.name for v in ATTN_ABLATION] + ["btx-compute"]


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "moelab", "demo", "--quick", "--out", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    labels = [
        "seed",
        "branch-code",
        "branch-math",
        "branch-prose",
        "tune",
        "dense-continued",
        *DEMO_METHODS,
        *CONTROLS,
    ]
    assert list(ev["models"]) == labels
    for label in labels:
        assert set(ev["models"][label]["domains"]) == {"code", "math", "prose"}
    for m in [*DEMO_METHODS, *CONTROLS]:
        for run_id in ([] if m == "btx-compute" else [f"demo-upcycle-{m}"]) + [f"demo-moe-{m}"]:
            assert json.loads((out / run_id / "run.json").read_text())["status"] == "done"
        assert (out / f"demo-moe-{m}" / "routing.jsonl").stat().st_size > 0
    # the table is printed
    assert "average" in p.stdout and "bam-ekv" in p.stdout
    # every MoE trained on the same token budget
    steps = {
        m: json.loads((out / f"demo-moe-{m}" / "run.json").read_text())["total_steps"]
        for m in [*DEMO_METHODS, *CONTROLS]
    }
    moe_steps = steps["btx"]
    assert {steps[m] for m in DEMO_METHODS + [v.name for v in ATTN_ABLATION]} == {moe_steps}
    budgets = ev["budgets"]
    assert budgets["btx"]["tokens"] * 4 == budgets["btx"]["tokens_after_seed"]  # three branches + its own run
    # dense-continued: as many tokens as btx and bam spent after the seed (three branches + one MoE run)
    branch_steps = json.loads((out / "demo-branch-code" / "run.json").read_text())["total_steps"]
    assert (
        json.loads((out / "demo-dense-continued" / "run.json").read_text())["total_steps"]
        == 3 * branch_steps + moe_steps
    )
    assert budgets["dense-continued"]["tokens"] == budgets["bam-ekv"]["tokens_after_seed"]
    # btx-compute: BTX's steps scaled by the FLOPs-per-token ratio, so its training FLOPs reach bam-ekv's
    step = {
        m: train_flops(load_config(out / f"demo-upcycle-{m}" / "checkpoint"), 8, 64)
        for m in ("btx", "bam-ekv")
    }
    ratio = step["bam-ekv"] / step["btx"]
    assert ratio > 1.2 and steps["btx-compute"] == -(-moe_steps * ratio // 1)
    flops = {
        m: json.loads((out / f"demo-moe-{m}" / "run.json").read_text())["flops"]
        for m in ("bam-ekv", "btx-compute")
    }
    assert (
        flops["bam-ekv"] <= flops["btx-compute"] < flops["bam-ekv"] + step["btx"]
    )  # spent, to within one step
    assert budgets["btx-compute"]["train_flops"] == flops["btx-compute"]
    # the attention-routing ablation: one upcycle per routing, soft being bam-ekv itself
    for v in ATTN_ABLATION:
        assert load_config(out / f"demo-upcycle-{v.name}" / "checkpoint").moe.attn_top_k == v.attn_top_k
    assert load_config(out / "demo-upcycle-bam-ekv" / "checkpoint").moe.attn_top_k == 0
    # verdicts of the papers' claims over the one seed, and study.json
    claims = {c["claim"]: c["verdict"] for c in ev["claims"]}
    assert len(claims) == 7 and "not measured" not in claims.values()
    study = json.loads((out / "study.json").read_text())
    assert study["schema"] == 1 and [s["seeds"] for s in study["settings"]] == [[0]]
    assert "holds in every seed" in p.stdout or "does not hold" in p.stdout
    # UpIT: the fine-tuning run's checkpoints are its experts, one more is merged, routers pre-optimized
    meta = json.loads((out / "demo-upcycle-upit" / "checkpoint" / "config.json").read_text())["moelab"]
    assert [p["path"].split("/")[-3] for p in meta["parents"]] == [
        "demo-seed",
        "demo-tune",
        "demo-tune",
        "demo-tune",
    ]
    assert len(meta["genealogy"]) == 1 and meta["router_preopt"]["trained"]


def test_quick_study_two_seeds(tmp_path):
    """`moelab demo --seeds`: a pipeline per seed (parallel block), the sequential block beside it, study.json."""
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "moelab",
            "demo",
            "--quick",
            "--seeds",
            "0,1",
            "--methods",
            "btx,bam-ekv",
            "--out",
            str(out),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    study = json.loads((out / "study.json").read_text())
    par, seq = study["settings"]
    assert (par["block"], par["seeds"], par["runs"]) == ("parallel", [0, 1], ["seed-0", "seed-1"])
    assert (seq["block"], seq["seeds"], seq["runs"]) == ("sequential", [0], ["sequential-seed-0"])
    for s in study["settings"]:
        for run in s["runs"]:
            ck = json.loads((out / run / "demo-eval" / "eval.json").read_text())["models"]["seed"][
                "checkpoint"
            ]
            assert load_config(Path(ck)).parallel_block == (s["block"] == "parallel")
    # the two seeds differ, and the mean and spread are theirs
    avg = par["models"]["bam-ekv"]["ppl"]["average"]
    a, b = avg["values"]
    assert a != b and abs(avg["mean"] - (a + b) / 2) < 1e-5 and avg["std"] > 0
    assert set(par["models"]) == {
        "seed",
        "branch-code",
        "branch-math",
        "branch-prose",
        "dense-continued",
        "btx",
        "bam-ekv",
        "bam-ekv-attn-top2",
        "bam-ekv-attn-top1",
        "btx-compute",
    }
    assert set(seq["models"]) == {"seed", "branch-code", "branch-math", "branch-prose", "btx", "bam-ekv"}
    verdicts = {c["claim"]: c["verdict"] for c in par["claims"]}
    assert (
        "BAM below BTX at equal compute" in verdicts
        and "UpIT below its fine-tuned dense model" not in verdicts
    )
    assert all(
        v in ("holds in every seed", "holds on the mean only", "does not hold") for v in verdicts.values()
    )
    assert "mean ± std over seeds" in p.stdout and "sequential block, seed 0" in p.stdout


def test_seeds_option_errors_are_one_line(tmp_path, capsys):
    from moelab.cli import main

    for args, msg in (
        (["--seeds", "a,b"], "--seeds: expected comma-separated integers, got 'a,b'"),
        (["--seeds", "0,0"], "--seeds: expected distinct comma-separated integers, got '0,0'"),
        (["--seeds", "0", "--parallel-block"], "--seeds runs the parallel block at every seed"),
    ):
        assert main(["demo", "--out", str(tmp_path / "runs"), *args]) == 1
        assert capsys.readouterr().err.startswith(f"moelab: error: {msg}")
    assert not (tmp_path / "runs").exists()  # nothing ran
