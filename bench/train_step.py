"""Training tokens/s: MoE Lab's training step against the peer a user would otherwise pick.

Default (the peer tables): MoE Lab's model against, with the same configuration, the same weights
and the same batch,
  - moe: transformers' MixtralForCausalLM, loaded from MoE Lab's weights as the engine exports
    them (io/checkpoint.save_model writes Mixtral's layout; transformers' from_pretrained reads it),
    in every `experts_implementation` transformers registers (moe_layer.transformers_implementations;
    the fastest that runs is the peer);
  - bam-ekv / bam-skv: the same model with each attention-experts module replaced by N separate
    attention modules mixed by the softmax router (bam_attention.SeparateAttentionExperts), the
    nearest thing a user would write by hand.
A step is forward, LM loss + load balancing (0.01) + router z-loss (0.001) over every router (one
loss function for both sides), backward, AdamW. Before timing, both sides' logits and losses on the
batch must agree within 1e-4 (fp32). At the demo shape and a medium one (d 512, 8 experts top-2, seq 512), eager
and torch.compile (a side whose compile fails shows why in the table). Printed: tokens/s of each
and MoE Lab's ratio to the peer.

    .venv/bin/python bench/train_step.py                 # demo + medium, eager + compile (minutes)
    .venv/bin/python bench/train_step.py --tiny          # tiny shapes, 2 steps: checks the bench only
    .venv/bin/python bench/train_step.py --engine-only   # the engine's own variants (below)

--engine-only: the demo-size model on CPU, AdamW steps, eager vs torch.compile.
The model is built here directly (byte vocab 256, d=128, 4 layers, 4 heads, ffn 344, seq 128,
batch 8): dense, a 4-expert top-2 MoE on every layer (btx/sparse shape), and BAM expert-KV and
shared-KV (attention experts, soft routing, parallel block). A step is forward, LM loss + load
balancing (0.01) + router z-loss (0.001) over every router, backward, AdamW. Eager runs once
with the experts' reference loop and once with the auto-selected fast path.

    .venv/bin/python bench/train_step.py --engine-only [--steps 20] [--no-compile] [--threads 1]
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
import copy
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "engine"))

from bam_attention import SeparateAttentionExperts
from moe_layer import batched_mm_too_big, transformers_implementations
from moelab.io.checkpoint import save_model
from moelab.models.attention import ExpertAttention
from moelab.models.aux_losses import load_balancing_loss, z_loss
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.ffn import Experts
from moelab.models.flops import train_flops
from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterLogits

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


def step_loss(
    logits: torch.Tensor, routers: list[RouterLogits], targets: torch.Tensor
) -> torch.Tensor:
    """LM loss + 0.01 · load balancing + 0.001 · z-loss per router: one loss for every side."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    for r in routers:
        loss = loss + 0.01 * load_balancing_loss(r) + 0.001 * z_loss(r)
    return loss


Forward = Callable[[torch.Tensor], tuple[torch.Tensor, list[RouterLogits]]]


def moelab_forward(model: MoELabForCausalLM) -> Forward:
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, list[RouterLogits]]:
        out = model(x)
        return out.logits, out.router_logits

    return forward


