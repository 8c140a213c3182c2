"""ARCHITECTURE §2: every router learns from the language-model loss at every k, and top-k attention
runs only the experts it selects.

The gradient checks use the next-token loss alone (no auxiliary loss): at top-1, Mixtral's
renormalised weight is the constant 1, so its router gets nothing from that loss; the engine's
default rule ("st") keeps the renormalised forward value and passes the kept probability's
gradient. The executed-FLOPs check counts with PyTorch's own FlopCounterMode.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from moelab.models.attention import ExpertAttention
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM
from moelab.models.rope import RotaryEmbedding


def _cfg(top_k: int, attn_top_k: int, shared_kv: bool = False, rule: str = "st", n: int = 4) -> ModelConfig:
    return ModelConfig(
        vocab_size=61,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        moe=MoEConfig(
            num_experts=n,
            top_k=top_k,
            moe_layers=[0, 1],
            attn_experts=True,
            attn_top_k=attn_top_k,
            shared_kv=shared_kv,
            router_weights=rule,
        ),
    )


def _router_grads(cfg: ModelConfig) -> dict[str, float]:
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    logits = model(ids[:, :-1]).logits
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()
    grads = {"ffn": 0.0, "attn": 0.0}
    for name, p in model.named_parameters():
        kind = (
            "ffn"
            if name.endswith("block_sparse_moe.gate.weight")
            else "attn"
            if name.endswith("self_attn.router.weight")
            else None
        )
        if kind:
            grads[kind] = max(grads[kind], p.grad.abs().max().item() if p.grad is not None else 0.0)
    return grads


@pytest.mark.parametrize("shared_kv", [False, True])
@pytest.mark.parametrize("k", [1, 2, 0])  # 0 = soft attention mixture (FFN then top-2)
def test_lm_loss_reaches_every_router(k, shared_kv):
    grads = _router_grads(_cfg(top_k=k or 2, attn_top_k=k, shared_kv=shared_kv))
    assert grads["ffn"] > 1e-5, grads
    assert grads["attn"] > 1e-5, grads


def test_renormalised_top1_alone_starves_the_router():
    """The reason for the rule: with Mixtral's renormalisation at k = 1 the LM loss gives the router
    (FFN and attention) no gradient at all."""
    grads = _router_grads(_cfg(top_k=1, attn_top_k=1, rule="renorm"))
    assert grads["ffn"] < 1e-9 and grads["attn"] < 1e-9, grads


@pytest.mark.parametrize("shared_kv", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_routed_attention_computes_the_weighted_mixture(k, shared_kv):
    """The executed top-k path equals every expert run and weighted by the sparse top-k weights
    (experts left out weigh 0), forward and backward."""
    cfg = _cfg(top_k=2, attn_top_k=k, shared_kv=shared_kv)
    torch.manual_seed(3)
    attn = ExpertAttention(cfg, 0)
    with torch.no_grad():
        attn.router.weight.mul_(40)  # spread the routing so every expert gets some tokens
    cos, sin = RotaryEmbedding(cfg)(19, torch.device("cpu"), torch.float32)
    x = torch.randn(3, 19, cfg.hidden_size, requires_grad=True)
    logits = attn.router(x).reshape(-1, cfg.moe.num_experts)
    k_, v_ = attn._keys_values(x, cos, sin)
    routed = attn._routed(x, logits, k_, v_, cos, sin)
    dense = attn._soft(
        x, logits, k_, v_, cos, sin
    )  # with top_k set, _soft weights every expert (zeros included)
    torch.testing.assert_close(routed, dense, atol=1e-5, rtol=0)
    g = torch.randn_like(routed)
    got = torch.autograd.grad(routed, [x, attn.experts.q_proj, attn.router.weight], g, retain_graph=True)
    want = torch.autograd.grad(dense, [x, attn.experts.q_proj, attn.router.weight], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shared_kv", [False, True])
def test_top_k_attention_executes_fewer_flops(shared_kv):
    def flops(attn_top_k: int) -> int:
        cfg = _cfg(top_k=2, attn_top_k=attn_top_k, shared_kv=shared_kv)
        torch.manual_seed(0)
        attn = ExpertAttention(cfg, 0)
        cos, sin = RotaryEmbedding(cfg)(64, torch.device("cpu"), torch.float32)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            attn(torch.randn(2, 64, cfg.hidden_size), cos, sin)
        return counter.get_total_flops()

    soft, top2, top1 = flops(0), flops(2), flops(1)
    assert top1 < top2 < soft, (top1, top2, soft)


def test_router_weights_option_reaches_the_checkpoint(tmp_path):
    """`--router-weights raw` is recorded in the MoE, and Mixtral (which renormalises) is not written."""
    import json

    from hf_tiny import make_hf, save_hf

    from moelab.cli import main

    seed = save_hf(make_hf("llama", seed=1), tmp_path / "seed")
    for rule, model_type in (("raw", "moelab"), ("st", "mixtral")):
        out = tmp_path / f"moe-{rule}"
        assert (
            main(
                [
                    "upcycle",
                    "--method",
                    "btx",
                    "--seed",
                    str(seed),
                    "--expert",
                    str(seed),
                    "--expert",
                    str(seed),
                    "--router-weights",
                    rule,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model_type"] == model_type
        if model_type == "moelab":
            assert cfg["moe"]["router_weights"] == "raw"
