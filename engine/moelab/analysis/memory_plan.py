"""Per-rank training memory of a model under FSDP2 (or FSDP2 + expert parallelism), from its config alone.

What is counted is what the engine's training step holds (train/trainer.py, launch/fsdp.py):

- parameters: each rank's FSDP2 shard (dim 0 split over the ranks, padded; [E, ...] expert stacks
  the ranks do not divide on dim 1, as launch/fsdp.py splits them), fp32: under bf16 mixed
  precision the shards are the fp32 master weights the optimizer updates.
- gradients: fp32 shards (FSDP2 reduce-scatters in fp32). A step sets them to None, so with one
  micro-batch they appear layer by layer during the backward pass as the activations go.
- optimizer: AdamW's two fp32 states per parameter shard (fused on CUDA: no temporaries).
- activations: what autograd saves per decoder layer for `batch` sequences of `seq` tokens, as the
  engine's modules compute (enumerated in `layer_activation_bytes`), attention by a fused kernel
  (no T×T scores, except a score soft-cap and BAM's top-k masks); with activation checkpointing
  only each layer's input, plus one layer recomputed during its backward.
- the loss: logits over the vocabulary in the compute dtype, and in fp32 their log-softmax and,
  in the backward, its gradient and the logits' gradient (12 bytes per token·vocab on top).
- temporary buffers (none on one GPU, which trains unsharded): the root FSDP unit (embeddings,
  final norm, LM head) stays gathered in the compute dtype from the forward to the end of the
  backward, and so does the LM head's unsharded gradient; a decoder layer is gathered with the next one prefetched, and its backward holds its
  unsharded gradient and (bf16) the fp32 copy that is reduce-scattered.
- fsdp+ep (launch/expert_parallel.py): each rank holds E/W of every MoE layer's FFN experts whole,
  in fp32, outside FSDP, so a layer gathers its other parameters only. Under bf16 each forward
  reads the local experts as a bf16 copy, which the expert matmuls keep for the backward; the
  tokens' all-to-all adds the returned slots (kept by the combine) and send/receive buffers.

The peak is the largest of: the loss backward (every layer's activations live), each layer's
backward (earlier layers' activations, later layers' gradient shards), and the optimizer step.
Routing is assumed balanced (dropless top-k: each expert gets its share of tokens). Not counted:
the CUDA context, NCCL's own buffers and the allocator's fragmentation: `headroom` keeps a share of
the GPU for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from moelab.errors import ConfigError
from moelab.io import layout
from moelab.launch.fsdp import stack_split_dim
from moelab.models.config import ModelConfig

Parallel = Literal["fsdp", "fsdp+ep"]
PARALLEL: tuple[Parallel, ...] = ("fsdp", "fsdp+ep")
DTYPE_BYTES = {"bf16": 2, "fp32": 4}
FP32 = 4
INDEX = 8  # int64 routing indices
GIB = 1024**3


@dataclass(frozen=True)
class Setup:
    """Where and how the model trains: `batch` sequences of `seq` tokens per rank and micro-batch."""

    gpus: int
    gpu_mem_gib: float
    seq: int = 4096
    batch: int = 1
    parallel: Parallel = "fsdp"
    dtype: Literal["bf16", "fp32"] = "bf16"  # compute dtype (FSDP's param_dtype)
    activation_checkpointing: bool = False
    grad_accum: int = 1
    headroom: float = 0.1  # share of the GPU kept for the CUDA context, NCCL and fragmentation

    def __post_init__(self) -> None:
        for name in ("gpus", "seq", "batch", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if not self.gpu_mem_gib > 0:
            raise ConfigError(f"--gpu-mem {self.gpu_mem_gib}: must be positive")
        if self.parallel not in PARALLEL:
            raise ConfigError(f"--parallel {self.parallel!r}: expected one of {', '.join(PARALLEL)}")
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPE_BYTES)}")
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"--headroom {self.headroom}: must be in [0, 1)")

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


@dataclass
class ParamGroups:
    """Parameter shapes of the model by FSDP unit: the root (embeddings, final norm, LM head) and
    each decoder layer, the layer's FFN expert tensors apart (they are what expert parallelism splits)."""

    root: list[tuple[int, ...]] = field(default_factory=list)
    layers: list[list[tuple[int, ...]]] = field(default_factory=list)
    # the layer's other [E, ...] stacks (BAM's attention experts): FSDP2 may split them on dim 1
    stacks: list[list[tuple[int, ...]]] = field(default_factory=list)
    experts: list[list[tuple[int, ...]]] = field(default_factory=list)
    head: int = 0  # LM head numel when it is its own tensor (untied)

    @property
    def total(self) -> int:
        return sum(math.prod(s) for s in self.root) + sum(
            math.prod(s) for group in (*self.layers, *self.stacks, *self.experts) for s in group
        )


