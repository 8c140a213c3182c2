"""Weight surgery shared by every method: dense sources in, a streamed MoE checkpoint out.

A method only says *where each part of the MoE comes from* (a `MixSpec`): which source each
expert's FFN (and attention) is taken from, and which sources are averaged for everything else.
The rest is common:

1. `open_source` validates each dense checkpoint from its config and safetensors headers alone,
   and `check_compatible` compares each expert with the seed (architecture, then every tensor).
2. `plan` walks the parameter names of the output model itself (built on the meta device, so
   the output is by construction what `load_model` expects) and maps each to a `Step`: copy one
   source tensor, average several, or draw a new router.
3. `execute` streams the steps into a `StreamingShardWriter`: copies go file to file, means are
   computed in row chunks, so memory stays at a few chunks whatever the model size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from moelab.errors import CheckpointError, ConfigError, MoELabError
from moelab.io import layout
from moelab.io.atomic import atomic_dir
from moelab.io.checkpoint import load_config
from moelab.io.fused import split_fused
from moelab.io.peft_adapter import is_adapter_dir, open_adapter
from moelab.io.seed_files import carry_seed_files
from moelab.io.tensor_io import (
    TORCH_DTYPES,
    FileCache,
    StreamingShardWriter,
    TensorLoc,
    bytes_to_tensor,
    locate,
)
from moelab.methods.options import UPIT_FIELDS, UpcycleOptions
from moelab.methods.provenance import ParentHasher, provenance
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import meta_model
from moelab.models.routing import RouterKind
from moelab.remote_code.bundle import write_remote_code

# Fields that must agree between the seed and every expert for their weights to be mixed.
ARCH_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "attention_bias",
    "tie_word_embeddings",
    "parallel_block",
    "rope_theta",
    "rope_scaling",
    "rms_norm_eps",
    "computes_as",
    "sliding_window",
    "layer_types",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "query_pre_attn_scalar",
    "rope_local_theta",
)
ROUTER_STD = 0.02  # small, so initial routing is near uniform (and the invariant holds for any draw)
CHUNK_BYTES = 16 * 1024 * 1024  # rows of a mean are processed this many source bytes at a time (bounds RSS)

_MIXTRAL_TO_DENSE = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclass
class Source:
    """One dense input checkpoint, validated, with the location of every tensor."""

    role: Literal["seed", "expert"]
    path: Path
    cfg: ModelConfig
    tensors: dict[str, TensorLoc]


@dataclass
class MixSpec:
    """What a method decides; everything else is common surgery."""

    sources: list[Source]  # index 0 is the seed
    expert_sources: list[int]  # expert e's FFN (and attention) comes from sources[expert_sources[e]]
    shared_sources: list[int]  # every other parameter is the mean of these sources (one: a copy)
    attn_experts: bool = False  # BAM: attention experts too
    shared_kv: bool = False  # BAM shared-KV: K and V are shared parameters (averaged), Q and O per expert
    lora_rank: int = 0  # UpIT LoRA: experts are low-rank deltas on a shared dense FFN
    lora_alpha: float = 0.0
    # A method that makes tensors no source holds (UpIT's merged children, LoRA factors) claims
    # them here: given an output tensor name, the location to copy or a function that computes
    # it; None leaves the name to the common plan.
    compute: Callable[[str], TensorLoc | Callable[[FileCache], torch.Tensor] | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # merged into config.json's "moelab" record


@dataclass
class Step:
    name: str  # output tensor name (disk layout)
    shape: tuple[int, ...]
    dtype: str  # output safetensors dtype
    kind: Literal["copy", "mean", "router", "compute"]
    srcs: list[TensorLoc] = field(default_factory=list)
    layer: int = -1  # for routers and progress
    fn: Callable[[FileCache], torch.Tensor] | None = None  # kind "compute"


# ---- 1. sources ---------------------------------------------------------------------------------


def model_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{disk tensor name: shape} of the model `cfg` describes, in module order, computed on meta."""
    model = meta_model(cfg)
    state = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return {k: tuple(v.shape) for k, v in layout.to_disk(state).items()}