def backward_step(forward: Forward) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids [B, T+1] -> the loss, gradients accumulated (the optimizer steps outside: not compiled)."""

    def step(ids: torch.Tensor) -> torch.Tensor:
        logits, routers = forward(ids[:, :-1])
        loss = step_loss(logits, routers, ids[:, 1:])
        loss.backward()
        return loss.detach()

    return step


def make_step(model: MoELabForCausalLM, opt: torch.optim.Optimizer):
    step = backward_step(moelab_forward(model))

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


# ---- The peer tables (the default run) ----

# (vocab, hidden, ffn, layers, heads, kv heads, experts, top-k, batch, seq)
PEER_SHAPES = {
    "demo": (256, 128, 344, 4, 4, 4, 4, 2, BATCH, SEQ),
    # moe_layer.py's CPU shape (Mixtral's ffn/hidden ratio, 2048 tokens) as a 4-layer model
    "medium": (256, 512, 1408, 4, 8, 8, 8, 2, 4, 512),
    # --tiny: every path end to end in seconds, not a measurement
    "tiny": (256, 32, 64, 2, 4, 2, 4, 2, 2, 16),
}
PEER_VARIANTS = ("moe", "bam-ekv", "bam-skv")
LOSS_TOL = 1e-4  # fp32: the two sides' losses on the same batch before any timing


def peer_config(shape: str, variant: str) -> ModelConfig:
    vocab, d, f, n_layers, heads, kv, e, k, _, seq = PEER_SHAPES[shape]
    base = {
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": f,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_position_embeddings": seq,
    }
    layers = list(range(n_layers))
    if variant == "moe":
        # Mixtral exactly (renormalised top-k weights, forward and gradient): saved in its layout
        return ModelConfig(
            **base,
            model_type="mixtral",
            moe=MoEConfig(
                num_experts=e, top_k=k, moe_layers=layers, router_weights="renorm"
            ),
        )
    return ModelConfig(
        **base,
        model_type="moelab",
        parallel_block=True,
        moe=MoEConfig(
            num_experts=e,
            top_k=k,
            moe_layers=layers,
            attn_experts=True,
            shared_kv=variant == "bam-skv",
        ),
    )


def lively_routers(model: torch.nn.Module) -> None:
    """Router weights larger than the 0.02 init, so every expert gets tokens and top-k choices
    are far from ties (the two sides then route alike despite round-off)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate.weight", "router.weight")):
                p.normal_(0, 0.5)


def mixtral_peers(
    model: MoELabForCausalLM, impls: list[str], tmp: Path, tokens: int
) -> dict[str, Forward | str]:
    """{implementation: forward of transformers' MixtralForCausalLM holding `model`'s weights, or
    why it is skipped}. The weights go through the engine's own export (save_model: Mixtral's
    layout, one tensor per expert) and transformers' from_pretrained."""
    from transformers import MixtralForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg = model.config
    assert cfg.moe is not None and cfg.native_moe_type() == "mixtral"
    save_model(model, tmp)
    out: dict[str, Forward | str] = {}
    k = cfg.moe.top_k
    for impl in impls:
        # the autograd graph keeps every layer's gathered copy for the backward
        too_big = batched_mm_too_big(
            tokens * k * cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.intermediate_size,
            torch.float32,
            max_gb=2.0,
        )
        if impl == "batched_mm" and too_big:
            out[impl] = too_big
            continue
        try:
            hf = MixtralForCausalLM.from_pretrained(
                tmp,
                experts_implementation=impl,
                attn_implementation="sdpa",
                dtype=torch.float32,
            ).train()
        except (ValueError, ImportError, RuntimeError, KeyError) as exc:
            out[impl] = _why(exc)
            continue

        def forward(
            x: torch.Tensor, hf: MixtralForCausalLM = hf
        ) -> tuple[torch.Tensor, list[RouterLogits]]:
            o = hf(input_ids=x, output_router_logits=True)
            return o.logits, [
                RouterLogits(i, "ffn", r, k) for i, r in enumerate(o.router_logits)
            ]

        forward.module = hf  # type: ignore[attr-defined]
        out[impl] = forward
    return out


def separate_attention_peer(model: MoELabForCausalLM) -> MoELabForCausalLM:
    """A copy of `model` whose attention experts are N separate attention modules each."""
    peer = copy.deepcopy(model)
    for layer in peer.model.layers:
        if isinstance(layer.self_attn, ExpertAttention):
            layer.self_attn = SeparateAttentionExperts(layer.self_attn)
    return peer


def _same_logits(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    diff = float((got - want).abs().max())
    if diff > LOSS_TOL:
        sys.exit(
            f"train_step.py: {name}'s logits differ from MoE Lab's by {diff:.2e} (> {LOSS_TOL})"
        )


def _why(exc: BaseException) -> str:
    line = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {line[0][:110] if line else ''}"


class Contender:
    """One side of the comparison: its forward, parameters, optimizer and (compiled) step."""

    def __init__(self, name: str, forward: Forward, params: list, compiled: bool):
        self.name = name
        self.opt = torch.optim.AdamW(params, lr=1e-4)
        step = backward_step(forward)
        self.step = torch.compile(step) if compiled else step
        self.times: list[float] = []
        self.failed = ""
        self.warmup_s = 0.0
        self.loss_diff = 0.0

    def run(self, ids: torch.Tensor) -> float:
        loss = self.step(ids)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss)


