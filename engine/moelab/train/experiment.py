"""The experiment file `moelab run EXPERIMENT.json` reads: data, defaults, and a list of stages.

Stages run in order; each names the kind of work it does:

  dense    train the seed from scratch (`model`), or take `init` (a Hugging Face seed) as it is
           (steps 0) or continue training it
  branch   one run per domain in `domains` (default: all), each continuing from the seed on
           that domain only
  tune     UpIT's fine-tuning run: the seed continued on the mixture, keeping every checkpoint
           (one per `ckpt_every` steps); those checkpoints are method upit's experts
  continued  the "is it just more training?" baseline: the seed continued on the mixture for as
           many tokens as the branches plus one MoE training run (unless `steps` is given)
  upcycle  one MoE checkpoint per method in `methods`, from the seed and the branches, and one per
           entry of `variants` (a method with other settings, under its own name)
  moe      one training run per upcycled method or variant, on the equal mixture of all domains; a
           variant with `match_flops_of` trains until it has executed that MoE's training FLOPs
  eval     per-domain loss and perplexity of the seed, every branch and every MoE, and the scores of
           the lm-eval `tasks` -> eval.json

Run ids are <name>-seed, <name>-branch-<domain>, <name>-tune, <name>-dense-continued,
<name>-upcycle-<method or variant>, <name>-moe-<method or variant>, <name>-eval; a stage's `name`
replaces the part after "<name>-" (or "<name>-<part>-").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moelab.data.mixture import DataConfig
from moelab.errors import ConfigError
from moelab.launch.slurm_options import SlurmOptions  # [slurm] read by `moelab slurm`, not by the pipeline
from moelab.launch.threads import THREADS_HELP
from moelab.methods.api import METHODS, Method, RouterInit
from moelab.models.config import ModelConfig
from moelab.models.routing import RouterWeights
from moelab.train import jsoncfg
from moelab.train.config import FreezeGroup, Hyper, PerRouter, _help
from moelab.train.harness import HarnessConfig
from moelab.train.trackers import Logger

# The stages, in the order they run (module docstring).
StageKind = Literal["dense", "branch", "tune", "continued", "upcycle", "moe", "eval"]


@dataclass
class Variant:
    """One more MoE of a method, under its own name: other upcycle settings (the attention-routing
    ablation) or another training budget (BTX trained for as many FLOPs as BAM)."""

    name: str = field(metadata=_help("label and run id part, e.g. bam-ekv-attn-top1"))
    method: Method = field(metadata=_help("the upcycling method"))
    attn_top_k: int | None = field(
        default=None,
        metadata=_help("BAM attention routing of this variant: 0 = soft, k = top-k (default: the stage's)"),
    )
    match_flops_of: str = field(
        default="",
        metadata=_help(
            "train until this MoE's executed training FLOPs are spent (steps x its FLOPs/token ratio)"
        ),
    )


@dataclass
class StageConfig:
    """One stage of the pipeline; training settings left out take the experiment's `defaults`."""

    kind: StageKind
    name: str = field(
        default="",
        metadata=_help("run id part (default: seed, branch, tune, dense-continued, upcycle, moe, eval)"),
    )
    # dense
    model: ModelConfig | None = field(
        default=None, metadata=_help("dense: architecture of a seed trained from scratch")
    )
    init: str = field(
        default="", metadata=_help("dense: start from this checkpoint directory (a Hugging Face seed)")
    )
    # branch
    domains: list[str] = field(
        default_factory=list, metadata=_help("branch: one branch per domain (default: all)")
    )
    # upcycle (and moe: which upcycled methods to train; default all)
    methods: list[str] = field(
        default_factory=list, metadata=_help("upcycle / moe: methods (default: every upcycled one)")
    )
    num_experts: int | None = field(
        default=None, metadata=_help("upcycle: experts of `sparse` (default: as many as the others)")
    )
    top_k: int = 2
    attn_top_k: int = field(
        default=0, metadata=_help("BAM attention routing: 0 = soft mixture over all experts")
    )
    moe_layers: str = field(
        default="",
        metadata=_help(
            "all | every-other | comma-separated layer indices (default: every-other for sparse, all for the others)"
        ),
    )
    capacity_factor: float | None = field(
        default=None,
        metadata=_help(
            "upcycle: FFN expert capacity factor of the MoE (default 0 = dropless); moe: change it for training"
        ),
    )
    router_jitter_noise: float | None = field(
        default=None,
        metadata=_help("upcycle: router jitter ε of the MoE (default 0 = off); moe: change it for training"),
    )
    router_weights: RouterWeights = field(
        default="st",
        metadata=_help(
            "upcycle: top-k weights: st = renormalised with the kept probabilities' gradient (routers learn at k=1), "
            "renorm = Mixtral's, raw = Switch's"
        ),
    )
    router_init: RouterInit = "random"
    router_seed: int = 0
    variants: list[Variant] = field(
        default_factory=list,
        metadata=_help(
            "upcycle: more MoEs of a method under their own names (ablations, compute-matched baselines)"
        ),
    )
    keep_seed: bool = field(
        default=True, metadata=_help("the seed is one more expert (BAM's general-text expert)")
    )
    # upcycle, method upit (its experts are the tune stage's checkpoints)
    lora_rank: int = field(default=0, metadata=_help("upit: 0 = full FFN experts, r = rank-r LoRA experts"))
    dare_drop: float = field(default=0.5, metadata=_help("upit: DARE drop rate of merged experts"))
    lora_freeze_backbone: bool = field(
        default=False,
        metadata=_help(
            "upit with lora_rank > 0: the moe stage trains upit's MoE with the backbone frozen (`freeze`: "
            "only the LoRA experts and the routers learn, as in the paper's LoRA setting)"
        ),
    )
    router_fraction: float = field(
        default=0.01,
        metadata=_help(
            "upit: router pre-optimization seed set, this fraction of the tuning data's windows (the paper: 1%)"
        ),
    )
    router_min_samples: int = field(
        default=32, metadata=_help("upit: ...but at least this many seed-set windows")
    )
    router_steps: int = field(default=60, metadata=_help("upit: router pre-optimization steps"))
    # eval: lm-evaluation-harness tasks besides the per-domain perplexity
    tasks: list[str] = field(
        default_factory=list,
        metadata=_help(
            "eval: lm-eval task names scored on every model with a Hugging Face tokenizer (default: none)"
        ),
    )
    num_fewshot: int | None = field(
        default=None, metadata=_help("eval: lm-eval few-shot examples (default: each task's)")
    )
    limit: float | None = field(
        default=None, metadata=_help("eval: lm-eval documents per task (a fraction if < 1)")
    )
    include_path: str = field(
        default="", metadata=_help("eval: a directory of your own lm-eval task YAML files")
    )
    # training overrides (dense, branch, tune, continued, moe)
    steps: int | None = field(
        default=None,
        metadata=_help("optimizer steps (continued: default = the tokens of the branches plus one MoE run)"),
    )
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

    def labels(self) -> list[str]:
        """upcycle: every MoE this stage makes, methods first, then variants."""
        return [*self.methods, *(v.name for v in self.variants)]

    def variant(self, label: str) -> Variant:
        """upcycle: the method or variant called `label` (a method is a variant of itself)."""
        found = next((v for v in self.variants if v.name == label), None)
        if found is not None:
            return found
        if label in METHODS:
            return Variant(name=label, method=label)
        raise ConfigError(f"{label!r} is not a method or variant of the upcycle stage")

    def harness(self, batch_size: int) -> HarnessConfig:
        return HarnessConfig(
            tasks=list(self.tasks),
            num_fewshot=self.num_fewshot,
            limit=self.limit,
            batch_size=max(1, batch_size),
            include_path=self.include_path,
        )

    def hyper(self, defaults: Hyper) -> Hyper:
        values = {
            k: getattr(self, k) if getattr(self, k, None) is not None else getattr(defaults, k)
            for k in Hyper.__dataclass_fields__
        }
        return Hyper(**values)


