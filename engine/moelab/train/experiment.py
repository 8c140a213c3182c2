"""The experiment file `moelab run EXPERIMENT.json` reads: data, defaults, and a list of stages.

Stages run in order; each names the kind of work it does:

  dense    train the seed from scratch (`model`), or take `init` (a Hugging Face seed) as it is
           (steps 0) or continue training it
  branch   one run per domain in `domains` (default: all), each continuing from the seed on
           that domain only
  tune     UpIT's fine-tuning run: the seed continued on the mixture, keeping every checkpoint
           (one per `ckpt_every` steps); those checkpoints are method upit's experts
  upcycle  one MoE checkpoint per method in `methods`, from the seed and the branches
  moe      one training run per upcycled method, on the equal mixture of all domains
  eval     per-domain loss and perplexity of the seed, every branch and every MoE -> eval.json

Run ids are <name>-seed, <name>-branch-<domain>, <name>-tune, <name>-upcycle-<method>, <name>-moe-<method>,
<name>-eval; a stage's `name` replaces the part after "<name>-" (or "<name>-<part>-").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moelab.data.mixture import DataConfig
from moelab.errors import ConfigError
from moelab.launch.slurm_options import SlurmOptions  # [slurm] read by `moelab slurm`, not by the pipeline
from moelab.methods.api import METHODS
from moelab.models.config import ModelConfig
from moelab.train import jsoncfg
from moelab.train.config import FreezeGroup, Hyper, PerRouter, _help


@dataclass
class StageConfig:
    """One stage of the pipeline; training settings left out take the experiment's `defaults`."""

    kind: Literal["dense", "branch", "tune", "upcycle", "moe", "eval"]
    name: str = field(default="", metadata=_help("run id part (default: seed, branch, tune, upcycle, moe, eval)"))
    # dense
    model: ModelConfig | None = field(default=None, metadata=_help("dense: architecture of a seed trained from scratch"))
    init: str = field(default="", metadata=_help("dense: start from this checkpoint directory (a Hugging Face seed)"))
    # branch
    domains: list[str] = field(default_factory=list, metadata=_help("branch: one branch per domain (default: all)"))
    # upcycle (and moe: which upcycled methods to train; default all)
    methods: list[str] = field(default_factory=list, metadata=_help("upcycle / moe: methods (default: every upcycled one)"))
    num_experts: int | None = field(default=None, metadata=_help("upcycle: experts of `sparse` (default: as many as the others)"))
    top_k: int = 2
    attn_top_k: int = field(default=0, metadata=_help("BAM attention routing: 0 = soft mixture over all experts"))
    moe_layers: str = field(default="", metadata=_help(
        "all | every-other | comma-separated layer indices (default: every-other for sparse, all for the others)"))
    capacity_factor: float | None = field(default=None, metadata=_help(
        "upcycle: FFN expert capacity factor of the MoE (default 0 = dropless); moe: change it for training"))
    router_jitter_noise: float | None = field(default=None, metadata=_help(
        "upcycle: router jitter ε of the MoE (default 0 = off); moe: change it for training"))
    router_init: Literal["random", "hidden"] = "random"
    router_seed: int = 0
    keep_seed: bool = field(default=True, metadata=_help("the seed is one more expert (BAM's general-text expert)"))
    # upcycle, method upit (its experts are the tune stage's checkpoints)
    lora_rank: int = field(default=0, metadata=_help("upit: 0 = full FFN experts, r = rank-r LoRA experts"))
    dare_drop: float = field(default=0.5, metadata=_help("upit: DARE drop rate of merged experts"))
    router_samples: int = field(default=128, metadata=_help("upit: router pre-optimization seed-set windows"))
    router_steps: int = field(default=60, metadata=_help("upit: router pre-optimization steps"))
    # training overrides (dense, branch, moe)
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    load_balancing: PerRouter | None = None
    z_loss: PerRouter | None = None
    freeze: list[FreezeGroup] | None = None
    log_every: int | None = None
    eval_every: int | None = None
    eval_batches: int | None = None
    ckpt_every: int | None = None
    keep_last: int | None = None

    def hyper(self, defaults: Hyper) -> Hyper:
        values = {k: getattr(self, k) if getattr(self, k, None) is not None else getattr(defaults, k)
                  for k in Hyper.__dataclass_fields__}
        return Hyper(**values)