def peer_row(shape: str, variant: str, mode: str, steps: int, impls: list[str]) -> dict:
    """One row of the table: MoE Lab's tokens/s, the best peer's, the ratio, and why any side
    could not run."""
    *_, batch, seq = PEER_SHAPES[shape]
    cfg = peer_config(shape, variant)
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    lively_routers(model)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
    compiled = mode == "compile"
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "moe":
            peers = mixtral_peers(model, impls, Path(tmp), batch * seq)
            labels = {i: f"transformers Mixtral ({i})" for i in peers}
        else:
            sep = separate_attention_peer(model)
            peers = {"separate": moelab_forward(sep)}
            peers["separate"].module = sep  # type: ignore[attr-defined]
            labels = {"separate": "N separate attention modules"}
        # the reference: MoE Lab eager, before any step; every peer's logits must match it (the
        # loss alone is near ln(vocab) for any small random model)
        with torch.no_grad():
            ref_logits, ref_routers = moelab_forward(model)(ids[:, :-1])
            ref = float(step_loss(ref_logits, ref_routers, ids[:, 1:]))
            for impl, fwd in list(peers.items()):
                if isinstance(fwd, str):
                    continue
                try:
                    got = fwd(ids[:, :-1])[0]
                except (
                    ValueError,
                    ImportError,
                    RuntimeError,
                    NotImplementedError,
                ) as exc:
                    peers[impl] = _why(
                        exc
                    )  # an implementation this build or device cannot run
                    continue
                _same_logits(labels[impl], got, ref_logits)
        sides = [
            Contender(
                "MoE Lab", moelab_forward(model), list(model.parameters()), compiled
            )
        ]
        skipped: dict[str, str] = {}
        for impl, fwd in peers.items():
            if isinstance(fwd, str):
                skipped[labels[impl]] = fwd
                continue
            sides.append(
                Contender(labels[impl], fwd, list(fwd.module.parameters()), compiled)
            )
        for side in sides:  # warm-up (compiles), and the same loss on the same batch
            t0 = time.perf_counter()
            try:
                with (
                    warnings.catch_warnings()
                ):  # a failing compile warns with long stacks first
                    warnings.simplefilter("ignore")
                    loss = side.run(ids)
                    # compiled: the warm-up also covers recompiles (a peer's data-dependent
                    # expert grouping is marked dynamic after 2-3 steps)
                    for _ in range(4 if compiled else 1):
                        side.run(ids)
            except Exception as exc:  # noqa: BLE001 - compile/implementation failures are reported
                side.failed = _why(exc)
                if "--debug" in sys.argv:
                    traceback.print_exc()
                continue
            side.warmup_s = time.perf_counter() - t0
            side.loss_diff = abs(loss - ref)
            if side.loss_diff > LOSS_TOL:
                sys.exit(
                    f"train_step.py: {side.name} loss {loss:.6f} differs from MoE Lab's "
                    f"{ref:.6f} by more than {LOSS_TOL} ({shape}, {variant}, {mode})"
                )
        live = [s for s in sides if not s.failed]
        for _ in range(steps):  # round-robin: a neighbour's load hits every side alike
            for side in live:
                t0 = time.perf_counter()
                side.run(ids)
                side.times.append(time.perf_counter() - t0)
    tps = {s.name: batch * seq / statistics.median(s.times) for s in live}
    peer_tps = {n: v for n, v in tps.items() if n != "MoE Lab"}
    best = max(peer_tps, key=peer_tps.get) if peer_tps else None
    ours = tps.get("MoE Lab")
    return {
        "shape": shape,
        "variant": variant,
        "mode": mode,
        "tokens_per_step": batch * seq,
        "moelab_tokens_per_s": ours,
        "peer": best,
        "peer_impl": next((i for i, lab in labels.items() if lab == best), None),
        "peer_tokens_per_s": peer_tps.get(best) if best else None,
        "ratio": ours / peer_tps[best] if ours and best else None,
        "all_tokens_per_s": tps,
        "failed": {s.name: s.failed for s in sides if s.failed},
        "skipped": skipped,
        "warmup_s": {s.name: round(s.warmup_s, 1) for s in live},
        "loss": ref,
        "max_loss_diff": max((s.loss_diff for s in live), default=None),
    }


