"""MoE options the papers and peers use: expert capacity, router jitter, the load-balancing
coefficient written for transformers, and sparse upcycling's every-other-layer default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_tiny import input_ids, make_hf, save_hf

from moelab.cli import main
from moelab.errors import ConfigError
from moelab.export.hf_export import export_hf
from moelab.io.checkpoint import load_model, save_model
from moelab.models.aux_losses import load_balancing_loss, mixtral_aux_loss_coef
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterLogits, route_top_k

SMALL = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _model(moe: MoEConfig, **kw) -> MoELabForCausalLM:
    torch.manual_seed(0)
    return MoELabForCausalLM(ModelConfig(**{**SMALL, **kw}, model_type="moelab", moe=moe))


# ---- router jitter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_jitter_multiplies_the_ffn_router_input_in_training_only(lora_rank):
    eps = 0.3
    moe = (
        _model(
            MoEConfig(num_experts=4, top_k=2, moe_layers=[0], lora_rank=lora_rank, router_jitter_noise=eps)
        )
        .model.layers[0]
        .block_sparse_moe
    )
    x = torch.randn(2, 5, 32)
    flat = x.reshape(-1, 32)
    with torch.no_grad():
        moe.eval()
        y_eval, r_eval = moe(x)
        torch.testing.assert_close(r_eval.logits, moe.gate(flat), atol=0, rtol=0)
        moe.train()
        torch.manual_seed(7)
        y, r = moe(x)
        torch.manual_seed(7)
        noise = torch.empty_like(flat).uniform_(1 - eps, 1 + eps)
        assert bool(((noise - 1).abs() <= eps).all()) and not torch.equal(r.logits, r_eval.logits)
        torch.testing.assert_close(r.logits, moe.gate(flat * noise), atol=1e-6, rtol=0)
        # The experts compute on the clean input, weighted by the jittered routing.
        weights, idx = route_top_k(r.logits, 2)
        clean = (
            moe.experts(moe.shared_mlp, flat, idx, weights) if lora_rank else moe.experts(flat, idx, weights)
        )
        torch.testing.assert_close(y.reshape(-1, 32), clean, atol=1e-6, rtol=0)


def test_jitter_multiplies_the_attention_router_input():
    eps = 0.2
    model = _model(
        MoEConfig(num_experts=3, top_k=2, moe_layers=[0], attn_experts=True, router_jitter_noise=eps)
    )
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 5, 32)
    cos, sin = model.model.rotary(5, x.device, x.dtype)
    with torch.no_grad():
        attn.train()
        torch.manual_seed(3)
        _, r = attn(x, cos, sin)
        torch.manual_seed(3)
        noise = torch.empty_like(x).uniform_(1 - eps, 1 + eps)
        torch.testing.assert_close(r.logits, attn.router(x * noise).reshape(10, 3), atol=1e-6, rtol=0)
        attn.eval()
        _, r = attn(x, cos, sin)
        torch.testing.assert_close(r.logits, attn.router(x).reshape(10, 3), atol=0, rtol=0)


def test_jitter_round_trips_through_mixtral_and_draws_as_transformers_does(tmp_path):
    """Exported as Mixtral's router_jitter_noise; transformers' Mixtral, training, draws the same
    noise for the router input (it also applies it to the experts' input; Switch and the engine do not)."""
    import transformers

    model = _model(
        MoEConfig(num_experts=4, top_k=2, moe_layers=[0], router_jitter_noise=0.25), num_hidden_layers=1
    )
    ck = tmp_path / "ck"
    ck.mkdir()
    save_model(model, ck)
    out = tmp_path / "hf"
    out.mkdir()
    assert export_hf(ck, out) == "mixtral"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["router_jitter_noise"] == 0.25
    assert load_model(out).config.moe.router_jitter_noise == 0.25
    hf = transformers.MixtralForCausalLM.from_pretrained(out).train()
    assert hf.config.router_jitter_noise == 0.25
    ids = input_ids()
    ours = load_model(out).train()
    with torch.no_grad():
        torch.manual_seed(11)
        theirs = hf(input_ids=ids, output_router_logits=True).router_logits[0]
        torch.manual_seed(11)
        mine = ours(ids).router_logits[0].logits
        plain = ours.eval()(ids).router_logits[0].logits
    torch.testing.assert_close(mine, theirs.reshape(mine.shape), atol=1e-5, rtol=0)
    assert not torch.allclose(mine, plain)


def test_bad_moe_options_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^moe config: router_jitter_noise 1.5: must be in \[0, 1\)$"):
        MoEConfig(router_jitter_noise=1.5)
    with pytest.raises(
        ConfigError, match=r"^moe config: capacity_factor -1.0: must be 0 \(dropless\) or positive$"
    ):
        MoEConfig.from_dict({"capacity_factor": -1.0})
    lora = _model(MoEConfig(num_experts=4, moe_layers=[0], lora_rank=4))
    with pytest.raises(ConfigError, match="capacity_factor: expert capacity is not supported with LoRA"):
        lora.set_moe_options(capacity_factor=1.0)
    with pytest.raises(ConfigError, match="capacity_factor: the model has no MoE layers"):
        MoELabForCausalLM(ModelConfig(**SMALL)).set_moe_options(capacity_factor=1.0)


# ---- capacity ----------------------------------------------------------------------------------------


def test_capacity_is_not_mixtral(tmp_path):
    """transformers' Mixtral is dropless: a capacity-limited MoE is written as model_type moelab
    (which keeps the factor), never as a Mixtral that would compute something else."""
    model = _model(MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1]))
    assert model.config.mixtral_compatible()
    model.config.model_type = "mixtral"
    model.set_moe_options(capacity_factor=0.5, router_jitter_noise=0.1)
    assert model.config.model_type == "moelab" and not model.config.mixtral_compatible()
    assert all(layer.block_sparse_moe.experts.capacity_factor == 0.5 for layer in model.model.layers)
    assert all(layer.block_sparse_moe.jitter_noise == 0.1 for layer in model.model.layers)
    ck, out = tmp_path / "ck", tmp_path / "hf"
    ck.mkdir()
    out.mkdir()
    save_model(model, ck)
    assert export_hf(ck, out) == "moelab"
    back = load_model(out)
    assert back.config.moe.capacity_factor == 0.5 and back.config.moe.router_jitter_noise == 0.1
    ids = input_ids(t=16)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model.eval()(ids).logits, atol=0, rtol=0)
        model.set_moe_options(capacity_factor=0.0)
        assert not torch.allclose(back(ids).logits, model(ids).logits)  # the capacity does drop slots


