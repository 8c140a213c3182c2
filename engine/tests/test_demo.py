"""`moelab demo --quick` end to end (about 20 s alone on 2 cores; allow for shared machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from moelab.train.demo import DEMO_METHODS


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "moelab", "demo", "--quick", "--out", str(out), "--quiet"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    labels = ["seed", "branch-code", "branch-math", "branch-prose", "tune", *DEMO_METHODS]
    assert list(ev["models"]) == labels
    for label in labels:
        assert set(ev["models"][label]["domains"]) == {"code", "math", "prose"}
    for m in DEMO_METHODS:
        for run_id in (f"demo-upcycle-{m}", f"demo-moe-{m}"):
            assert json.loads((out / run_id / "run.json").read_text())["status"] == "done"
        assert (out / f"demo-moe-{m}" / "routing.jsonl").stat().st_size > 0
    # the table is printed
    assert "average" in p.stdout and "bam-ekv" in p.stdout
    # every MoE trained on the same token budget
    tokens = {m: json.loads((out / f"demo-moe-{m}" / "run.json").read_text())["total_steps"] for m in DEMO_METHODS}
    assert len(set(tokens.values())) == 1
    # UpIT: the fine-tuning run's checkpoints are its experts, one more is merged, routers pre-optimized
    meta = json.loads((out / "demo-upcycle-upit" / "checkpoint" / "config.json").read_text())["moelab"]
    assert [p["path"].split("/")[-3] for p in meta["parents"]] == ["demo-seed", "demo-tune", "demo-tune", "demo-tune"]
    assert len(meta["genealogy"]) == 1 and meta["router_preopt"]["trained"]
