"""The GPU figures in one run and one table, each figure beside its peer from the same run.

Runs bench/moe_layer.py, bench/bam_attention.py, bench/train_step.py and bench/fsdp_train.py
(their own timing and checks, through their --json output), measures the GPU's bf16 dense peak with a large
torch.matmul, and times the inspector's ONNX model on onnxruntime's CUDA provider when
onnxruntime-gpu is installed. Then prints one table.

    bench/gpu.sh            # one CUDA GPU, bf16, the real shapes: a few minutes
    bench/gpu.sh --tiny     # CPU, fp32, tiny shapes, seconds: checks the script end to end only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "engine"))

import bam_attention
import fsdp_train
import moe_layer
import train_step

# The ONNX row: the demo-size MoE model (train_step.demo_config) over this many tokens.
ONNX_TOKENS = 512


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def release(device: str) -> None:
    """The previous benchmark's memory back to the device before the next one allocates."""
    if device == "cuda":
        torch.cuda.empty_cache()


def median_s(fn, reps: int, device: str) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """TFLOP/s of one square n×n matmul: the dense peak this device reaches in practice."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_s(lambda: a @ b, reps, device) / 1e12


def spec_peak(device: str) -> tuple[str, float | None]:
    if device != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name()
    return name, next(
        (v for key, v in moe_layer.BF16_PEAK_TFLOPS.items() if key in name), None
    )


def onnx_row(device: str, tiny: bool) -> list[str]:
    """The inspector's ONNX graph on onnxruntime's CUDA provider against PyTorch eager on the same GPU."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [
            "inspector ONNX model (CUDA)",
            "skipped",
            f"onnxruntime not importable: {exc}",
            "",
            "",
        ]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [
            "inspector ONNX model (CUDA)",
            "skipped",
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (onnxruntime-gpu not installed)",
            "",
            "",
        ]
    if device != "cuda":
        return [
            "inspector ONNX model (CUDA)",
            "skipped",
            "no CUDA device for PyTorch's side",
            "",
            "",
        ]
    from moelab.export.graph import discover_routers
    from moelab.export.onnx_export import INPUT, export_onnx
    from moelab.models.model import MoELabForCausalLM

    torch.manual_seed(0)
    model = MoELabForCausalLM(train_step.demo_config("moe")).eval()
    routers = discover_routers(model)
    tokens = 16 if tiny else ONNX_TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, routers, path)
        sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        ids = torch.randint(0, model.config.vocab_size, (1, tokens))
        feed = {INPUT: ids.numpy()}
        ort_s = median_s(
            lambda: sess.run(None, feed), 10, "cpu"
        )  # run() returns host arrays: synchronous
    model = model.cuda()
    ids = ids.cuda()
    with torch.no_grad():
        torch_s = median_s(lambda: model(ids), 10, "cuda")
    return [
        f"inspector ONNX model, {tokens} tokens (ms)",
        f"{ort_s * 1e3:.2f}",
        "PyTorch eager, same GPU",
        f"{torch_s * 1e3:.2f}",
        f"×{torch_s / ort_s:.2f}",
    ]


def fsdp_rows(sides: list[dict], of_peak) -> list[list[str]]:
    """`moelab train` under FSDP2 (torchrun) beside the same run in one process (bench/fsdp_train.py)."""
    one, sharded = sides
    label = f"training under FSDP2, {sharded['ranks']} rank(s)"
    tflops = (
        sharded["tokens_per_s"]
        * (sharded["flops_per_token"] or 0)
        / 1e12
        / sharded["ranks"]
    )
    return [
        [
            f"{label}: tokens/s per rank",
            f"{sharded['tokens_per_s'] / sharded['ranks']:.0f} ({of_peak(tflops)})",
            "one process",
            f"{one['tokens_per_s']:.0f}",
            f"×{sharded['tokens_per_s'] / sharded['ranks'] / one['tokens_per_s']:.2f}",
        ],
        [
            f"{label}: peak memory per rank (GiB)",
            f"{sharded['peak_bytes_per_rank'] / 2**30:.2f}",
            "one process",
            f"{one['peak_bytes_per_rank'] / 2**30:.2f}",
            f"×{sharded['peak_bytes_per_rank'] / one['peak_bytes_per_rank']:.2f}",
        ],
        [
            f"{label}: peak memory per rank vs moelab plan (GiB)",
            f"{sharded['peak_bytes_per_rank'] / 2**30:.2f}",
            "moelab plan's peak for the same config",
            f"{sharded['planned_peak_bytes'] / 2**30:.2f}",
            f"×{sharded['peak_bytes_per_rank'] / sharded['planned_peak_bytes']:.2f}",
        ],
    ]


