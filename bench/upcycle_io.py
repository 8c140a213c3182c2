"""Upcycling I/O benchmark: BTX over four dense experts of a few hundred MB each, against a plain
file copy of the same inputs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/upcycle_io.py [--work DIR] [--dtype bf16|fp32]

Prints the surgery's wall time as a ratio to shutil.copyfile of the inputs (target <= 2x) and
its peak RSS (the surgery runs as `moelab upcycle` in a child process, so the figure is its own).
The generated experts are kept in --work and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

CFG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def dense_shapes() -> dict[str, tuple[int, ...]]:
    d, f, v = CFG["hidden_size"], CFG["intermediate_size"], CFG["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, d)}
    for i in range(CFG["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= {f"{p}.self_attn.{n}_proj.weight": (d, d) for n in "qkvo"}
        shapes |= {
            f"{p}.mlp.gate_proj.weight": (f, d),
            f"{p}.mlp.up_proj.weight": (f, d),
            f"{p}.mlp.down_proj.weight": (d, f),
        }
        shapes |= {
            f"{p}.input_layernorm.weight": (d,),
            f"{p}.post_attention_layernorm.weight": (d,),
        }
    shapes |= {"model.norm.weight": (d,), "lm_head.weight": (v, d)}
    return shapes


def generate(work: Path, dtype: torch.dtype, n: int = 4) -> list[Path]:
    dirs = [work / f"expert{i}" for i in range(n)]
    if all((d / "model.safetensors").exists() for d in dirs):
        return dirs
    g = torch.Generator().manual_seed(0)
    for i, d in enumerate(dirs):
        d.mkdir(parents=True, exist_ok=True)
        # One tensor at a time through save_file would need the whole state; build it per expert.
        state = {
            k: (torch.randn(s, generator=g) * 0.02).to(dtype)
            for k, s in dense_shapes().items()
        }
        save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
        del state
        (d / "config.json").write_text(
            json.dumps({**CFG, "torch_dtype": str(dtype).removeprefix("torch.")})
        )
        print(
            f"generated {d} ({(d / 'model.safetensors').stat().st_size / 1e6:.0f} MB)",
            file=sys.stderr,
        )
    return dirs


def timed_copy(inputs: list[Path], dst: Path, fsync: bool) -> float:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    t0 = time.perf_counter()
    for i, p in enumerate(inputs):
        shutil.copyfile(p, dst / f"{i}.safetensors")
        if fsync:
            with (dst / f"{i}.safetensors").open("rb+") as f:
                os.fsync(f.fileno())
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dst)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/moelab-bench-upcycle"))
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--max-shard-size", default="300MB")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    experts = generate(args.work / args.dtype, dtype)
    inputs = [e / "model.safetensors" for e in experts]
    in_bytes = sum(p.stat().st_size for p in inputs)
    for p in inputs:  # the same warm page cache for both contenders
        with p.open("rb") as f:
            while f.read(1 << 24):
                pass

    copy_s = timed_copy(inputs, args.work / "copy", fsync=False)
    copy_sync_s = timed_copy(inputs, args.work / "copy", fsync=True)

    # The surgery runs in a child (so its peak RSS is its own) and times upcycle() itself: on a
    # shared machine, interpreter start and `import torch` alone take seconds of noise.
    out = args.work / "btx"
    child = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from moelab.commands.upcycle import parse_size\n"
        "from moelab.methods.api import UpcycleOptions, upcycle\n"
        "import moelab.methods.common  # imports (torch) before the clock starts\n"
        "a = json.loads(sys.argv[1])\n"
        "t0 = time.perf_counter()\n"
        "upcycle(UpcycleOptions(method='btx', seed=Path(a['seed']), experts=[Path(e) for e in a['experts']],\n"
        "        out=Path(a['out']), overwrite=True, max_shard_bytes=parse_size(a['shard'])))\n"
        "print(time.perf_counter() - t0)\n"
    )
    payload = json.dumps(
        {
            "seed": str(experts[0]),
            "experts": [str(e) for e in experts],
            "out": str(out),
            "shard": args.max_shard_size,
        }
    )
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", child, payload],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    total_s = time.perf_counter() - t0
    btx_s = float(res.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    shards = sorted(out.glob("*.safetensors"))
    out_bytes = sum(p.stat().st_size for p in shards)

    print(
        f"inputs      4 x {in_bytes / 4 / 1e6:.0f} MB ({args.dtype}), output {out_bytes / 1e6:.0f} MB in {len(shards)} shards "
        f"(--max-shard-size {args.max_shard_size})"
    )
    print(
        f"copy        {copy_s:.2f} s  ({in_bytes / copy_s / 1e9:.2f} GB/s); with fsync {copy_sync_s:.2f} s"
    )
    print(
        f"btx         {btx_s:.2f} s  upcycle(): validation, surgery, sha256 of inputs, fsync "
        f"({total_s:.2f} s with interpreter start and imports)"
    )
    print(
        f"ratio       {btx_s / copy_s:.2f}x copy time, {btx_s / copy_sync_s:.2f}x copy+fsync (target <= 2x)"
    )
    print(
        f"peak RSS    {peak / 1e6:.0f} MB for the whole child process (inputs {in_bytes / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
