"""Training tokens/s of the demo-size model on CPU: AdamW steps, eager vs torch.compile.

The model is built here directly (byte vocab 256, d=128, 4 layers, 4 heads, ffn 344, seq 128,
batch 8): dense, a 4-expert top-2 MoE on every layer (btx/sparse shape), and BAM expert-KV and
shared-KV (attention experts, soft routing, parallel block). A step is forward, LM loss + load
balancing (0.01) + router z-loss (0.001) over every router, backward, AdamW. Eager runs once
with the experts' reference loop and once with the auto-selected fast path.

    .venv/bin/python bench/train_step.py [--steps 20] [--no-compile] [--threads 1]
    .venv/bin/python bench/train_step.py --size gpu --device cuda --dtype bf16 --json out.json

With --size, a Mixtral-shaped model (moelab's, loop-free experts) is timed instead against
transformers' MixtralForCausalLM of the same configuration (each `experts_implementation` in
--hf-impls), and each step's TFLOP/s is the engine's FLOPs count (models/flops.py) over its time:
bench/gpu_table.py turns it into MFU. The two models hold different random weights of one shape.

torch.compile on a small shared CPU can be slow or fail (no compiler, graph breaks on the
data-dependent expert grouping): failures are caught and reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from moelab.models.aux_losses import load_balancing_loss, z_loss
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.ffn import Experts
from moelab.models.flops import train_flops
from moelab.models.model import MoELabForCausalLM

BATCH, SEQ = 8, 128
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# (hidden, ffn, layers, heads, kv heads, experts, top-k, vocab, batch, seq) for the MFU comparison
SIZES = {
    "gpu": (4096, 14336, 2, 32, 8, 8, 2, 32000, 4, 2048),  # two Mixtral-8x7B layers
    "tiny": (
        32,
        64,
        2,
        4,
        2,
        4,
        2,
        256,
        2,
        16,
    ),  # bench/gpu.sh --tiny: end to end, not a measurement
}


def demo_config(variant: str) -> ModelConfig:
    base = {
        "vocab_size": 256,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": SEQ,
    }
    if variant == "dense":
        return ModelConfig(**base)
    layers = list(range(4))
    if variant == "moe":
        return ModelConfig(
            **base,
            model_type="moelab",
            moe=MoEConfig(num_experts=4, top_k=2, moe_layers=layers),
        )
    shared = variant == "bam-skv"
    return ModelConfig(
        **base,
        model_type="moelab",
        parallel_block=True,
        moe=MoEConfig(
            num_experts=4,
            top_k=2,
            moe_layers=layers,
            attn_experts=True,
            shared_kv=shared,
        ),
    )


def make_step(model: MoELabForCausalLM, opt: torch.optim.Optimizer):
    def step(ids: torch.Tensor) -> torch.Tensor:
        out = model(ids[:, :-1])
        loss = F.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        for r in out.router_logits:
            loss = loss + 0.01 * load_balancing_loss(r) + 0.001 * z_loss(r)
        loss.backward()
        return loss.detach()

    def train_step(ids: torch.Tensor) -> float:
        loss = step(ids)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step, train_step


def set_experts(model: torch.nn.Module, impl: str) -> None:
    for m in model.modules():
        if isinstance(m, Experts):
            m.implementation = impl


def measure(variant: str, mode: str, steps: int, warmup: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MoELabForCausalLM(demo_config(variant))
    set_experts(model, "loop" if mode == "eager (loop experts)" else "auto")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step, _ = make_step(model, opt)
    if mode == "compile":
        step = torch.compile(step)
    ids = torch.randint(0, 256, (BATCH, SEQ + 1))
    t0 = time.perf_counter()
    for _ in range(warmup):
        step(ids)
        opt.step()
        opt.zero_grad(set_to_none=True)
    warm_s = time.perf_counter() - t0
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(ids)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ts.append(time.perf_counter() - t0)
    return BATCH * SEQ / statistics.median(ts), warm_s


def mixtral_config(size: str) -> tuple[ModelConfig, int, int]:
    d, f, n_layers, heads, kv, e, k, vocab, batch, seq = SIZES[size]
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=f,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=seq,
        model_type="mixtral",
        moe=MoEConfig(
            num_experts=e,
            top_k=k,
            moe_layers=list(range(n_layers)),
            router_weights="renorm",
        ),
    )
    return cfg, batch, seq


def timed_steps(
    step, opt: torch.optim.Optimizer, ids: torch.Tensor, steps: int, device: str
) -> float:
    """Median seconds of one forward + backward + AdamW step, after two warm-up steps."""
    ts = []
    for i in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(ids)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def mfu_rows(
    size: str, device: str, dtype: torch.dtype, steps: int, hf_impls: list[str]
) -> list[dict]:
    """moelab's Mixtral-shaped model and transformers' MixtralForCausalLM: step ms and TFLOP/s each."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg, batch, seq = mixtral_config(size)
    flops = train_flops(cfg, batch, seq)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    rows = []

    def row(label: str, sec: float) -> None:
        rows.append(
            {
                "model": label,
                "ms": sec * 1e3,
                "tflops": flops / sec / 1e12,
                "tokens_per_s": batch * seq / sec,
            }
        )
        print(f"  {label:34s} {sec * 1e3:9.2f} ms  {flops / sec / 1e12:8.2f} TFLOP/s")

    print(
        f"== {size}: {cfg.num_hidden_layers} Mixtral layers, d={cfg.hidden_size}, batch {batch} × seq {seq}, "
        f"{str(dtype).removeprefix('torch.')}, {device}; {flops / 1e12:.3f} TFLOP per step (models/flops.py)"
    )
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    row(
        "moelab (auto experts)",
        timed_steps(make_step(model, opt)[0], opt, ids, steps, device),
    )
    del model, opt
    for impl in hf_impls:
        hf_cfg = MixtralConfig(**cfg.to_hf_dict())
        hf_cfg._experts_implementation = impl
        torch.manual_seed(0)
        hf = MixtralForCausalLM(hf_cfg).to(device=device, dtype=dtype)
        opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

        def hf_step(x: torch.Tensor, hf: MixtralForCausalLM = hf) -> torch.Tensor:
            # its own load-balancing loss (router_aux_loss_coef 0.01) as moelab's step has
            loss = hf(
                input_ids=x[:, :-1], labels=x[:, :-1], output_router_logits=True
            ).loss
            loss.backward()
            return loss.detach()

        try:
            row(
                f"transformers Mixtral ({impl})",
                timed_steps(hf_step, opt, ids, steps, device),
            )
        except (RuntimeError, ValueError, ImportError, NotImplementedError) as exc:
            print(
                f"  transformers Mixtral ({impl}) skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            )
        del hf, opt
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: the machine is shared)"
    )
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--variants", nargs="*", default=["dense", "moe", "bam-ekv", "bam-skv"]
    )
    ap.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="time moelab's Mixtral-shaped model against transformers' instead (see above)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--hf-impls", nargs="*", default=["grouped_mm", "eager"])
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="with --size: also write the results here",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.size:
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit(
                "train_step.py: --device cuda but torch.cuda.is_available() is False"
            )
        rows = mfu_rows(
            args.size, args.device, DTYPES[args.dtype], args.steps, args.hf_impls
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH} × seq {SEQ} tokens/step, "
        f"median of {args.steps} AdamW steps"
    )
    modes = ["eager (loop experts)", "eager"] + ([] if args.no_compile else ["compile"])
    print(
        f"  {'model':8s} {'mode':22s} {'tokens/s':>10s} {'vs eager':>9s} {'warm-up s':>10s}"
    )
    for variant in args.variants:
        eager = None
        for mode in modes:
            if mode == "eager (loop experts)" and variant == "dense":
                continue
            try:
                tps, warm = measure(
                    variant, mode, args.steps, warmup=3 if mode == "compile" else 2
                )
            except Exception as exc:  # noqa: BLE001 - compile may fail in many ways; report and go on
                line = str(exc).strip().splitlines()
                print(
                    f"  {variant:8s} {mode:22s} failed: {type(exc).__name__}: {line[0][:120] if line else ''}"
                )
                if "--debug" in sys.argv:
                    traceback.print_exc()
                continue
            if mode == "eager":
                eager = tps
            ratio = f"×{tps / eager:.2f}" if eager else ""
            print(f"  {variant:8s} {mode:22s} {tps:10.0f} {ratio:>9s} {warm:10.1f}")


if __name__ == "__main__":
    main()
