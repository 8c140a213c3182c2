"""The embedded default experiment (ARCHITECTURE.md §8): three synthetic domains, a tiny byte-level seed,
one branch per domain, every method upcycled from the same seed and branches (the seed kept as an
expert), each MoE trained on the same token budget, then per-domain perplexity of everything.

UpIT's experts are not the branches but the checkpoints of one fine-tuning run of the seed on the
mixture (the `tune` stage, a checkpoint every `ckpt_every` steps: three of them, expanded to four
experts by one genetic merge), and its routers are pre-optimized on a seed set of the three domains.

Beside the methods, the study's controls (README.md, "How methods are compared"):
- `dense-continued`: the seed continued on the mixture for as many tokens as a BTX or BAM MoE
  spent after the seed (the three branch runs plus one MoE training run): "is it just more training?"
- `btx-compute`: BTX trained until it has executed bam-ekv's training FLOPs (equal compute; the
  methods themselves are compared at equal tokens),
- `bam-ekv-attn-top2`, `bam-ekv-attn-top1`: BAM expert-KV with top-2 and top-1 attention routing,
  the BAM paper's attention-routing ablation (bam-ekv itself is the soft row).

The method list is data: a method added here is trained and compared like the others.
"""

from __future__ import annotations

from moelab.data.mixture import DataConfig
from moelab.train.config import Hyper, PerRouter, default_seed_model
from moelab.train.experiment import ExperimentConfig, StageConfig, Variant

DEMO_METHODS: list[str] = ["sparse", "btx", "bam-ekv", "bam-skv", "upit"]
# The MoEs of the study beyond the methods: name -> what it is (the controls above).
ATTN_ABLATION: list[Variant] = [
    Variant(name="bam-ekv-attn-top2", method="bam-ekv", attn_top_k=2),
    Variant(name="bam-ekv-attn-top1", method="bam-ekv", attn_top_k=1),
]
BTX_COMPUTE = Variant(name="btx-compute", method="btx", match_flops_of="bam-ekv")


def study_variants(methods: list[str]) -> list[Variant]:
    """The controls that apply to `methods`: each needs the methods it is a variant of."""
    out = [v for v in ATTN_ABLATION if "bam-ekv" in methods]
    return out + ([BTX_COMPUTE] if {"btx", "bam-ekv"} <= set(methods) else [])


def demo_experiment(
    out: str = "runs",
    quick: bool = False,
    parallel_block: bool = False,
    methods: list[str] | None = None,
    name: str = "demo",
    controls: bool = True,
) -> ExperimentConfig:
    """The demo's pipeline; `controls` adds the study's dense-continued, btx-compute and
    attention-routing runs (see the module docstring)."""
    methods = list(methods or DEMO_METHODS)
    if quick:
        # Seconds, not minutes: enough steps to exercise every stage, not to learn much.
        model = default_seed_model(parallel_block)
        model.hidden_size, model.intermediate_size, model.num_hidden_layers = 64, 172, 2
        model.num_attention_heads = model.num_key_value_heads = 2
        model.head_dim = 32
        data = DataConfig(seq_len=64, synthetic_train_chars=120_000, synthetic_eval_chars=12_000)
        defaults = Hyper(
            steps=40,
            batch_size=8,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=5,
            log_every=5,
            eval_every=20,
            eval_batches=2,
            ckpt_every=20,
            keep_last=1,
        )
        seed_steps, branch_steps, moe_steps = 60, 15, 15
        tune_steps, tune_every, router_min_samples, router_steps = 15, 5, 24, 5
    else:
        model = default_seed_model(parallel_block)
        data = DataConfig(seq_len=128, synthetic_train_chars=1_000_000, synthetic_eval_chars=65_536)
        defaults = Hyper(
            steps=200,
            batch_size=16,
            lr=3e-3,
            min_lr=3e-4,
            warmup_steps=20,
            log_every=10,
            eval_every=50,
            eval_batches=4,
            ckpt_every=50,
            keep_last=1,
        )
        # Sized so that one seed of the study (five methods, three controls, two ablation rows)
        # stays within ten minutes on two CPU cores (DEMO_RESULTS.md has the timings).
        seed_steps, branch_steps, moe_steps = 300, 80, 70
        tune_steps, tune_every, router_min_samples, router_steps = 75, 25, 96, 40
    half_lr, half_warmup = defaults.lr / 2, defaults.warmup_steps // 2
    stages = [
        StageConfig(kind="dense", model=model, steps=seed_steps),
        # Branches continue the seed at a lower peak LR, as continued pre-training does.
        StageConfig(kind="branch", steps=branch_steps, lr=half_lr, warmup_steps=half_warmup),
        *(
            [
                StageConfig(
                    kind="tune", steps=tune_steps, ckpt_every=tune_every, lr=half_lr, warmup_steps=half_warmup
                )
            ]
            if "upit" in methods
            else []
        ),
        # Its steps follow from the branches and the MoE stage (as many tokens as a BTX/BAM MoE after the seed).
        *([StageConfig(kind="continued", lr=half_lr, warmup_steps=half_warmup)] if controls else []),
        StageConfig(
            kind="upcycle",
            methods=methods,
            top_k=2,
            keep_seed=True,
            router_min_samples=router_min_samples,
            router_steps=router_steps,
            variants=study_variants(methods) if controls else [],
        ),
        # Every MoE gets the same steps × batch × seq_len (the same token budget), except btx-compute.
        StageConfig(
            kind="moe",
            steps=moe_steps,
            lr=half_lr,
            warmup_steps=half_warmup,
            load_balancing=PerRouter(ffn=0.01, attn=0.01),
            z_loss=PerRouter(ffn=0.001, attn=0.001),
        ),
        StageConfig(kind="eval"),
    ]
    return ExperimentConfig(
        name=name, out=out, device="auto", seed=0, threads=0, data=data, defaults=defaults, stages=stages
    )


def attention_ablation_experiment(out: str = "../runs") -> ExperimentConfig:
    """The BAM paper's attention-routing ablation as one experiment (examples/attention-routing.moelab.json):
    the study's pipeline for bam-ekv alone, in BAM's parallel-block setting, soft / top-2 / top-1."""
    exp = demo_experiment(
        out, parallel_block=True, methods=["bam-ekv"], controls=False, name="attention-routing"
    )
    up = exp.stage("upcycle")
    assert up is not None
    up.variants = list(ATTN_ABLATION)
    return exp