def param_groups(cfg: ModelConfig) -> ParamGroups:
    """The shapes of the engine's own model for `cfg`, built on the meta device (no storage)."""
    from moelab.models.model import meta_model

    model = meta_model(cfg)
    n = cfg.num_hidden_layers
    out = ParamGroups(
        layers=[[] for _ in range(n)], stacks=[[] for _ in range(n)], experts=[[] for _ in range(n)]
    )
    for name, p in model.named_parameters():  # a tied head is the embedding: named once
        shape = tuple(p.shape)
        if not name.startswith("model.layers."):
            out.root.append(shape)
            if name == "lm_head.weight":
                out.head = p.numel()
            continue
        layer = int(name.split(".")[2])
        if ".block_sparse_moe.experts." in name:
            out.experts[layer].append(shape)
        else:
            (out.stacks if layout.is_stacked(name) else out.layers)[layer].append(shape)
    return out


def shard_numel(shapes: Iterable[tuple[int, ...]], ranks: int, dim: int = 0) -> int:
    """Elements of one rank's FSDP2 shards: `dim` split in `ranks` chunks (torch.chunk), each rank
    allocating the first (largest) chunk's size. A [4, f, d] expert stack over 8 ranks on dim 0
    thus takes one whole expert on every rank (ranks 4-7 hold padding): 1/4 of it, not 1/8."""
    total = 0
    for s in shapes:
        if not s:
            total += 1
            continue
        k = min(dim, len(s) - 1)
        total += math.ceil(s[k] / ranks) * math.prod(s) // s[k]
    return total


def stacks_shard_numel(shapes: list[tuple[int, ...]], ranks: int) -> int:
    """One rank's FSDP2 shards of [E, ...] expert stacks, each on the dim the engine splits it on
    (launch/fsdp.py: dim 1 where E does not divide by the ranks and dim 1 does)."""
    return sum(shard_numel([x], ranks, stack_split_dim(x, ranks)) for x in shapes)


def _expert_shard_numel(shapes: list[tuple[int, ...]], s: Setup, ep: int) -> int:
    """One rank's share of a layer's FFN expert stacks: under fsdp+ep its E/W whole experts (FSDP
    leaves them alone), else its FSDP2 shards."""
    if ep > 1:
        return sum(math.prod(x) for x in shapes) // ep
    return stacks_shard_numel(shapes, s.gpus)


def expert_parallel_degree(cfg: ModelConfig, gpus: int) -> int:
    """Ranks the FFN experts are split over under fsdp+ep: all of them, as launch/expert_parallel.py
    does, which refuses what it refuses (experts not divisible by the ranks, a capacity factor).
    UpIT's LoRA experts are not split (1)."""
    m = cfg.moe
    if m is None:
        raise ConfigError("--parallel fsdp+ep: the model has no FFN experts to split (a dense model)")
    if m.num_experts % gpus:
        raise ConfigError(
            f"--parallel fsdp+ep places the {m.num_experts} experts of each MoE layer on the {gpus} "
            f"ranks, and {m.num_experts} is not divisible by {gpus}"
        )
    if m.capacity_factor > 0:
        raise ConfigError(
            f"--parallel fsdp+ep: dropless only (the model's capacity_factor is {m.capacity_factor})"
        )
    return 1 if m.lora_rank > 0 else gpus


# ---- activations ---------------------------------------------------------------------------------


def _norm_bytes(d: int, c: int) -> int:
    """RMSNorm per token: the fp32 input it normalises, the normalised value cast to the compute
    dtype (kept by the weight's product) and its output (kept by the next matmul)."""
    return FP32 * d + 2 * c * d


