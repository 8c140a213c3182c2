"""One MoE FFN layer: moelab's SparseMoE against transformers' MixtralSparseMoeBlock, same weights.

Every `experts_implementation` the installed transformers registers is run (eager, batched_mm,
grouped_mm, and on CUDA whatever else it offers); the outputs and input gradients are checked
against moelab's reference (loop) path first, then forward and forward+backward tokens/s are
printed, each as a ratio to transformers' fastest implementation for that mode.

    .venv/bin/python bench/moe_layer.py                  # CPU shapes, ~1 minute
    .venv/bin/python bench/moe_layer.py --device cuda    # 8 experts top-2, d=4096, ffn=14336, 16k tokens, bf16

Timings interleave the implementations round by round and report medians, so a neighbour's
load on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.ffn import IMPLEMENTATIONS, SparseMoE

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) for the fraction-of-peak column.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "B200": 2250.0,
}

SHAPES = {
    # (experts, top_k, hidden, ffn, tokens): Mixtral's ffn/hidden ratio of 3.5 at a CPU-sized width.
    "cpu": (8, 2, 512, 1408, 2048),
    # Few tokens (decode / small batch), where batched_mm is meant to pay off.
    "cpu-small": (8, 2, 512, 1408, 16),
    "cuda": (8, 2, 4096, 14336, 16384),
    # bench/gpu.sh --tiny: the whole path end to end in a second, not a measurement.
    "tiny": (8, 2, 64, 128, 64),
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def build(e: int, k: int, d: int, f: int, device: str, dtype: torch.dtype):
    cfg = ModelConfig(
        hidden_size=d,
        intermediate_size=f,
        num_attention_heads=8,
        num_key_value_heads=8,
        model_type="moelab",
        # Mixtral's router gradient exactly (moelab's default "st" differs by design, which the
        # input-gradient check below sees once the router's share of it is not tiny)
        moe=MoEConfig(num_experts=e, top_k=k, moe_layers=[0], router_weights="renorm"),
    )
    torch.manual_seed(0)
    ours = SparseMoE(cfg, 0)
    with torch.no_grad():
        ours.gate.weight.normal_(
            std=0.02 * d**-0.5 * 30
        )  # lively routing, all experts used
    return ours.to(device=device, dtype=dtype)


def transformers_implementations() -> list[str]:
    """Every `experts_implementation` the installed transformers registers, its eager loop first.
    Which of them is best is measured, not assumed: callers run each (skipping the ones this build
    or device cannot run, see `batched_mm_too_big`) and take the fastest."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    return ["eager", *sorted(ALL_EXPERTS_FUNCTIONS.keys())]


def batched_mm_too_big(
    slots: int, d: int, f: int, dtype: torch.dtype, max_gb: float
) -> str | None:
    """Why batched_mm is skipped for `slots` routed (token, expert) pairs, or None: it gathers a
    copy of the expert weights per slot."""
    gb = slots * 3 * d * f * torch.finfo(dtype).bits / 8 / 2**30
    return (
        f"gathers N·k copies of the expert weights: {gb:.1f} GB"
        if gb > max_gb
        else None
    )