@pytest.fixture(scope="module")
def dense_seed(tmp_path_factory):
    return save_hf(make_hf("llama", seed=0, num_hidden_layers=4), tmp_path_factory.mktemp("seed") / "seed")


def _upcycle(tmp_path: Path, seed: Path, *args: str) -> dict:
    out = tmp_path / "moe"
    assert main(["upcycle", "--seed", str(seed), "--out", str(out), "--overwrite", *args]) == 0
    return json.loads((out / "config.json").read_text())


def test_upcycle_cli_options(tmp_path, dense_seed, capsys):
    cfg = _upcycle(
        tmp_path,
        dense_seed,
        "--method",
        "sparse",
        "--moe-layers",
        "all",
        "--capacity-factor",
        "1.25",
        "--router-jitter-noise",
        "0.01",
    )
    assert cfg["model_type"] == "moelab"
    assert cfg["moe"]["capacity_factor"] == 1.25 and cfg["moe"]["router_jitter_noise"] == 0.01
    assert cfg["moelab"]["options"]["capacity_factor"] == 1.25
    cfg = _upcycle(
        tmp_path, dense_seed, "--method", "sparse", "--moe-layers", "all", "--router-jitter-noise", "0.01"
    )
    assert cfg["model_type"] == "mixtral" and cfg["router_jitter_noise"] == 0.01
    for args, msg in [
        (["--capacity-factor", "-1"], "--capacity-factor -1.0: must be 0 (dropless) or positive"),
        (["--router-jitter-noise", "1"], "--router-jitter-noise 1.0: must be in [0, 1)"),
    ]:
        capsys.readouterr()
        assert (
            main(
                [
                    "upcycle",
                    "--method",
                    "sparse",
                    "--seed",
                    str(dense_seed),
                    "--out",
                    str(tmp_path / "x"),
                    *args,
                ]
            )
            == 1
        )
        assert capsys.readouterr().err.strip().splitlines() == [f"moelab: error: {msg}"]
        assert not (tmp_path / "x").exists()