def peer_table(rows: list[dict]) -> str:
    head = (
        "| shape | model | mode | MoE Lab tok/s | peer | peer tok/s | ratio | notes |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        ours = (
            f"{r['moelab_tokens_per_s']:.0f}" if r["moelab_tokens_per_s"] else "failed"
        )
        peer = f"{r['peer_tokens_per_s']:.0f}" if r["peer_tokens_per_s"] else "failed"
        ratio = f"**×{r['ratio']:.2f}**" if r["ratio"] else "—"
        notes = (
            [f"losses agree to {r['max_loss_diff']:.0e}"]
            if r["max_loss_diff"] is not None
            else []
        )
        notes += [f"{n} failed: {why}" for n, why in r["failed"].items()]
        notes += [f"{n} skipped: {why}" for n, why in r["skipped"].items()]
        others = {
            n: v
            for n, v in r["all_tokens_per_s"].items()
            if n not in ("MoE Lab", r["peer"])
        }
        notes += [f"{n}: {v:.0f}" for n, v in others.items()]
        lines.append(
            f"| {r['shape']} ({r['tokens_per_step']} tok/step) | {r['variant']} | {r['mode']} | {ours} "
            f"| {r['peer'] or '—'} | {peer} | {ratio} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def run_peers(args: argparse.Namespace) -> None:
    import logging

    import transformers

    # dynamo warns (with a stack) at each graph break, e.g. the experts' data-dependent sizes
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)

    shapes = ["tiny"] if args.tiny else args.shapes
    modes = [m for m in args.modes if not (args.no_compile and m == "compile")]
    impls = args.hf_impls or transformers_implementations()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads "
        f"{torch.get_num_threads()}, fp32, median of {args.steps} AdamW steps after 2 warm-up steps (compiled: 5); "
        f"ratio = MoE Lab tokens/s ÷ the fastest peer's (transformers implementations tried: {', '.join(impls)})"
        + ("; --tiny: not a measurement" if args.tiny else "")
    )
    rows = []
    for shape in shapes:
        for variant in args.peer_variants:
            for mode in modes:
                tried = impls
                if args.tiny and mode == "compile" and rows and rows[-1]["peer_impl"]:
                    # each compile takes minutes on a small CPU: --tiny compiles eager's best only
                    tried = [rows[-1]["peer_impl"]]
                rows.append(peer_row(shape, variant, mode, args.steps, tried))
                r = rows[-1]
                print(
                    f"  {shape} {variant} {mode}: MoE Lab {r['moelab_tokens_per_s'] or 0:.0f} tok/s, "
                    f"{r['peer']} {r['peer_tokens_per_s'] or 0:.0f} tok/s",
                    flush=True,
                )
    print("\n" + peer_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


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
        "--modes",
        nargs="*",
        default=["eager", "compile"],
        choices=["eager", "compile"],
        help="peer tables: which modes to time (--no-compile drops compile)",
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="peer tables at a tiny shape, 2 steps: checks the bench end to end, no figures",
    )
    ap.add_argument(
        "--shapes",
        nargs="*",
        default=["demo", "medium"],
        help=f"of {sorted(PEER_SHAPES)}",
    )
    ap.add_argument(
        "--peer-variants", nargs="*", default=list(PEER_VARIANTS), choices=PEER_VARIANTS
    )
    ap.add_argument(
        "--engine-only",
        action="store_true",
        help="the engine's own variants (loop / auto / compile), no peer",
    )
    ap.add_argument(
        "--variants",
        nargs="*",
        default=["dense", "moe", "bam-ekv", "bam-skv"],
        help="with --engine-only",
    )
    ap.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="time moelab's Mixtral-shaped model against transformers' instead (see above)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument(
        "--hf-impls",
        nargs="*",
        default=None,
        help="transformers experts_implementations to try (default: all registered; with --size: grouped_mm eager)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the results here (peer tables, or --size)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.steps = min(args.steps, 2)
    if args.size:
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit(
                "train_step.py: --device cuda but torch.cuda.is_available() is False"
            )
        rows = mfu_rows(
            args.size,
            args.device,
            DTYPES[args.dtype],
            args.steps,
            args.hf_impls or ["grouped_mm", "eager"],
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    if not args.engine_only:
        run_peers(args)
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