def open_source(path: Path, role: Literal["seed", "expert"]) -> Source:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory ({role} checkpoint)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory ({role} checkpoint)")
    cfg = load_config(path)
    if cfg.moe is not None:
        raise ConfigError(
            f"{path / 'config.json'}: already a mixture of experts ({cfg.model_type}); "
            "upcycling starts from dense checkpoints"
        )
    tensors = split_fused(locate(path), cfg, path)
    for name, shape in model_shapes(cfg).items():
        loc = tensors.get(name)
        if loc is None:
            raise CheckpointError(f"{path}: tensor {name!r} is missing")
        if loc.shape != shape:
            raise CheckpointError(
                f"{loc.path}: tensor {name!r} has shape {list(loc.shape)} but "
                f"{path / 'config.json'} implies {list(shape)}"
            )
        if loc.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{loc.path}: tensor {name!r} has dtype {loc.dtype}, expected a float type")
    return Source(role, path, cfg, tensors)


def check_compatible(seed: Source, other: Source) -> None:
    """Raises naming `other`'s directory and the first field or tensor that differs from the seed."""
    for f in ARCH_FIELDS:
        a, b = getattr(other.cfg, f), getattr(seed.cfg, f)
        if a != b:
            raise MoELabError(f"{other.path}: {f} is {a!r} but the seed {seed.path} has {b!r}")
    for name in model_shapes(seed.cfg):
        s, o = seed.tensors[name], other.tensors[name]
        if s.shape != o.shape:
            raise MoELabError(
                f"{o.path}: tensor {name!r} has shape {list(o.shape)} but the seed's is {list(s.shape)}"
            )


def moe_layer_indices(spec: str, n_layers: int) -> list[int]:
    """`all`, `every-other` (layers 1, 3, 5, ...: the second of each pair, as Switch and sparse
    upcycling do) or a comma-separated list of layer indices."""
    if spec == "all":
        layers = list(range(n_layers))
    elif spec == "every-other":
        layers = list(range(1, n_layers, 2))
    else:
        try:
            layers = sorted({int(x) for x in spec.split(",") if x.strip()})
        except ValueError:
            raise ConfigError(
                f"--moe-layers {spec!r}: expected all, every-other or layer indices like 1,3,5"
            ) from None
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ConfigError(f"--moe-layers: layer {bad[0]} does not exist (the seed has {n_layers} layers)")
    if not layers:
        raise ConfigError(f"--moe-layers {spec!r}: selects no layer of the seed's {n_layers}")
    return layers


# ---- 2. plan -------------------------------------------------------------------------------------


def output_config(opts: UpcycleOptions, spec: MixSpec) -> ModelConfig:
    seed = spec.sources[0].cfg
    n = len(spec.expert_sources)
    if not 1 <= opts.top_k <= n:
        raise ConfigError(f"--top-k {opts.top_k}: must be between 1 and the number of experts ({n})")
    if spec.attn_experts and not 0 <= opts.attn_top_k <= n:
        raise ConfigError(f"--attn-top-k {opts.attn_top_k}: must be 0 (soft) or between 1 and {n}")
    if opts.capacity_factor > 0 and spec.lora_rank > 0:
        raise ConfigError(
            "--capacity-factor: expert capacity is not supported with LoRA experts (--lora-rank > 0)"
        )
    moe = MoEConfig(
        num_experts=n,
        top_k=opts.top_k,
        moe_layers=moe_layer_indices(opts.moe_layers, seed.num_hidden_layers),
        attn_experts=spec.attn_experts,
        attn_top_k=opts.attn_top_k if spec.attn_experts else 0,
        shared_kv=spec.shared_kv,
        lora_rank=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        capacity_factor=opts.capacity_factor,
        router_jitter_noise=opts.router_jitter_noise,
        router_weights=opts.router_weights,
        method=opts.method,
    )
    cfg = dataclasses.replace(seed, moe=moe, model_type="moelab")
    # A plain Hugging Face Mixtral / Qwen3-MoE computes exactly this model: write that type.
    cfg.model_type = cfg.native_moe_type() or "moelab"
    return cfg