def _attention_bytes(cfg: ModelConfig, layer: int, seq: int, c: int) -> float:
    """Attention per token: roped Q and K, V, the output, the output reshaped for o_proj, the fp32
    log-sum-exp per head; BAM experts per their layout (models/attention.py)."""
    h, q, kv, d = (
        cfg.num_attention_heads,
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
        cfg.hidden_size,
    )
    m = cfg.moe
    scores = 0.0
    if cfg.attn_logit_softcapping is not None:  # eager scores: raw (c), fp32 softmax, probs (c)
        scores = h * seq * (2 * c + FP32)
    if not (cfg.is_moe_layer(layer) and m is not None and m.attn_experts):
        return c * (3 * q + 2 * kv) + FP32 * h + scores
    e = m.num_experts
    kv_all = (1 if m.shared_kv else e) * kv
    router = e * (c + FP32)
    if 0 < m.attn_top_k < e:  # routed: per selected expert its gathered input, Q, output, o_proj in and out
        k = m.attn_top_k
        mask = k * seq  # the bool position mask of the packed queries, [tq, T] per expert and row
        return c * (2 * kv_all + k * (2 * d + 3 * q)) + FP32 * k * h + mask + router + k * scores
    # soft: every expert's Q and output, the output reordered and its weighted copy (o_proj's input)
    return c * (2 * kv_all + 4 * e * q) + FP32 * e * h + router + c * e + e * scores


def _ffn_bytes(cfg: ModelConfig, layer: int, c: int) -> float:
    """FFN per token: gate, up, act(gate) and their product ([·, f] each); an MoE layer holds them
    for each of its top-k slots, with the slots' gathered inputs and outputs (the dispatch buffers),
    the router's probabilities and the routing indices."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    m = cfg.moe
    if not cfg.is_moe_layer(layer) or m is None:
        return 4 * c * f
    k, e = m.top_k, m.num_experts
    slots = k * max(1.0, m.capacity_factor)  # a capacity buffer (padded path) holds cf·N·k rows
    router = e * (c + FP32) + k * (INDEX + 3 * FP32)
    if m.lora_rank > 0:  # shared gate/up once, per slot the shared down and the low-rank deltas
        return 2 * c * f + c * slots * (2 * d + 2 * f + 3 * m.lora_rank) + router
    return c * slots * (2 * d + 4 * f) + 3 * INDEX * k + router


def _soft_attention_experts(cfg: ModelConfig, layer: int) -> bool:
    m = cfg.moe
    return (
        cfg.is_moe_layer(layer) and m is not None and m.attn_experts and not 0 < m.attn_top_k < m.num_experts
    )


def layer_activation_bytes(cfg: ModelConfig, layer: int, tokens: int, seq: int, c: int, ep: int = 1) -> float:
    """Bytes autograd keeps for one decoder layer's backward over `tokens` tokens of `seq`-long rows,
    its FFN experts split over `ep` ranks."""
    d = cfg.hidden_size
    norms = (1 if cfg.parallel_block else 2) + (2 if cfg.arch.norm_layout == "sandwich" else 0)
    per_token = norms * _norm_bytes(d, c) + _attention_bytes(cfg, layer, seq, c) + _ffn_bytes(cfg, layer, c)
    # The soft mixture's one output projection over the stacked heads multiplies by a reordered
    # copy of the experts' o_proj, [d, E·heads·head_dim], which autograd keeps whatever the batch.
    per_layer = 0
    if _soft_attention_experts(cfg, layer):
        assert cfg.moe is not None
        per_layer = c * cfg.moe.num_experts * cfg.num_attention_heads * cfg.head_dim * d
    if ep > 1 and cfg.is_moe_layer(layer) and cfg.moe is not None:
        # The slots that come back from their experts' ranks, kept by the combine; the local experts'
        # bf16 copy, kept by their matmuls (fp32 reads the parameters themselves).
        per_token += c * cfg.moe.top_k * d
        if c != FP32:
            per_layer += c * _local_expert_numel(cfg, ep)
    return per_token * tokens + per_layer


def _local_expert_numel(cfg: ModelConfig, ep: int) -> int:
    """One MoE layer's FFN expert parameters on one rank under expert parallelism."""
    assert cfg.moe is not None
    return 3 * cfg.hidden_size * cfg.intermediate_size * cfg.moe.num_experts // ep