def run_all(tiny: bool, out: Path) -> tuple[list[list[str]], str]:
    device = "cpu" if tiny else "cuda"
    # No bf16 grouped_mm on CPU: the tiny run is fp32 throughout.
    dtype = "fp32" if tiny else "bf16"
    reps = "1" if tiny else "5"
    common = ["--device", device, "--dtype", dtype, "--json"]
    moe_layer.main(
        [
            "--shapes",
            "tiny" if tiny else "cuda",
            "--reps",
            reps,
            *common,
            str(out / "moe.json"),
        ]
    )
    release(device)
    bam_attention.main(
        [
            "--shapes",
            "tiny" if tiny else "gpu",
            "--reps",
            reps,
            *common,
            str(out / "bam.json"),
        ]
    )
    release(device)
    train_step.main(
        [
            "--size",
            "tiny" if tiny else "gpu",
            "--steps",
            reps,
            *common,
            str(out / "train.json"),
        ]
    )
    release(device)
    fsdp_train.main([*(["--tiny"] if tiny else []), "--json", str(out / "fsdp.json")])
    release(device)
    torch_dtype = train_step.DTYPES[dtype]
    peak = matmul_peak(device, torch_dtype, 256 if tiny else 8192, 3 if tiny else 20)
    name, spec = spec_peak(device)

    def of_peak(tf: float) -> str:
        s = f"{tf / peak:.0%} of measured peak"
        return s + (f", {tf / spec:.0%} of spec {spec:.0f}" if spec else "")

    rows = [
        [
            "dense matmul peak (TFLOP/s)",
            f"{peak:.1f}",
            f"spec for {name}",
            f"{spec:.0f}" if spec else "unknown",
            f"{peak / spec:.0%}" if spec else "",
        ]
    ]
    moe = json.loads((out / "moe.json").read_text())[0]
    for mode in ("forward", "forward+backward"):
        r = moe["modes"][mode]
        peer = max(
            (v["tflops"], k) for k, v in r.items() if k.startswith("transformers:")
        )
        ours = r["moelab:auto"]
        rows.append(
            [
                f"MoE layer {mode}, moelab auto (TFLOP/s)",
                f"{ours['tflops']:.3g} ({of_peak(ours['tflops'])})",
                f"transformers best: {peer[1].split(':')[1]}",
                f"{peer[0]:.3g}",
                f"×{ours['ratio_to_best_transformers']:.2f}",
            ]
        )
    for bam in json.loads((out / "bam.json").read_text()):
        fb = bam["forward+backward_ms"]
        for kind, stacked in (
            ("ekv", "ekv: moelab stacked"),
            ("skv", "skv: moelab stacked (GQA)"),
        ):
            sep = fb[f"{kind}: N separate calls"]
            rows.append(
                [
                    f"BAM attention {kind} fwd+bwd, stacked (ms)",
                    f"{fb[stacked]:.2f}",
                    f"{bam['experts']} separate calls",
                    f"{sep:.2f}",
                    f"×{sep / fb[stacked]:.2f}",
                ]
            )
    train = json.loads((out / "train.json").read_text())
    ours = train[0]
    mfu = f"{ours['tflops'] / peak:.1%} of measured peak ({ours['tflops']:.3g} TFLOP/s)"
    if len(train) > 1:
        best = max(train[1:], key=lambda r: r["tflops"])
        rows.append(
            [
                "training step MFU, moelab",
                mfu,
                best["model"],
                f"{best['tflops'] / peak:.1%} ({best['tflops']:.3g} TFLOP/s)",
                f"×{ours['tflops'] / best['tflops']:.2f}",
            ]
        )
    else:
        rows.append(
            [
                "training step MFU, moelab",
                mfu,
                "transformers Mixtral",
                "every implementation failed",
                "",
            ]
        )
    rows += fsdp_rows(json.loads((out / "fsdp.json").read_text()), of_peak)
    rows.append(onnx_row(device, tiny))
    head = f"{name}, torch {torch.__version__}, {dtype}" + (
        "; CPU smoke run, not a measurement" if tiny else ""
    )
    return rows, head


def table(rows: list[list[str]], head: str) -> str:
    cols = ["figure", "moelab", "peer", "peer value", "ratio"]
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    line = (
        "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"
    )
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| "
        + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
        + " |"
        for r in rows
    ]
    return "\n".join([f"GPU figures: {head}", "", line, sep, *body])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="CPU, fp32, tiny shapes: the script end to end, no figures",
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the table's rows here"
    )
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        sys.exit(
            "gpu_table.py: no CUDA device (torch.cuda.is_available() is False); --tiny runs on CPU"
        )
    with tempfile.TemporaryDirectory() as tmp:
        rows, head = run_all(args.tiny, Path(tmp))
    print("\n" + table(rows, head))
    if args.json:
        args.json.write_text(json.dumps({"head": head, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