def transformers_blocks(
    ours: SparseMoE, e: int, k: int, d: int, f: int, device: str, dtype: torch.dtype
):
    """{experts_implementation: MixtralSparseMoeBlock} holding moelab's weights (gate_up = [w1; w3])."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    out, skipped = {}, {}
    for impl in transformers_implementations():
        cfg = MixtralConfig(
            hidden_size=d,
            intermediate_size=f,
            num_local_experts=e,
            num_experts_per_tok=k,
            num_attention_heads=8,
            num_key_value_heads=8,
            num_hidden_layers=1,
        )
        cfg._experts_implementation = impl
        blk = MixtralSparseMoeBlock(cfg).to(device=device, dtype=dtype)
        with torch.no_grad():
            blk.gate.weight.copy_(ours.gate.weight)
            blk.experts.gate_up_proj.copy_(
                torch.cat([ours.experts.w1, ours.experts.w3], dim=1)
            )
            blk.experts.down_proj.copy_(ours.experts.w2)
        out[impl] = blk
    return out, skipped


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step(mod, x: torch.Tensor, backward: bool, ours: bool) -> None:
    if backward:
        xx = x.detach().requires_grad_()
        y = mod(xx)
        y = y[0] if ours else y
        y.float().sum().backward()
        mod.zero_grad(set_to_none=True)
    else:
        with torch.no_grad():
            mod(x)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shapes", nargs="*", default=None, help=f"of {sorted(SHAPES)}")
    ap.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="default: bf16 on cuda, fp32 on cpu",
    )
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: the machine is shared)"
    )
    ap.add_argument(
        "--max-gather-gb",
        type=float,
        default=2.0,
        help="skip batched_mm when its per-slot weight gather would exceed this",
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the results here"
    )
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("moe_layer.py: --device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype or ("bf16" if args.device == "cuda" else "fp32")]
    shapes = args.shapes or (
        ["cuda"] if args.device == "cuda" else ["cpu", "cpu-small"]
    )
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
        f"device {args.device}{' ' + torch.cuda.get_device_name() if args.device == 'cuda' else ''}, "
        f"threads {torch.get_num_threads()}, dtype {dtype}"
    )
    results = []
    for name in shapes:
        e, k, d, f, n = SHAPES[name]
        print(f"\n== {name}: {e} experts top-{k}, d={d}, ffn={f}, {n} tokens")
        ours = build(e, k, d, f, args.device, dtype)
        peers, skipped = transformers_blocks(ours, e, k, d, f, args.device, dtype)
        too_big = batched_mm_too_big(n * k, d, f, dtype, args.max_gather_gb)
        if "batched_mm" in peers and too_big:
            del peers["batched_mm"]
            skipped["batched_mm"] = too_big
        torch.manual_seed(1)
        x = torch.randn(1, n, d, device=args.device, dtype=dtype)

        # Agreement: every candidate against moelab's reference loop, outputs and input gradients.
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
        ours.experts.implementation = "loop"
        xr = x.detach().requires_grad_()
        ref = ours(xr)[0]
        ref.float().square().sum().backward()
        ref_g = xr.grad
        ours.zero_grad(set_to_none=True)
        candidates = {f"moelab:{i}": ours for i in IMPLEMENTATIONS if i != "loop"}
        candidates.update({f"transformers:{i}": b for i, b in peers.items()})
        for label, mod in list(candidates.items()):
            if label.startswith("moelab:"):
                ours.experts.implementation = label.split(":")[1]
            xx = x.detach().requires_grad_()
            try:
                y = mod(xx)
                y = y[0] if label.startswith("moelab:") else y
                y.float().square().sum().backward()
            except (
                RuntimeError,
                ValueError,
                ImportError,
                NotImplementedError,
                KeyError,
                TypeError,
            ) as exc:
                # an implementation this build or device cannot run: report it, go on
                skipped[
                    label.split(":")[1] if label.startswith("transformers:") else label
                ] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
                candidates.pop(label)
                continue
            mod.zero_grad(set_to_none=True)
            scale = ref.abs().max().item()
            dy = (y - ref).abs().max().item() / scale
            dg = (xx.grad - ref_g).abs().max().item() / ref_g.abs().max().item()
            status = "ok" if dy < tol and dg < tol else "MISMATCH"
            print(
                f"  check {label:26s} rel max|Δy| {dy:.1e}  rel max|Δdx| {dg:.1e}  {status}"
            )
            if status != "ok":
                sys.exit(f"moe_layer.py: {label} disagrees with moelab's reference")
        candidates["moelab:loop"] = ours
        for label, why in skipped.items():
            print(f"  skip  {label}: {why}")

        flops = 2 * n * k * 3 * d * f  # expert GEMMs only (router: 2·n·d·e, <0.1%)
        row = {
            "shape": name,
            "experts": e,
            "top_k": k,
            "hidden": d,
            "ffn": f,
            "tokens": n,
            "dtype": str(dtype).removeprefix("torch."),
            "modes": {},
        }
        for mode, backward in (("forward", False), ("forward+backward", True)):
            times: dict[str, list[float]] = {label: [] for label in candidates}
            for label, mod in candidates.items():  # warm-up
                if label.startswith("moelab:"):
                    ours.experts.implementation = label.split(":")[1]
                step(mod, x, backward, label.startswith("moelab:"))
            for _ in range(args.reps):
                for label, mod in candidates.items():
                    if label.startswith("moelab:"):
                        ours.experts.implementation = label.split(":")[1]
                    sync(args.device)
                    t0 = time.perf_counter()
                    step(mod, x, backward, label.startswith("moelab:"))
                    sync(args.device)
                    times[label].append(time.perf_counter() - t0)
            med = {label: statistics.median(ts) for label, ts in times.items()}
            best_peer = min(
                (v, lab) for lab, v in med.items() if lab.startswith("transformers:")
            )
            print(
                f"  {mode} (median of {args.reps}; ratio = tokens/s ÷ transformers' best, {best_peer[1]})"
            )
            mode_row = {}
            mult = 3 if backward else 1
            for label in sorted(med, key=med.get):
                tps = n / med[label]
                ratio = best_peer[0] / med[label]
                tf = mult * flops / med[label] / 1e12
                extra = f"  {tf:7.2f} TFLOP/s"
                if args.device == "cuda":
                    peak = next(
                        (
                            v
                            for key, v in BF16_PEAK_TFLOPS.items()
                            if key in torch.cuda.get_device_name()
                        ),
                        None,
                    )
                    extra += (
                        f" ({tf / peak:.0%} of bf16 peak {peak:.0f})"
                        if peak
                        else " (peak unknown)"
                    )
                print(
                    f"    {label:26s} {med[label] * 1e3:9.2f} ms  {tps:11.0f} tok/s  ×{ratio:5.2f}{extra}"
                )
                mode_row[label] = {
                    "ms": med[label] * 1e3,
                    "tokens_per_s": tps,
                    "ratio_to_best_transformers": ratio,
                    "tflops": tf,
                }
            row["modes"][mode] = mode_row
        row["skipped"] = skipped
        results.append(row)
        ours.experts.implementation = "auto"
        print(
            f"  moelab auto picks: {ours.experts.select_implementation(x.reshape(-1, d))}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