def plan(spec: MixSpec, cfg: ModelConfig) -> list[Step]:
    seed = spec.sources[0]
    shared = [spec.sources[i] for i in spec.shared_sources]
    router_dtype = seed.tensors["model.embed_tokens.weight"].dtype
    steps = []
    for name, shape in model_shapes(cfg).items():
        layer = int(lm[1]) if (lm := layout.LAYER.match(name)) else -1
        if m := layout.FFN_ROUTER.match(name) or layout.ATTN_ROUTER.match(name):
            steps.append(Step(name, shape, router_dtype, "router", layer=int(m[1])))
            continue
        claimed = spec.compute(name) if spec.compute else None
        if isinstance(claimed, TensorLoc):
            steps.append(Step(name, shape, claimed.dtype, "copy", [claimed], layer))
            continue
        if claimed is not None:
            steps.append(Step(name, shape, router_dtype, "compute", layer=layer, fn=claimed))
            continue
        # An expert's tensor comes from its source's dense layer. BAM: an attention expert's q/k
        # norms come with its projections (shared-KV's k_norm is shared, averaged).
        if (m := layout.FFN_EXPERT.match(name)) and m[4] == "weight" and m[3] in _MIXTRAL_TO_DENSE:
            dense, srcs = (
                f"model.layers.{m[1]}.mlp.{_MIXTRAL_TO_DENSE[m[3]]}.weight",
                [spec.sources[spec.expert_sources[int(m[2])]]],
            )
        elif m := layout.ATTN_EXPERT.match(name):
            dense = f"model.layers.{m[1]}.self_attn.{m[3]}.{m[4]}"
            srcs = [spec.sources[spec.expert_sources[int(m[2])]]]
        else:
            dense, srcs = name, shared
        locs = [s.tensors[dense] for s in srcs]
        out_dtype = seed.tensors[dense].dtype
        steps.append(Step(name, shape, out_dtype, "copy" if len(locs) == 1 else "mean", locs, layer))
    return steps


# ---- 3. execute ----------------------------------------------------------------------------------


def init_router(
    shape: tuple[int, ...], dtype: str, router_seed: int, layer: int, kind: RouterKind
) -> torch.Tensor:
    """N(0, ROUTER_STD²), one generator per router so a router's draw depends only on
    (seed, layer, kind) and not on which other routers the model has."""
    g = torch.Generator().manual_seed(router_seed * 1_000_003 + 2 * layer + (kind == "attn"))
    return (torch.randn(shape, generator=g) * ROUTER_STD).to(TORCH_DTYPES[dtype])


