"""The embedded default experiment (ARCHITECTURE.md §8): three synthetic domains, a tiny byte-level seed,
one branch per domain, every method upcycled from the same seed and branches (the seed kept as an
expert), each MoE trained on the same token budget, then per-domain perplexity of everything.

UpIT's experts are not the branches but the checkpoints of one fine-tuning run of the seed on the
mixture (the `tune` stage, a checkpoint every `ckpt_every` steps: three of them, expanded to four
experts by one genetic merge), and its routers are pre-optimized on a seed set of the three domains.

The method list is data: a method added here is trained and compared like the others.
"""

from __future__ import annotations

from moelab.data.mixture import DataConfig
from moelab.train.config import Hyper, PerRouter, default_seed_model
from moelab.train.experiment import ExperimentConfig, StageConfig

DEMO_METHODS: list[str] = ["sparse", "btx", "bam-ekv", "bam-skv", "upit"]


def demo_experiment(out: str = "runs", quick: bool = False, parallel_block: bool = False,
                    methods: list[str] | None = None, name: str = "demo") -> ExperimentConfig:
    methods = list(methods or DEMO_METHODS)
    if quick:
        # Seconds, not minutes: enough steps to exercise every stage, not to learn much.
        model = default_seed_model(parallel_block)
        model.hidden_size, model.intermediate_size, model.num_hidden_layers = 64, 172, 2
        model.num_attention_heads = model.num_key_value_heads = 2
        model.head_dim = 32
        data = DataConfig(seq_len=64, synthetic_train_chars=120_000, synthetic_eval_chars=12_000)
        defaults = Hyper(steps=40, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=5, log_every=5,
                         eval_every=20, eval_batches=2, ckpt_every=20, keep_last=1)
        seed_steps, branch_steps, moe_steps = 60, 15, 15
        tune_steps, tune_every, router_samples, router_steps = 15, 5, 24, 5
    else:
        model = default_seed_model(parallel_block)
        data = DataConfig(seq_len=128, synthetic_train_chars=1_000_000, synthetic_eval_chars=65_536)
        defaults = Hyper(steps=200, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=20, log_every=10,
                         eval_every=50, eval_batches=4, ckpt_every=50, keep_last=1)
        # Sized so that the five MoEs, the UpIT fine-tuning run and the seed fit in about ten
        # CPU-minutes (DEMO_RESULTS.md has the timings).
        seed_steps, branch_steps, moe_steps = 400, 120, 110
        tune_steps, tune_every, router_samples, router_steps = 120, 40, 96, 40
    aux = {"load_balancing": PerRouter(ffn=0.01, attn=0.01), "z_loss": PerRouter(ffn=0.001, attn=0.001)}
    stages = [
        StageConfig(kind="dense", model=model, steps=seed_steps),
        # Branches continue the seed at a lower peak LR, as continued pre-training does.
        StageConfig(kind="branch", steps=branch_steps, lr=defaults.lr / 2, warmup_steps=defaults.warmup_steps // 2),
        *([StageConfig(kind="tune", steps=tune_steps, ckpt_every=tune_every, lr=defaults.lr / 2,
                       warmup_steps=defaults.warmup_steps // 2)] if "upit" in methods else []),
        StageConfig(kind="upcycle", methods=methods, top_k=2, keep_seed=True, router_samples=router_samples,
                    router_steps=router_steps),
        # Every MoE gets the same steps × batch × seq_len: the same token budget.
        StageConfig(kind="moe", steps=moe_steps, lr=defaults.lr / 2, warmup_steps=defaults.warmup_steps // 2, **aux),
        StageConfig(kind="eval"),
    ]
    return ExperimentConfig(name=name, out=out, device="auto", seed=0, threads=0, data=data,
                            defaults=defaults, stages=stages)