def loss_bytes(cfg: ModelConfig, tokens: int, c: int) -> int:
    """The loss backward: logits (compute dtype), their fp32 log-softmax, its gradient and the
    logits' gradient, over the vocabulary; the final norm and the head's input."""
    return tokens * (cfg.vocab_size * (c + 3 * FP32) + _norm_bytes(cfg.hidden_size, c))


# ---- the plan ------------------------------------------------------------------------------------


@dataclass
class MemoryPlan:
    """Bytes per rank. `components` is the peak's breakdown; `peak_phase` says where the peak is."""

    setup: dict[str, Any]
    params_total: int
    expert_parallel: int  # ranks the FFN experts are split over (1: not split)
    components: dict[str, float]
    activations_per_layer: list[float]
    activations_with_checkpointing: float  # all layers, checkpointed, at this batch
    activations_without_checkpointing: float
    peak: float
    peak_phase: str
    budget: float
    fits: bool
    max_batch: int  # largest micro-batch per rank that fits (0: none), at this setup's checkpointing
    max_batch_other: int  # the same with activation checkpointing switched the other way
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Static:
    """What does not depend on the micro-batch: the shards, the gathered root and one layer's buffers."""

    params: float
    grads_per_layer: list[float]
    grads_root: float
    optimizer: float
    root_gathered: float
    head_grad: float
    layer_buffers: list[float]  # gathered params (+ prefetched next) and gradient buffers of each layer


def _static(cfg: ModelConfig, groups: ParamGroups, s: Setup, ep: int) -> _Static:
    n, c = s.gpus, s.compute_bytes
    layer_shard = [
        shard_numel(groups.layers[i], n)
        + stacks_shard_numel(groups.stacks[i], n)
        + _expert_shard_numel(groups.experts[i], s, ep)
        for i in range(len(groups.layers))
    ]
    root_shard = shard_numel(groups.root, n)
    shard = root_shard + sum(layer_shard)
    # Gathered per unit: the layer's FSDP parameters (under EP the experts are not FSDP's).
    gathered = [
        sum(math.prod(x) for x in (*groups.layers[i], *groups.stacks[i]))
        + (0 if ep > 1 else sum(math.prod(x) for x in groups.experts[i]))
        for i in range(len(groups.layers))
    ]
    reduce_copy = FP32 if c != FP32 else 0  # bf16 gradients cast to fp32 for the reduce-scatter
    buffers = []
    for i, g in enumerate(gathered):
        nxt = gathered[i + 1] if i + 1 < len(gathered) else 0.0
        # Under EP in bf16, the gradient of the local experts' bf16 copy before its cast to fp32.
        local = c * sum(math.prod(x) for x in groups.experts[i]) / ep if ep > 1 and c != FP32 else 0.0
        buffers.append(g * c + nxt * c + g * (c + reduce_copy) + local)
    root_full = sum(math.prod(x) for x in groups.root)
    if n == 1:  # one process trains unsharded (launch/distributed.py): nothing is gathered or reduced
        buffers, root_full = [0.0 for _ in buffers], 0
    return _Static(
        params=FP32 * shard,
        grads_per_layer=[FP32 * x for x in layer_shard],
        grads_root=FP32 * root_shard,
        optimizer=2 * FP32 * shard,
        root_gathered=c * root_full,
        head_grad=c * groups.head,
        layer_buffers=buffers,
    )


def _all_to_all_bytes(cfg: ModelConfig, layer: int, tokens: int, c: int) -> float:
    """Send and receive buffers of one MoE layer's token dispatch (the combine reuses the sizes)."""
    m = cfg.moe
    if m is None or not cfg.is_moe_layer(layer):
        return 0.0
    return 2 * tokens * m.top_k * cfg.hidden_size * c


