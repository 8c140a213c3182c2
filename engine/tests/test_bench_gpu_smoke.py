"""bench/gpu.sh end to end on CPU with tiny shapes: every benchmark runs, agrees with its peer and
lands in the one table (the figures themselves are only meaningful on a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GPU_SH = ROOT / "bench" / "gpu.sh"
ROWS = [
    "dense matmul peak",
    "MoE layer forward, moelab auto",
    "MoE layer forward+backward, moelab auto",
    "BAM attention ekv fwd+bwd, stacked",
    "BAM attention skv fwd+bwd, stacked",
    "training step MFU, moelab",
    "training under FSDP2, 2 rank(s): tokens/s per rank",
    "training under FSDP2, 2 rank(s): peak memory per rank (GiB)",
    "training under FSDP2, 2 rank(s): peak memory per rank vs moelab plan",
    "inspector ONNX model",
]


def run_gpu_sh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(GPU_SH), *args], capture_output=True, text=True, env=env, timeout=300)


def test_tiny_run_prints_every_row_with_its_peer(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    proc = run_gpu_sh("--tiny", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CPU smoke run, not a measurement" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    labels = [r[0] for r in rows]
    for want in ROWS:
        assert sum(label.startswith(want) for label in labels) == 1, (want, labels)
        assert want in proc.stdout
    for label, ours, peer, peer_value, ratio in rows:
        if label.startswith(("MoE layer", "BAM attention", "training step", "training under FSDP2")):
            assert ours and peer and peer_value, label
            assert float(ratio.removeprefix("×")) > 0, (label, ratio)
    onnx = next(r for r in rows if r[0].startswith("inspector ONNX model"))
    if onnx[1] == "skipped":
        assert onnx[2], "a skipped row says why"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real table instead")
def test_without_a_gpu_the_full_run_says_so_in_one_line() -> None:
    proc = run_gpu_sh()
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "gpu_table.py: no CUDA device (torch.cuda.is_available() is False); --tiny runs on CPU"
    ]
