"""`moelab train` under FSDP2 (torchrun) against the same run in one process: tokens/s, per-rank peak
memory and the final loss, side by side.

    .venv/bin/python bench/fsdp_train.py                # CUDA: NCCL, bf16 compute, fp32 master weights
    .venv/bin/python bench/fsdp_train.py --tiny         # CPU: gloo, 2 ranks, fp32, a toy model (not a measurement)

Both sides are the engine's own training (train/trainer.py: the same config, seed and data); the FSDP
side shards parameters, gradients and optimizer state over the ranks, checkpoints in DCP format and
starts from the meta device. With one GPU the FSDP side has one rank, so the ratio is FSDP's own
cost (all-gathers, resharding, the mixed-precision casts); with several, each rank's memory shows
what sharding saves. Peak memory: torch.cuda.max_memory_allocated on CUDA, the process's peak RSS
(VmHWM, which includes Python and torch themselves) on the CPU. The training FLOPs per token come
from run.json (models/flops.py), so MFU is printed where a GPU's peak is known (bench/gpu_table.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))

from moelab.train import jsoncfg
from moelab.train.config import TrainConfig
from moelab.train.trainer import train

# name: (hidden, layers, heads, kv heads, ffn, experts, top-k, vocab, seq, batch, steps)
SIZES = {
    "tiny": (64, 2, 4, 2, 128, 4, 2, 256, 32, 4, 4),
    # ~1.2B parameters (8 experts of a 1024-wide, 12-layer model): AdamW state fits one GPU unsharded,
    # so the one-process peer runs too. Vocabulary 256: a model trained from scratch reads bytes
    # (data/tokenizer.py refuses any other size without a tokenizer).
    "gpu": (1024, 12, 16, 8, 4096, 8, 2, 256, 2048, 8, 12),
}


LABELS = {"fsdp": "FSDP2", "fsdp+ep": "FSDP2 + expert parallel"}


def config(size: str, run_id: str, device: str, parallel: str | None) -> dict:
    """The run's train config; `parallel` None: one process."""
    d, layers, heads, kv, ffn, experts, k, vocab, seq, batch, steps = SIZES[size]
    return {
        "run_id": run_id,
        "out": "runs",
        "steps": steps,
        "batch_size": batch,
        "grad_accum": 1,
        "warmup_steps": 1,
        "log_every": 1,
        "eval_every": 10_000,
        "eval_batches": 1,
        "ckpt_every": steps,
        "device": device,
        "threads": 1 if device == "cpu" else 0,
        "parallel": parallel or "ddp",
        "checkpoint_format": "dcp" if parallel else "safetensors",
        "model": {
            "vocab_size": vocab,
            "hidden_size": d,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "max_position_embeddings": seq,
            "eos_token_id": 0,
            "moe": {
                "num_experts": experts,
                "top_k": k,
                "moe_layers": list(range(layers)),
            },
        },
        # Byte-level synthetic text: enough characters for every step's batch without repeats.
        "data": {
            "seq_len": seq,
            "synthetic_train_chars": 2 * steps * batch * (seq + 1),
            "synthetic_eval_chars": 4 * (seq + 1),
        },
    }


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(cfg_file: Path, out: Path) -> None:
    """One process of a side (under torchrun: one rank): the engine's training, then its peak memory."""
    cfg = jsoncfg.load_file(TrainConfig, cfg_file)
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        if cfg.device == "cuda"
        else "cpu"
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(cfg, quiet=True)
    Path(f"{out}.rank{rank}").write_text(
        json.dumps({"peak_bytes": _peak_bytes(device)})
    )