@dataclass
class ExperimentConfig:
    """A pipeline: seed -> branches -> upcycle with one or more methods -> MoE training -> eval."""

    name: str = field(default="experiment", metadata=_help("prefix of every run id"))
    out: str = field(default="runs", metadata=_help("directory of runs (relative to the experiment file)"))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = field(default=0, metadata=_help("model initialisation"))
    threads: int = field(default=0, metadata=_help("torch CPU threads; 0 = torch's default"))
    data: DataConfig = field(default_factory=DataConfig)
    defaults: Hyper = field(default_factory=Hyper)
    stages: list[StageConfig] = field(default_factory=list)
    slurm: SlurmOptions | None = field(  # [slurm]
        default=None, metadata=_help("resources for `moelab slurm script|submit` (ignored by `moelab run`)"))

    def validate(self) -> None:
        if not self.name or "/" in self.name or "\0" in self.name or self.name in (".", ".."):
            raise ConfigError(f"name: {self.name!r} is not a plain name")
        kinds = [s.kind for s in self.stages]
        if not kinds:
            raise ConfigError("stages: at least one stage is needed")
        domains = [s.domain for s in self.data.sources]
        for i, s in enumerate(self.stages):
            if kinds.count(s.kind) > 1:
                raise ConfigError(f"stages[{i}].kind: a second {s.kind!r} stage (one of each kind)")
            for j, d in enumerate(s.domains):
                if d not in domains:
                    raise ConfigError(f"stages[{i}].domains[{j}]: {d!r} is not a domain of data.sources ({', '.join(domains)})")
            for j, m in enumerate(s.methods):
                if m not in METHODS:
                    raise ConfigError(f"stages[{i}].methods[{j}]: {m!r} is not a method ({', '.join(METHODS)})")
            if s.kind == "dense" and s.model is not None and s.init:
                raise ConfigError(f"stages[{i}]: give `model` (from scratch) or `init` (a checkpoint), not both")
            if s.kind == "upcycle" and not s.methods:
                raise ConfigError(f"stages[{i}].methods: the upcycle stage needs at least one method")
        order = ["dense", "branch", "tune", "upcycle", "moe", "eval"]
        if kinds != sorted(kinds, key=order.index):
            raise ConfigError(f"stages: kinds must come in the order {' -> '.join(order)} (got {' -> '.join(kinds)})")
        if "dense" not in kinds:
            raise ConfigError("stages: a 'dense' stage (the seed: trained, or `init` with steps 0) is needed")
        if "moe" in kinds and "upcycle" not in kinds:
            raise ConfigError("stages: a 'moe' stage needs an 'upcycle' stage before it")
        moe, up = self.stage("moe"), self.stage("upcycle")
        if up is not None and "upit" in up.methods and "tune" not in kinds:
            raise ConfigError(f"stages[{self.stages.index(up)}].methods: upit needs a 'tune' stage (its "
                              "intermediate checkpoints are upit's experts)")
        if moe is not None and up is not None:
            i = self.stages.index(moe)
            for j, m in enumerate(moe.methods):
                if m not in up.methods:
                    raise ConfigError(f"stages[{i}].methods[{j}]: {m!r} is not upcycled by the upcycle stage")

    def stage(self, kind: str) -> StageConfig | None:
        return next((s for s in self.stages if s.kind == kind), None)


def load_experiment(path: Path) -> ExperimentConfig:
    path = Path(path)
    exp = jsoncfg.load_file(ExperimentConfig, path)
    exp.out = jsoncfg.beside(path.parent, exp.out)
    for s in exp.stages:
        s.init = jsoncfg.beside(path.parent, s.init) if s.init else s.init
    for src in exp.data.sources:
        src.path = jsoncfg.beside(path.parent, src.path) if src.path else src.path
    return exp
