"""Regenerates analysis.json and compare.json (real `moelab analyze` output) for the Weights tab tests.

    OMP_NUM_THREADS=1 .venv/bin/python test/webview/data/make_fixture.py /tmp/wfix/run
    .venv/bin/moelab analyze --ckpt /tmp/wfix/run --out test/webview/data/analysis.json
    .venv/bin/moelab analyze --compare /tmp/wfix/run/checkpoints/step-100 /tmp/wfix/run/checkpoints/step-300 \
        --out test/webview/data/compare.json

A tiny run with three checkpoints (FFN and attention experts, 2 layers, 4 experts); at step 300,
layer 1's FFN experts 1 and 2 are made near-copies (a collapse) and its router row 3 zero.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "engine" / "tests"))
from test_analyze import D, E, F, L, cfg, write_ckpt

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(11)
base = {}
for lay in range(L):
    a = f"model.layers.{lay}.self_attn"
    base[f"{a}.router.weight"] = torch.randn(E, D, generator=g)
    for e in range(E):
        for p in ("q", "k", "v", "o"):
            base[f"{a}.experts.{e}.{p}_proj.weight"] = torch.randn(D, D, generator=g)
    f = f"model.layers.{lay}.block_sparse_moe"
    base[f"{f}.gate.weight"] = torch.randn(E, D, generator=g)
    for e in range(E):
        for m, sh in (("w1", (F, D)), ("w3", (F, D)), ("w2", (D, F))):
            base[f"{f}.experts.{e}.{m}.weight"] = torch.randn(*sh, generator=g)
base["model.embed_tokens.weight"] = torch.randn(16, D, generator=g)
for i, step in enumerate((100, 200, 300)):
    t = {k: v + 0.05 * i * torch.randn(v.shape, generator=g) for k, v in base.items()}
    if step == 300:
        f = "model.layers.1.block_sparse_moe"
        for m in ("w1", "w2", "w3"):
            t[f"{f}.experts.2.{m}.weight"] = t[f"{f}.experts.1.{m}.weight"] * 1.001
        t[f"{f}.gate.weight"][3] = 0.0
    write_ckpt(out / "checkpoints" / f"step-{step}", t, cfg(attn=True))