def _peak(
    cfg: ModelConfig, st: _Static, s: Setup, batch: int, checkpointing: bool, ep: int
) -> tuple[float, str, dict[str, float], list[float]]:
    """(peak bytes, phase, its breakdown, full activations per layer) at micro-batch `batch`."""
    tokens, c, n_layers = batch * s.seq, s.compute_bytes, cfg.num_hidden_layers
    full = [layer_activation_bytes(cfg, i, tokens, s.seq, c, ep) for i in range(n_layers)]
    kept = [tokens * c * cfg.hidden_size for _ in full] if checkpointing else full
    a2a = [_all_to_all_bytes(cfg, i, tokens, c) if ep > 1 else 0.0 for i in range(n_layers)]
    # Gradient shards from earlier micro-batches stay between them; with one, they start at None.
    grads_before = sum(st.grads_per_layer) + st.grads_root if s.grad_accum > 1 else 0.0
    phases: list[tuple[str, dict[str, float]]] = [
        (
            "loss backward",
            {
                "activations": sum(kept),
                "loss": float(loss_bytes(cfg, tokens, c)),
                "gradients": grads_before,
                "buffers": st.root_gathered + st.head_grad + st.layer_buffers[-1],
            },
        )
    ]
    for j in reversed(range(n_layers)):
        later = sum(st.grads_per_layer[j + 1 :]) if s.grad_accum == 1 else grads_before
        recompute = full[j] if checkpointing else 0.0
        phases.append(
            (
                f"backward of layer {j}",
                {
                    "activations": sum(kept[: j + 1]) + recompute,
                    "loss": 0.0,
                    "gradients": later,
                    "buffers": st.root_gathered + st.head_grad + st.layer_buffers[j] + a2a[j],
                },
            )
        )
    phases.append(
        (
            "optimizer step",
            {
                "activations": 0.0,
                "loss": 0.0,
                "gradients": sum(st.grads_per_layer) + st.grads_root,
                "buffers": 0.0,
            },
        )
    )
    name, parts = max(phases, key=lambda phase: sum(phase[1].values()))  # the first of equals
    total = st.params + st.optimizer + sum(parts.values())
    breakdown = {"parameters": st.params, "gradients": parts["gradients"], "optimizer": st.optimizer}
    breakdown |= {k: parts[k] for k in ("activations", "loss", "buffers")}
    return total, name, breakdown, full


def _max_batch(cfg: ModelConfig, st: _Static, s: Setup, checkpointing: bool, ep: int, budget: float) -> int:
    """Largest micro-batch whose peak fits `budget` (the peak grows with the batch), 0 if none does."""
    if _peak(cfg, st, s, 1, checkpointing, ep)[0] > budget:
        return 0
    lo, hi = 1, 2
    while _peak(cfg, st, s, hi, checkpointing, ep)[0] <= budget and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _peak(cfg, st, s, mid, checkpointing, ep)[0] <= budget else (lo, mid)
    return lo


def plan(cfg: ModelConfig, s: Setup) -> MemoryPlan:
    """The per-rank memory of training `cfg` under `s`."""
    groups = param_groups(cfg)
    ep = expert_parallel_degree(cfg, s.gpus) if s.parallel == "fsdp+ep" else 1
    st = _static(cfg, groups, s, ep)
    peak, phase, parts, full = _peak(cfg, st, s, s.batch, s.activation_checkpointing, ep)
    tokens = s.batch * s.seq
    budget = s.gpu_mem_gib * GIB * (1 - s.headroom)
    return MemoryPlan(
        setup=asdict(s),
        params_total=groups.total,
        expert_parallel=ep,
        components=parts,
        activations_per_layer=full,
        activations_with_checkpointing=tokens * s.compute_bytes * cfg.hidden_size * cfg.num_hidden_layers
        + max(full),
        activations_without_checkpointing=sum(full),
        peak=peak,
        peak_phase=phase,
        budget=budget,
        fits=peak <= budget,
        max_batch=_max_batch(cfg, st, s, s.activation_checkpointing, ep, budget),
        max_batch_other=_max_batch(cfg, st, s, not s.activation_checkpointing, ep, budget),
        notes=_notes(cfg, groups, s, ep),
    )


def _notes(cfg: ModelConfig, groups: ParamGroups, s: Setup, ep: int) -> list[str]:
    notes = []
    stacks = next((g for g in groups.experts if g), [])
    if stacks and ep == 1 and stacks[0][0] % s.gpus:
        e, ranks = stacks[0][0], s.gpus
        if stack_split_dim(stacks[0], ranks) == 1:
            notes.append(
                f"the [{e}, ...] expert stacks are split on dim 1: {e} experts do not divide by {ranks} ranks"
            )
        else:
            share = math.ceil(e / ranks) / e
            notes.append(
                f"FSDP2 splits the [{e}, ...] expert stacks on dim 0 over {ranks} ranks (dim 1 does not divide "
                f"either): each rank allocates {share:.1%} of them, not {1 / ranks:.1%}"
            )
    return notes
