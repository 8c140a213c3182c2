"""MoE blocks against transformers: Mixtral logits and router logits, aux losses."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import VOCAB, base_config, hf_logits, input_ids, randomize

from moelab import load_model
from moelab.models.aux_losses import load_balancing_loss, z_loss
from moelab.models.routing import RouterLogits


def _mixtral(n: int, k: int, seed: int = 0):
    import transformers

    cfg = transformers.MixtralConfig(**base_config(num_local_experts=n, num_experts_per_tok=k))
    model = transformers.MixtralForCausalLM(cfg).eval()
    randomize(model, seed)
    return model


@pytest.mark.parametrize("n,k", [(4, 1), (4, 2), (3, 3), (8, 2)])
def test_mixtral_logits_and_router_logits(tmp_path, n, k):
    hf = _mixtral(n, k, seed=n + k)
    hf.save_pretrained(tmp_path / "m")
    ours = load_model(tmp_path / "m")
    ids = input_ids(t=13)
    torch.testing.assert_close(ours(ids).logits, hf_logits(hf, ids), atol=1e-4, rtol=0)
    with torch.no_grad():
        hf_out = hf(input_ids=ids, output_router_logits=True)
        our_out = ours(ids)
    assert [r.kind for r in our_out.router_logits] == ["ffn"] * 2
    for ref, r in zip(hf_out.router_logits, our_out.router_logits):
        torch.testing.assert_close(r.logits, ref.reshape(r.logits.shape), atol=1e-5, rtol=0)


def test_load_balancing_matches_transformers():
    """transformers sums the per-choice token fractions over the k choices (k for a balanced
    router); ours averages them (1 for a balanced router): ours · k equals theirs."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    g = torch.Generator().manual_seed(0)
    for n, k in [(4, 1), (4, 2), (6, 3)]:
        logits = torch.randn(50, n, generator=g)
        ours = load_balancing_loss(RouterLogits(0, "ffn", logits, k))
        theirs = load_balancing_loss_func((logits,), n, k)
        torch.testing.assert_close(ours * k, theirs, atol=1e-6, rtol=0)


def test_load_balancing_by_hand():
    # 4 tokens, 2 experts, top-1: tokens 0-2 pick expert 0, token 3 expert 1.
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 3.0]])
    p = torch.softmax(logits, -1).mean(0)
    f = torch.tensor([0.75, 0.25])
    expected = 2 * (f * p).sum()
    torch.testing.assert_close(load_balancing_loss(RouterLogits(0, "ffn", logits, 1)), expected)
    # A perfectly balanced uniform router scores exactly 1.
    uniform = RouterLogits(0, "ffn", torch.tensor([[0.0, 0.0], [0.0, 0.0]]), 1)
    uniform.logits[1, 1] += 1e-6  # ties broken so each expert gets one token
    torch.testing.assert_close(load_balancing_loss(uniform), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_soft_router_counts_top1():
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    p = torch.softmax(logits, -1).mean(0)
    expected = 3 * p[1]  # every token's top-1 is expert 1
    torch.testing.assert_close(load_balancing_loss(RouterLogits(0, "attn", logits, 0)), expected)


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    lse = torch.tensor(
        [
            torch.log(torch.tensor(2.0)),
            torch.log(torch.exp(torch.tensor(1.0)) + torch.exp(torch.tensor(-1.0))),
        ]
    )
    torch.testing.assert_close(z_loss(RouterLogits(0, "ffn", logits, 2)), (lse**2).mean())


def test_every_router_is_exposed_bam(tmp_path):
    """A BAM model exposes one attention and one FFN router per MoE layer, and aux losses are finite."""
    from moelab.io.checkpoint import save_model
    from moelab.models.config import ModelConfig, MoEConfig
    from moelab.models.model import MoELabForCausalLM

    cfg = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        model_type="moelab",
        moe=MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 2], attn_experts=True),
    )
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    out = model(input_ids())
    assert [(r.layer, r.kind) for r in out.router_logits] == [
        (0, "attn"),
        (0, "ffn"),
        (2, "attn"),
        (2, "ffn"),
    ]
    for r in out.router_logits:
        assert torch.isfinite(load_balancing_loss(r)) and torch.isfinite(z_loss(r))
    save_model(model, tmp_path)
    torch.testing.assert_close(
        load_model(tmp_path)(input_ids()).logits, out.logits.detach(), atol=1e-5, rtol=0
    )