@dataclass
class ExperimentConfig:
    """A pipeline: seed -> branches -> upcycle with one or more methods -> MoE training -> eval."""

    name: str = field(default="experiment", metadata=_help("prefix of every run id"))
    out: str = field(default="runs", metadata=_help("directory of runs (relative to the experiment file)"))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = field(default=0, metadata=_help("model initialisation"))
    threads: int = field(default=0, metadata=_help(THREADS_HELP))
    loggers: list[Logger] = field(
        default_factory=list,
        metadata=_help(
            "metric sinks of every training run beside metrics.jsonl: tensorboard, wandb (default none)"
        ),
    )
    data: DataConfig = field(default_factory=DataConfig)
    defaults: Hyper = field(default_factory=Hyper)
    stages: list[StageConfig] = field(default_factory=list)
    slurm: SlurmOptions | None = field(  # [slurm]
        default=None, metadata=_help("resources for `moelab slurm script|submit` (ignored by `moelab run`)")
    )

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
                    raise ConfigError(
                        f"stages[{i}].domains[{j}]: {d!r} is not a domain of data.sources ({', '.join(domains)})"
                    )
            for j, m in enumerate(
                s.methods if s.kind != "moe" else []
            ):  # moe's: checked against upcycle's below
                if m not in METHODS:
                    raise ConfigError(
                        f"stages[{i}].methods[{j}]: {m!r} is not a method ({', '.join(METHODS)})"
                    )
            if s.kind == "dense" and s.model is not None and s.init:
                raise ConfigError(
                    f"stages[{i}]: give `model` (from scratch) or `init` (a checkpoint), not both"
                )
            if s.tasks:
                if s.kind != "eval":
                    raise ConfigError(f"stages[{i}].tasks: only the eval stage runs lm-eval tasks")
                s.harness(0).validate(f"stages[{i}]")
            if s.kind == "upcycle" and not s.methods:
                raise ConfigError(f"stages[{i}].methods: the upcycle stage needs at least one method")
            self._validate_variants(i, s)
        order = ["dense", "branch", "tune", "continued", "upcycle", "moe", "eval"]
        if kinds != sorted(kinds, key=order.index):
            raise ConfigError(
                f"stages: kinds must come in the order {' -> '.join(order)} (got {' -> '.join(kinds)})"
            )
        if "dense" not in kinds:
            raise ConfigError("stages: a 'dense' stage (the seed: trained, or `init` with steps 0) is needed")
        if "moe" in kinds and "upcycle" not in kinds:
            raise ConfigError("stages: a 'moe' stage needs an 'upcycle' stage before it")
        moe, up = self.stage("moe"), self.stage("upcycle")
        if up is not None and up.lora_freeze_backbone and not up.lora_rank:
            raise ConfigError(
                f"stages[{self.stages.index(up)}].lora_freeze_backbone: needs lora_rank > 0 (UpIT's "
                "LoRA experts; full experts would train the whole FFN anyway)"
            )
        if (
            up is not None
            and any(up.variant(x).method == "upit" for x in up.labels())
            and "tune" not in kinds
        ):
            raise ConfigError(
                f"stages[{self.stages.index(up)}].methods: upit needs a 'tune' stage (its "
                "intermediate checkpoints are upit's experts)"
            )
        if moe is not None and up is not None:
            i = self.stages.index(moe)
            labels = up.labels()
            for j, m in enumerate(moe.methods):
                if m not in labels:
                    raise ConfigError(f"stages[{i}].methods[{j}]: {m!r} is not upcycled by the upcycle stage")
        cont = self.stage("continued")
        if cont is not None and cont.steps is None and "branch" not in kinds and "moe" not in kinds:
            raise ConfigError(
                "stages: a 'continued' stage without `steps` matches the tokens of the branch "
                "and moe stages; give `steps` or add them"
            )

    @staticmethod
    def _validate_variants(i: int, s: StageConfig) -> None:
        if s.variants and s.kind != "upcycle":
            raise ConfigError(f"stages[{i}].variants: only the upcycle stage has variants")
        names = list(s.methods)
        for j, v in enumerate(s.variants):
            where = f"stages[{i}].variants[{j}]"
            if not v.name or "/" in v.name or v.name in names:
                raise ConfigError(f"{where}.name: {v.name!r} is empty, not a plain name or already used")
            names.append(v.name)
            if v.match_flops_of and (v.match_flops_of == v.name or v.match_flops_of not in s.labels()):
                raise ConfigError(
                    f"{where}.match_flops_of: {v.match_flops_of!r} is not a method or variant of this stage"
                )
            if v.attn_top_k is not None and v.attn_top_k < 0:
                raise ConfigError(f"{where}.attn_top_k: must be 0 (soft) or a positive k, got {v.attn_top_k}")

    def stage(self, kind: StageKind) -> StageConfig | None:
        return next((s for s in self.stages if s.kind == kind), None)


def load_experiment(path: Path) -> ExperimentConfig:
    path = Path(path)
    exp = jsoncfg.load_file(ExperimentConfig, path)
    exp.out = jsoncfg.beside(path.parent, exp.out)
    for s in exp.stages:
        s.init = jsoncfg.beside(path.parent, s.init) if s.init else s.init
        s.include_path = jsoncfg.beside(path.parent, s.include_path) if s.include_path else s.include_path
    for src in exp.data.sources:
        src.path = jsoncfg.beside(path.parent, src.path) if src.path else src.path
    return exp
