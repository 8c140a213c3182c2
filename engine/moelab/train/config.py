"""The train config: what `moelab train CONFIG.json` reads (and what each pipeline stage builds).

Plain dataclasses; `moelab.train.jsoncfg` parses them strictly from JSON and generates
`schema/train.schema.json` from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moelab.data.mixture import DataConfig
from moelab.errors import ConfigError
from moelab.launch.slurm_options import SlurmOptions  # [slurm] read by `moelab slurm`, not by the trainer
from moelab.launch.threads import THREADS_HELP
from moelab.models.config import ModelConfig
from moelab.train import jsoncfg
from moelab.train.trackers import Logger


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# What a training run is (run.json's stage; the pipeline's tune and continued runs are dense or branch).
TrainStage = Literal["dense", "branch", "moe"]
# What `freeze` may list; moelab.train.freeze defines each group's parameters.
FreezeGroup = Literal["backbone", "experts", "attention", "routers"]


@dataclass
class PerRouter:
    """A coefficient per router kind: FFN routers and (BAM) attention routers."""

    ffn: float = 0.0
    attn: float = 0.0


@dataclass
class Hyper:
    """Optimisation and logging settings shared by every training stage."""

    steps: int = field(default=200, metadata=_help("optimizer steps"))
    batch_size: int = field(default=16, metadata=_help("sequences per micro-batch"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    lr: float = field(default=3e-3, metadata=_help("peak learning rate (AdamW)"))
    min_lr: float = field(default=3e-4, metadata=_help("learning rate at the end of the cosine decay"))
    warmup_steps: int = field(default=20, metadata=_help("linear warm-up from 0 to lr"))
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = field(default=1.0, metadata=_help("max global gradient norm; 0 = no clipping"))
    load_balancing: PerRouter = field(
        default_factory=lambda: PerRouter(ffn=0.01, attn=0.01),
        metadata=_help("load-balancing loss coefficient α per router kind (α·N·Σ fᵢPᵢ)"),
    )
    z_loss: PerRouter = field(
        default_factory=lambda: PerRouter(ffn=0.001, attn=0.001),
        metadata=_help("router z-loss coefficient β per router kind (β·mean logsumexp²)"),
    )
    freeze: list[FreezeGroup] = field(
        default_factory=list,
        metadata=_help(
            "parameters not trained: backbone (embeddings, norms, LM head, dense FFNs, non-expert attention), "
            "experts (FFN experts), attention (every attention weight but the router), routers"
        ),
    )
    log_every: int = field(default=10, metadata=_help("train metrics and routing every N steps"))
    eval_every: int = field(
        default=50, metadata=_help("per-domain evaluation every N steps (and at the end)")
    )
    eval_batches: int = field(default=4, metadata=_help("eval batches (of batch_size sequences) per domain"))
    ckpt_every: int = field(default=100, metadata=_help("checkpoint every N steps (and at the end)"))
    keep_last: int = field(default=2, metadata=_help("checkpoints kept (older ones are deleted)"))
    mixed_precision: Literal["auto", "bf16", "fp32"] = field(
        default="auto",
        metadata=_help(
            "compute dtype: bf16 computes in bfloat16 (FSDP: bf16 parameters gathered, fp32 gradient "
            "reduction and fp32 master weights); auto = bf16 on CUDA, fp32 on the CPU"
        ),
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata=_help(
            "recompute each decoder layer's activations in the backward pass (less memory, ~1/3 more compute)"
        ),
    )
    checkpoint_format: Literal["auto", "safetensors", "dcp"] = field(
        default="auto",
        metadata=_help(
            "safetensors: the full model gathered onto rank 0 (a loadable model directory); dcp: each rank "
            "writes its own shards (torch.distributed.checkpoint; resumes at any world size, `moelab export` "
            "makes safetensors); auto = dcp under FSDP with several ranks but the last checkpoint, the run's output"
        ),
    )
    async_checkpoint: bool = field(
        default=False,
        metadata=_help(
            "DCP checkpoints are written in the background with torch.distributed.checkpoint.async_save "
            "while training continues; `latest` moves only once every rank's shards are on disk"
        ),
    )
    compile: bool = field(
        default=False,
        metadata=_help("torch.compile each decoder layer (the first steps pay the compilation)"),
    )


HYPER_FIELDS = tuple(Hyper.__dataclass_fields__)


@dataclass
class TrainConfig(Hyper):
    """One training run: a dense seed from scratch, a branch of a checkpoint on some domains, or an MoE."""

    run_id: str = field(default="", metadata=_help("run directory name under `out` (required)"))
    out: str = field(default="runs", metadata=_help("directory of runs (relative to the config file)"))
    stage: TrainStage = "dense"
    method: str = field(default="", metadata=_help("upcycling method of an MoE run (for display)"))
    experiment: str = ""
    parents: list[str] = field(default_factory=list, metadata=_help("run ids this run starts from"))
    init: str = field(
        default="", metadata=_help("checkpoint directory to start from; empty = from scratch with `model`")
    )
    model: ModelConfig | None = field(
        default=None,
        metadata=_help("architecture of a model trained from scratch (default: the tiny byte-level seed)"),
    )
    capacity_factor: float | None = field(
        default=None,
        metadata=_help(
            "MoE: expert capacity factor for this run (0 = dropless); null = as the checkpoint says"
        ),
    )
    router_jitter_noise: float | None = field(
        default=None,
        metadata=_help(
            "MoE: router input × uniform(1-ε, 1+ε) while training (0 = off); null = as the checkpoint says"
        ),
    )
    data: DataConfig = field(default_factory=DataConfig)
    domains: list[str] = field(
        default_factory=list, metadata=_help("domains to train on (default: every source, by its weight)")
    )
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=_help("auto prefers CUDA"))
    seed: int = field(default=0, metadata=_help("model initialisation"))
    threads: int = field(default=0, metadata=_help(THREADS_HELP))
    parallel: Literal["ddp", "fsdp", "fsdp+ep"] = field(
        default="ddp",
        metadata=_help(
            "under torchrun: ddp replicates the model on every rank; fsdp shards parameters, gradients and "
            "optimizer state (models that do not fit one GPU); fsdp+ep also places each MoE layer's FFN "
            "experts on different ranks (E/W whole experts each, tokens sent to them by all-to-all; "
            "dropless, E divisible by the rank count). A single process always trains unsharded"
        ),
    )
    loggers: list[Logger] = field(
        default_factory=list,
        metadata=_help(
            "metric sinks beside metrics.jsonl, in the run directory: tensorboard (tensorboard/ event files), "
            "wandb (a W&B run with the run id, in wandb/); default none"
        ),
    )
    slurm: SlurmOptions | None = field(  # [slurm]
        default=None, metadata=_help("resources for `moelab slurm script|submit` (ignored by `moelab train`)")
    )

    def validate(self, where: str = "") -> None:
        p = f"{where}: " if where else ""
        if not self.run_id:
            raise ConfigError(f"{p}run_id: missing (required)")
        if "/" in self.run_id or "\0" in self.run_id or self.run_id in (".", ".."):
            raise ConfigError(f"{p}run_id: {self.run_id!r} is not a plain directory name")
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "log_every",
            "eval_every",
            "ckpt_every",
            "keep_last",
        ):
            if getattr(self, name) < 1 and not (name == "steps" and self.steps == 0):
                raise ConfigError(f"{p}{name}: must be at least 1")
        if self.data.seq_len < 2:
            raise ConfigError(f"{p}data.seq_len: must be at least 2")
        known = [s.domain for s in self.data.sources]
        for i, d in enumerate(self.domains):
            if d not in known:
                raise ConfigError(
                    f"{p}domains[{i}]: {d!r} is not a domain of data.sources ({', '.join(known)})"
                )
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError(f"{p}lr: must be positive")


def default_seed_model(parallel_block: bool = False) -> ModelConfig:
    """The tiny byte-level seed: d=128, 4 layers, 4 heads, SwiGLU 344."""
    # A parallel block is not expressible as model_type llama, so it is saved as moelab.
    return ModelConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        parallel_block=parallel_block,
        model_type="moelab" if parallel_block else "llama",
        eos_token_id=0,
    )


def load_train_config(path: Path) -> TrainConfig:
    path = Path(path)
    cfg = jsoncfg.load_file(TrainConfig, path)
    cfg.out = jsoncfg.beside(path.parent, cfg.out)
    cfg.init = jsoncfg.beside(path.parent, cfg.init) if cfg.init else cfg.init
    for s in cfg.data.sources:
        s.path = jsoncfg.beside(path.parent, s.path) if s.path else s.path
    return cfg
