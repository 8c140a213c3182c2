"""models/flops.py against what torch actually executes: torch.utils.flop_counter.FlopCounterMode
counts the matmuls and attention of a forward (and backward) of the engine's own tiny models."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from moelab.errors import ConfigError
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.ffn import Experts
from moelab.models.flops import TRAIN_MULTIPLIER, Convention, forward_flops, train_flops
from moelab.models.model import MoELabForCausalLM

B, T = 2, 12


def _cfg(moe: MoEConfig | None = None, **kw) -> ModelConfig:
    base = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        model_type="moelab" if moe else "llama",
        moe=moe,
    )
    return ModelConfig(**(base | kw))


CASES = {
    "dense": _cfg(),
    "dense-tied-parallel": _cfg(tie_word_embeddings=True, parallel_block=True, attention_bias=False),
    "btx": _cfg(MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1, 2], method="btx")),
    "sparse-every-other": _cfg(MoEConfig(num_experts=4, top_k=1, moe_layers=[1], method="sparse")),
    "bam-ekv-soft": _cfg(
        MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 2], attn_experts=True, method="bam-ekv")
    ),
    "bam-skv-soft": _cfg(
        MoEConfig(
            num_experts=3, top_k=1, moe_layers=[0, 1, 2], attn_experts=True, shared_kv=True, method="bam-skv"
        )
    ),
    "upit-lora": _cfg(MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1, 2], lora_rank=4, method="upit")),
    "bam-ekv-top1": _cfg(
        MoEConfig(
            num_experts=3, top_k=1, moe_layers=[0, 1, 2], attn_experts=True, attn_top_k=1, method="bam-ekv"
        )
    ),
    "bam-skv-top2": _cfg(
        MoEConfig(
            num_experts=4,
            top_k=1,
            moe_layers=[1, 2],
            attn_experts=True,
            attn_top_k=2,
            shared_kv=True,
            method="bam-skv",
        )
    ),
}


def _model(cfg: ModelConfig) -> MoELabForCausalLM:
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    for m in model.modules():
        if isinstance(m, Experts):
            # The loop runs the routed tokens through plain matmuls, which FlopCounterMode knows;
            # the grouped path's torch._grouped_mm has no FLOP formula there (all paths compute
            # the same, tests/test_fast_paths.py).
            m.implementation = "loop"
    return model


def _batch(cfg: ModelConfig) -> int:
    # Top-k attention packs each expert's routed queries per batch row and pads the rows to the
    # longest: one row executes exactly the routed tokens, more rows add padding work.
    return 1 if cfg.moe and 0 < cfg.moe.attn_top_k < cfg.moe.num_experts else B


def _counted(model: MoELabForCausalLM, backward: bool = False) -> int:
    ids = torch.randint(
        0, model.config.vocab_size, (_batch(model.config), T), generator=torch.Generator().manual_seed(1)
    )
    # The math SDPA backend runs QKᵀ and A·V as bmm's over the full T×T (the causal mask is
    # applied, not skipped): the "full" convention. CPU's fused kernel has no FLOP formula.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        out = model(ids)
        if backward:
            out.logits.float().pow(2).mean().backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("name", list(CASES))
def test_forward_count_matches_flop_counter(name):
    cfg = CASES[name]
    predicted = forward_flops(cfg, Convention(seq_len=T, attention="full")).total * _batch(cfg) * T
    assert _counted(_model(cfg)) == predicted


@pytest.mark.parametrize("name", ["dense", "btx", "bam-skv-soft", "bam-ekv-top1"])
def test_training_step_is_three_forwards(name):
    """Backward = 2× forward for every matmul (input and weight gradients) and for attention."""
    cfg = CASES[name]
    fwd = forward_flops(cfg, Convention(seq_len=T, attention="full")).total * _batch(cfg) * T
    assert _counted(_model(cfg), backward=True) == TRAIN_MULTIPLIER * fwd


def test_causal_and_units():
    cfg = CASES["bam-ekv-soft"]
    full = forward_flops(cfg, Convention(seq_len=T, attention="full"))
    causal = forward_flops(cfg, Convention(seq_len=T, attention="causal"))
    none = forward_flops(cfg, Convention(seq_len=T, attention="none", unit="mac", lm_head=False))
    scores_full = sum(p["attn_scores"] for p in full.per_layer)
    scores_causal = sum(p["attn_scores"] for p in causal.per_layer)
    assert scores_causal == pytest.approx(scores_full * (T + 1) / (2 * T))  # mean keys (T+1)/2 of T
    assert none.lm_head == 0 and all(p["attn_scores"] == 0 for p in none.per_layer)
    assert 2 * none.total == pytest.approx(full.total - scores_full - full.lm_head)
    assert train_flops(cfg, B, T) == TRAIN_MULTIPLIER * causal.total * B * T


def test_bad_convention_one_line():
    with pytest.raises(ConfigError, match="attention 'half'"):
        Convention(attention="half")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seq_len 0"):
        Convention(seq_len=0)