def _side(name: str, cwd: Path, cfg: dict, ranks: int) -> dict:
    cfg_file = cwd / f"{cfg['run_id']}.json"
    cfg_file.write_text(json.dumps(cfg))
    out = cwd / f"{cfg['run_id']}.peak"
    cmd = [sys.executable, __file__, "--worker", str(cfg_file), str(out)]
    if ranks:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--standalone", "--nproc-per-node", str(ranks), *cmd[1:]]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    if cfg["device"] == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"fsdp_train.py: the {name} run failed:\n{proc.stderr[-3000:]}")
    run = cwd / "runs" / cfg["run_id"]
    rows = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    train_rows = [r for r in rows if "tokens_per_s" in r]
    info = json.loads((run / "run.json").read_text())
    peaks = [
        json.loads(Path(f"{out}.rank{r}").read_text())["peak_bytes"]
        for r in range(max(ranks, 1))
    ]
    return {
        "side": name,
        "ranks": max(ranks, 1),
        # the first step pays start-up (and CUDA's lazy init): the median of the rest
        "tokens_per_s": statistics.median(
            r["tokens_per_s"] for r in train_rows[1:] or train_rows
        ),
        "flops_per_token": info.get("flops_per_token"),
        "peak_bytes_per_rank": max(peaks),
        "final_loss": train_rows[-1]["loss"],
    }


def planned_peak(cfg: dict, ranks: int, parallel: str, device: str) -> float:
    """`moelab plan`'s per-rank peak for the run's own train config (analysis/memory_plan.py)."""
    from moelab.analysis.memory_plan import Setup, plan
    from moelab.analysis.plan_source import from_config_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.json"
        path.write_text(json.dumps(cfg))
        src = from_config_file(path, ranks)
    # the plan's bf16 default is CUDA's; the CPU trains in fp32 (mixed_precision auto)
    defaults = {**src.defaults, "dtype": "fp32" if device == "cpu" else "bf16"}
    setup = Setup(gpus=ranks, gpu_mem_gib=1024, parallel=parallel, **defaults)  # type: ignore[arg-type]
    return plan(src.model, setup).peak


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="CPU, gloo, 2 ranks, a toy model: the script end to end",
    )
    ap.add_argument(
        "--ranks",
        type=int,
        default=0,
        help="FSDP ranks (default: every GPU; --tiny: 2)",
    )
    ap.add_argument(
        "--parallel",
        choices=["fsdp", "fsdp+ep"],
        default="fsdp",
        help="fsdp+ep also places the experts on the ranks (expert parallelism)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return []
    if not args.tiny and not torch.cuda.is_available():
        sys.exit(
            "fsdp_train.py: no CUDA device (torch.cuda.is_available() is False); --tiny runs on CPU"
        )
    device = "cpu" if args.tiny else "cuda"
    size = "tiny" if args.tiny else "gpu"
    ranks = args.ranks or (2 if args.tiny else torch.cuda.device_count())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            _side("one process", Path(tmp), config(size, "single", device, None), 0),
            _side(
                f"{LABELS[args.parallel]}, {ranks} rank(s)",
                Path(tmp),
                config(size, "fsdp", device, args.parallel),
                ranks,
            ),
        ]
    one, sharded = rows
    for r, parallel, n in ((one, "fsdp", 1), (sharded, args.parallel, ranks)):
        r["planned_peak_bytes"] = planned_peak(
            config(size, "plan", device, parallel), n, parallel, device
        )
    print(
        f"moelab train, {size} MoE, {device}"
        + ("; CPU smoke run, not a measurement" if args.tiny else "")
    )
    print(
        "| side | ranks | tokens/s (all ranks) | peak memory per rank (MiB) | moelab plan's peak (MiB) | final loss |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['side']} | {r['ranks']} | {r['tokens_per_s']:.0f} | {r['peak_bytes_per_rank'] / 2**20:.0f} "
            f"| {r['planned_peak_bytes'] / 2**20:.0f} | {r['final_loss']:.4f} |"
        )
    if device == "cpu":
        print(
            "(CPU: the measured peak is the process's RSS, Python and torch included; the plan counts tensors)"
        )
    print(
        f"{args.parallel} / one process: tokens/s ×{sharded['tokens_per_s'] / one['tokens_per_s']:.2f}, peak memory "
        f"per rank ×{sharded['peak_bytes_per_rank'] / one['peak_bytes_per_rank']:.2f}, final loss differs by "
        f"{abs(sharded['final_loss'] - one['final_loss']):.2e}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
