"""Peak memory of `moelab analyze` on a synthetic MoE, against the checkpoint and one layer's experts.

    OMP_NUM_THREADS=1 .venv/bin/python bench/analyze_memory.py [--layers 8] [--experts 8] [--d 1024]
        [--ffn 3584] [--dtype bf16] [--steps 1] [--peer] [--keep DIR]

Writes a sharded Mixtral-layout checkpoint (one shard per layer, so writing it needs one layer of
memory), then runs `python -m moelab analyze` in a child process and reads the child's peak RSS
(its VmHWM). A child that only imports torch and moelab gives the fixed overhead.
With --peer it also runs the obvious alternative, each layer's experts loaded whole through
safe_open and compared with torch, to show what "one layer in memory" costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from moelab.io.checkpoint import write_config
from moelab.models.config import ModelConfig, MoEConfig
from safetensors.torch import save_file

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
MiB = 1024**2

PEER = r"""
import json, sys, torch
from safetensors import safe_open
ckpt, layers, experts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
index = json.load(open(f"{ckpt}/model.safetensors.index.json"))["weight_map"]
out = []
for layer in range(layers):
    p = f"model.layers.{layer}.block_sparse_moe"
    with safe_open(f"{ckpt}/{index[p + '.gate.weight']}", "pt") as f:
        for m in ("w1", "w2", "w3"):
            w = torch.stack([f.get_tensor(f"{p}.experts.{e}.{m}.weight").double().flatten() for e in range(experts)])
            w = torch.nn.functional.normalize(w, dim=1)
            out.append((w @ w.T).tolist())
            del w
print(len(out))
"""


def build(
    out: Path,
    layers: int,
    experts: int,
    d: int,
    ffn: int,
    dtype: torch.dtype,
    seed: int,
) -> int:
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for layer in range(layers):
        p = f"model.layers.{layer}.block_sparse_moe"
        t = {f"{p}.gate.weight": torch.randn(experts, d, generator=g).to(dtype)}
        for e in range(experts):
            t[f"{p}.experts.{e}.w1.weight"] = torch.randn(ffn, d, generator=g).to(dtype)
            t[f"{p}.experts.{e}.w3.weight"] = torch.randn(ffn, d, generator=g).to(dtype)
            t[f"{p}.experts.{e}.w2.weight"] = torch.randn(d, ffn, generator=g).to(dtype)
        name = f"model-{layer + 1:05d}-of-{layers:05d}.safetensors"
        save_file(t, str(out / name))
        weight_map.update(dict.fromkeys(t, name))
        total += sum(v.numel() * v.element_size() for v in t.values())
        del t
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    cfg = ModelConfig(
        vocab_size=256,
        hidden_size=d,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        model_type="mixtral",
        moe=MoEConfig(num_experts=experts, moe_layers=list(range(layers))),
    )
    write_config(out, cfg)
    return total


# The child's own high-water mark: getrusage(RUSAGE_CHILDREN) would also count the pages the
# child shared with this (larger) process between fork and exec, since exec keeps that maximum.
PEAK = r"""
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write(f"\nVMHWM_KB {line.split()[1]}\n")
atexit.register(_peak)
"""


def child_peak(code: str, args: list[str]) -> tuple[int, float]:
    """Peak RSS (bytes, the child's VmHWM) and wall time of `python -c PEAK+code args`."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", PEAK + code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"child failed:\n{r.stderr}")
    kb = [
        int(line.split()[1])
        for line in r.stderr.splitlines()
        if line.startswith("VMHWM_KB ")
    ]
    if not kb:
        sys.exit("no VmHWM from the child (this bench needs Linux /proc)")
    return kb[-1] * 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=3584)
    ap.add_argument("--dtype", choices=DTYPES, default="bf16")
    ap.add_argument(
        "--steps",
        type=int,
        default=1,
        help="checkpoints in the sequence (drift), each a full copy",
    )
    ap.add_argument("--chunk-mb", type=float, default=64)
    ap.add_argument(
        "--peer",
        action="store_true",
        help="also run the load-one-layer-whole alternative",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        help="build the checkpoints here and keep them (reused if there)",
    )
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    os.environ.update(env)
    root = a.keep or Path(tempfile.mkdtemp(prefix="moelab-analyze-bench-"))
    try:
        t0 = time.perf_counter()
        ckpts = [root / f"step-{s:06d}" for s in range(a.steps)]
        size, built = 0, False
        for s, c in enumerate(ckpts):
            if (
                c / "config.json"
            ).exists():  # --keep DIR from an earlier run with the same arguments
                size = json.loads((c / "model.safetensors.index.json").read_text())[
                    "metadata"
                ]["total_size"]
                continue
            size, built = (
                build(c, a.layers, a.experts, a.d, a.ffn, DTYPES[a.dtype], seed=s),
                True,
            )
        print(
            f"{'built' if built else 'reused'} {a.steps} x {size / MiB:.0f} MiB ({a.layers} layers x {a.experts} experts, d={a.d}, "
            f"ffn={a.ffn}, {a.dtype}) in {time.perf_counter() - t0:.0f} s"
        )
        layer_bytes = size // a.layers
        base, _ = child_peak("import torch, moelab.analysis, moelab.cli", [])
        args = [
            "analyze",
            "--quiet",
            "--chunk-mb",
            str(a.chunk_mb),
            "--out",
            str(root / "analysis.json"),
        ]
        for c in ckpts:
            args += ["--ckpt", str(c)]
        peak, wall = child_peak(
            "import sys; from moelab.cli import main; sys.exit(main(sys.argv[1:]))",
            args,
        )
        read = size * a.steps
        print(f"baseline (python + torch + moelab imported): {base / MiB:7.0f} MiB")
        print(
            f"moelab analyze peak RSS:                    {peak / MiB:7.0f} MiB  ({wall:.1f} s, "
            f"{read / MiB / wall:.0f} MiB/s read)"
        )
        print(
            f"  above baseline:                           {(peak - base) / MiB:7.0f} MiB"
        )
        print(
            f"  / checkpoint size ({size / MiB:.0f} MiB):            {peak / size:7.3f}  (above baseline: {(peak - base) / size:.3f})"
        )
        print(
            f"  / one layer's experts ({layer_bytes / MiB:.0f} MiB):       {peak / layer_bytes:7.3f}  "
            f"(above baseline: {(peak - base) / layer_bytes:.3f})"
        )
        if a.peer:
            ppeak, pwall = child_peak(
                PEER, [str(ckpts[-1]), str(a.layers), str(a.experts)]
            )
            print(
                f"peer (safe_open, one layer's experts whole, float64 cosine; similarity only, last ckpt): "
                f"{ppeak / MiB:.0f} MiB peak, {pwall:.1f} s"
            )
            print(
                f"  ours / peer, memory above baseline: {(peak - base) / max(1, ppeak - base):.2f}x"
            )
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