def _chunks(shape: tuple[int, ...], row_bytes: int) -> list[tuple[int, int]]:
    rows = shape[0] if shape else 1
    per = max(1, CHUNK_BYTES // max(row_bytes, 1))
    return [(r, min(rows, r + per)) for r in range(0, rows, per)] or [(0, 0)]


def _mean_or_convert(step: Step, files: FileCache, writer: StreamingShardWriter) -> None:
    """Mean of the sources (or a dtype conversion of one), chunk by chunk of rows. Sums in
    float64 for fp32 sources, float32 for 16-bit ones: exact for identical inputs, so
    averaging N copies of a tensor gives the tensor back bit for bit."""
    wide = any(s.dtype in ("F32", "F64") for s in step.srcs)
    acc_dtype = torch.float64 if wide else torch.float32
    out_dtype = TORCH_DTYPES[step.dtype]
    rows = step.shape[0] if step.shape else 1
    row_shape = step.shape[1:] if step.shape else ()
    out_row = math.prod(row_shape) * torch.empty((), dtype=out_dtype).element_size()
    for r0, r1 in _chunks(step.shape, max(s.row_bytes for s in step.srcs)):
        acc = None
        for src in step.srcs:
            rb = src.nbytes // rows if rows else 0
            chunk = bytes_to_tensor(
                files.read(src, r0 * rb, (r1 - r0) * rb),
                src.dtype,
                ((r1 - r0), *row_shape) if step.shape else (),
            )
            # Widen first, then add: a same-dtype add_ is a quarter faster on CPU than add_'s own
            # mixed-dtype path, for one chunk-sized temporary (measured on 16 MB bf16 chunks).
            wide_chunk = chunk.to(acc_dtype)
            acc = wide_chunk if acc is None else acc.add_(wide_chunk)
        assert acc is not None
        if len(step.srcs) > 1:
            acc.div_(len(step.srcs))
        writer.write_tensor(step.name, acc.to(out_dtype), start=r0 * out_row)


def execute(
    steps: list[Step],
    writer: StreamingShardWriter,
    files: FileCache,
    router_seed: int,
    progress: Callable[[str], None],
) -> None:
    n_layers = 1 + max((s.layer for s in steps), default=-1)
    current = -2
    for step in steps:
        if step.layer != current:
            current = step.layer
            where = (
                f"layer {current + 1}/{n_layers}"
                if current >= 0
                else ("embeddings" if step.name.startswith("model.embed") else "head")
            )
            progress(f"{where} ({writer.written_bytes() / 1e6:.0f}/{writer.total_bytes / 1e6:.0f} MB)")
        if step.kind == "router":
            kind: RouterKind = "attn" if "self_attn" in step.name else "ffn"
            writer.write_tensor(step.name, init_router(step.shape, step.dtype, router_seed, step.layer, kind))
        elif step.kind == "compute":
            assert step.fn is not None
            writer.write_tensor(step.name, step.fn(files).to(TORCH_DTYPES[step.dtype]).contiguous())
        elif step.kind == "copy" and step.srcs[0].dtype == step.dtype:
            writer.copy(step.name, step.srcs[0], files.fd(step.srcs[0].path))
        else:
            _mean_or_convert(step, files, writer)


def stderr_progress(prefix: str) -> Callable[[str], None]:
    def report(msg: str) -> None:
        print(f"{prefix}: {msg}", file=sys.stderr, flush=True)

    return report


def _options_record(opts: UpcycleOptions, num_experts: int) -> dict[str, Any]:
    d = dataclasses.asdict(opts)
    for k in ("method", "seed", "experts", "out", "overwrite"):
        d.pop(k, None)
    if opts.method != "upit":
        for k in UPIT_FIELDS:
            d.pop(k, None)
    d["num_experts"] = num_experts
    return d


def _dtype_name(dtype: str) -> str:
    return str(TORCH_DTYPES[dtype]).removeprefix("torch.")


# A method's surgery plan: (options, seed, its expert sources) -> what to mix.
MakeSpec = Callable[[UpcycleOptions, Source, list[Any]], MixSpec]


def run_surgery(
    opts: UpcycleOptions,
    make_spec: MakeSpec,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Validates every input, plans, and writes opts.out atomically (whole or not at all)."""
    report = progress or stderr_progress(f"upcycle {opts.method}")
    if opts.router_init not in ("random", "hidden"):
        raise ConfigError(f"--router-init {opts.router_init!r}: expected random or hidden")
    if not opts.capacity_factor >= 0:
        raise ConfigError(f"--capacity-factor {opts.capacity_factor}: must be 0 (dropless) or positive")
    if not 0 <= opts.router_jitter_noise < 1:
        raise ConfigError(f"--router-jitter-noise {opts.router_jitter_noise}: must be in [0, 1)")
    if opts.max_shard_bytes <= 0:
        raise ConfigError(f"--max-shard-size: must be positive (got {opts.max_shard_bytes} bytes)")
    seed = open_source(opts.seed, "seed")
    experts: list[Any] = []
    for p in opts.experts:
        if is_adapter_dir(p):
            if opts.method != "upit":
                raise ConfigError(
                    f"--expert {p}: a PEFT adapter; only --method upit takes adapters as experts"
                )
            experts.append(open_adapter(p))  # upit checks it against the seed
            continue
        src = open_source(p, "expert")
        check_compatible(seed, src)
        experts.append(src)
    spec = make_spec(opts, seed, experts)
    cfg = output_config(opts, spec)
    steps = plan(spec, cfg)
    out = Path(opts.out)
    for path in [Path(opts.seed), *map(Path, opts.experts)]:
        if out.resolve() == path.resolve() or path.resolve().is_relative_to(out.resolve()):
            raise ConfigError(f"--out {out}: would replace the input checkpoint {path}")

    parents = [("seed", seed.path)] + [("expert", e.path) for e in experts]
    hasher = ParentHasher(parents)
    t0 = time.perf_counter()
    try:
        with atomic_dir(out, overwrite=opts.overwrite) as tmp, FileCache() as files:
            writer = StreamingShardWriter(
                tmp,
                [(s.name, s.shape, s.dtype) for s in steps],
                opts.max_shard_bytes,
                disk_name=lambda n: layout.native_name(n, cfg.model_type),
            )
            try:
                execute(steps, writer, files, opts.router_seed, report)
            finally:
                writer.close_files()
            shards = writer.close()
            hf = cfg.to_hf_dict()
            hf["torch_dtype"] = hf["dtype"] = _dtype_name(seed.tensors["model.embed_tokens.weight"].dtype)
            hf["moelab"] = provenance(
                opts.method, _options_record(opts, len(spec.expert_sources)), hasher.parents()
            )
            hf["moelab"].update(spec.meta)
            (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
            if cfg.model_type == "moelab":
                write_remote_code(tmp)
            carry_seed_files(seed.path, tmp)
    finally:
        hasher.close()
    report(
        f"done: {out} ({cfg.model_type}, {len(spec.expert_sources)} experts, {len(shards)} shard(s), "
        f"{writer.total_bytes / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s)"
    )
    return out