# ---- sparse upcycling: every other layer by default ---------------------------------------------------


def test_sparse_upcycles_every_other_layer_by_default(tmp_path, dense_seed):
    cfg = _upcycle(tmp_path, dense_seed, "--method", "sparse")
    assert cfg["model_type"] == "moelab" and cfg["moe"]["moe_layers"] == [1, 3]
    assert cfg["moelab"]["options"]["moe_layers"] == "every-other"
    assert _upcycle(tmp_path, dense_seed, "--method", "sparse", "--moe-layers", "0,1")["moe"][
        "moe_layers"
    ] == [0, 1]
    btx = _upcycle(
        tmp_path, dense_seed, "--method", "btx", "--expert", str(dense_seed), "--expert", str(dense_seed)
    )
    assert btx["model_type"] == "mixtral"  # the other methods still mix every layer


# ---- load-balancing coefficient for transformers ------------------------------------------------------


@pytest.mark.parametrize("n,k", [(4, 1), (4, 2), (8, 2), (6, 3)])
def test_mixtral_aux_coef_gives_the_engines_balancing(n, k):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    alpha = 0.02
    g = torch.Generator().manual_seed(n * 10 + k)
    # One layer: the same loss value and the same gradient.
    one = torch.randn(64, n, generator=g, requires_grad=True)
    ours = alpha * load_balancing_loss(RouterLogits(0, "ffn", one, k))
    theirs = mixtral_aux_loss_coef(alpha, k, 1) * load_balancing_loss_func((one,), n, k)
    torch.testing.assert_close(theirs, ours, atol=1e-7, rtol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, one)
    (g_theirs,) = torch.autograd.grad(theirs, one)
    torch.testing.assert_close(g_theirs, g_ours, atol=1e-8, rtol=1e-5)
    # L layers with the same loads (here: the same logits, separate tensors): the engine's sum over
    # layers and transformers' one loss over the concatenation agree, gradients per layer too.
    layers = [one.detach().clone().requires_grad_() for _ in range(3)]
    ours = alpha * sum(load_balancing_loss(RouterLogits(i, "ffn", t, k)) for i, t in enumerate(layers))
    theirs = mixtral_aux_loss_coef(alpha, k, 3) * load_balancing_loss_func(tuple(layers), n, k)
    torch.testing.assert_close(theirs, ours, atol=1e-7, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, layers), torch.autograd.grad(theirs, layers)):
        torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-5)
    # Different loads per layer: transformers balances the load averaged over layers, not each
    # layer's own (documented in mixtral_aux_loss_coef), so the two differ.
    skewed = [torch.randn(64, n, generator=g) + torch.arange(n) * i for i in range(3)]
    ours = alpha * sum(load_balancing_loss(RouterLogits(i, "ffn", t, k)) for i, t in enumerate(skewed))
    theirs = mixtral_aux_loss_coef(alpha, k, 3) * load_balancing_loss_func(tuple(skewed), n, k)
    assert not torch.allclose(theirs, ours, rtol=1e-3)
