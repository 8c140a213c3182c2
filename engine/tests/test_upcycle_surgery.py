"""With different experts: every output tensor comes from the right input, means are means."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hf_tiny import make_hf, save_hf
from safetensors.torch import load_file

from moelab import load_model
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.methods.common import ROUTER_STD

LAYERS = 2
FFN = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A qwen2 seed and three different experts (q/k/v biases exercised), some sharded."""
    root = tmp_path_factory.mktemp("models")
    paths, states = [], []
    for i, shard in enumerate([None, "12KB", None, "30KB"]):
        p = save_hf(make_hf("qwen2", seed=20 + i), root / f"m{i}", shard)
        (p / "tokenizer_config.json").write_text(json.dumps({"model": i}))
        paths.append(p)
        states.append(load_model(p).state_dict())
    return paths, states


def _out(tmp_path, paths, method, **kw):
    seed, experts = paths[0], ([] if method == "sparse" else paths[1:])
    out = upcycle(UpcycleOptions(method=method, seed=seed, experts=experts, out=tmp_path / method, **kw))
    files = sorted(out.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return out, state


def _mean(states, name):
    return torch.stack([s[name] for s in states]).mean(0)


@pytest.mark.parametrize("method", ["sparse", "btx", "bam-ekv", "bam-skv"])
def test_tensors_come_from_the_right_inputs(tmp_path, models, method):
    paths, states = models
    seed, experts = states[0], states[1:]
    n = 4 if method == "sparse" else 3
    out, got = _out(tmp_path, paths, method, max_shard_bytes=40_000)
    by_expert = [seed] * n if method == "sparse" else experts
    shared = [seed] if method == "sparse" else experts

    def check_shared(name):
        torch.testing.assert_close(got[name], _mean(shared, name), atol=1e-6, rtol=0)

    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        check_shared(name)
    moe_layers = [1] if method == "sparse" else [0, 1]  # sparse: every other layer by default, as its paper
    assert json.loads((out / "config.json").read_text())["moe"]["moe_layers"] == moe_layers
    for layer in range(LAYERS):
        pre = f"model.layers.{layer}"
        if layer not in moe_layers:
            for dense in FFN.values():
                check_shared(f"{pre}.mlp.{dense}.weight")
            assert not any(k.startswith(f"{pre}.block_sparse_moe.") for k in got)
        else:
            for e in range(n):
                for w, dense in FFN.items():
                    assert torch.equal(
                        got[f"{pre}.block_sparse_moe.experts.{e}.{w}.weight"],
                        by_expert[e][f"{pre}.mlp.{dense}.weight"],
                    )
            gate = got[f"{pre}.block_sparse_moe.gate.weight"]
            assert gate.shape == (n, 32) and 0.5 * ROUTER_STD < gate.std() < 2 * ROUTER_STD
        for ln in ("input_layernorm", "post_attention_layernorm"):
            check_shared(f"{pre}.{ln}.weight")
        attn = f"{pre}.self_attn"
        if method.startswith("bam"):
            per_expert = ["q_proj", "o_proj"] + (["k_proj", "v_proj"] if method == "bam-ekv" else [])
            for e in range(n):
                for p in per_expert:
                    for kind in ("weight", "bias"):
                        key = f"{attn}.{p}.{kind}"
                        if key in seed:
                            assert torch.equal(got[f"{attn}.experts.{e}.{p}.{kind}"], by_expert[e][key])
            if method == "bam-skv":  # K and V: one shared projection, the experts' mean
                for key in ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"):
                    check_shared(f"{attn}.{key}")
                    assert f"{attn}.experts.0.{key}" not in got
            assert got[f"{attn}.router.weight"].shape == (n, 32)
        else:
            for key in ("q_proj.weight", "q_proj.bias", "k_proj.weight", "v_proj.bias", "o_proj.weight"):
                check_shared(f"{attn}.{key}")
    # Provenance: method, options and every parent file's sha256; tokenizer files from the seed.
    cfg = json.loads((out / "config.json").read_text())
    meta = cfg["moelab"]
    assert meta["method"] == method and meta["options"]["num_experts"] == n
    assert [p["role"] for p in meta["parents"]] == ["seed"] + ["expert"] * (0 if method == "sparse" else 3)
    for parent in meta["parents"]:
        for f in parent["files"]:
            data = (paths[0].parent / parent["path"].split("/")[-1] / f["name"]).read_bytes()
            assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model": 0}
    assert (out / "model.safetensors.index.json").exists()  # small --max-shard-size: sharded
    load_model(out)  # and what was written is a loadable model


def test_keep_seed_is_the_last_expert(tmp_path, models):
    paths, states = models
    _, got = _out(tmp_path, paths, "btx", keep_seed=True)
    all4 = states[1:] + [states[0]]
    assert torch.equal(
        got["model.layers.1.block_sparse_moe.experts.3.w2.weight"],
        states[0]["model.layers.1.mlp.down_proj.weight"],
    )
    torch.testing.assert_close(
        got["model.embed_tokens.weight"], _mean(all4, "model.embed_tokens.weight"), atol=1e-6, rtol=0
    )


def test_router_seed_is_deterministic(tmp_path, models):
    paths, _ = models
    gate = "model.layers.0.block_sparse_moe.gate.weight"
    a = _out(tmp_path / "a", paths, "btx", router_seed=5)[1][gate]
    b = _out(tmp_path / "b", paths, "btx", router_seed=5)[1][gate]
    c = _out(tmp_path / "c", paths, "btx", router_seed=6)[1][gate]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_other_layer_keeps_a_dense_ffn(tmp_path, models):
    paths, states = models
    _, got = _out(tmp_path, paths, "bam-ekv", moe_layers="every-other")
    assert "model.layers.0.mlp.up_proj.weight" in got and "model.layers.0.self_attn.q_proj.weight" in got
    torch.testing.assert_close(
        got["model.layers.0.mlp.up_proj.weight"],
        _mean(states[1:], "model.layers.0.mlp.up_proj.weight"),
        atol=1e-6,
        rtol=0,
    )
    assert "model.layers.1.block_sparse_moe.experts.2.w1.weight" in got
    assert "model.layers.1.self_attn.experts.2.q_proj.weight" in got


def test_bf16_inputs_stay_bf16(tmp_path):
    model = make_hf("llama", seed=4).to(torch.bfloat16)
    save_hf(model, tmp_path / "s")
    out = upcycle(
        UpcycleOptions(method="btx", seed=tmp_path / "s", experts=[tmp_path / "s"] * 2, out=tmp_path / "o")
    )
    got = load_file(out / "model.safetensors")
    assert {t.dtype for t in got.values()} == {torch.bfloat16}
    src = load_file(tmp_path / "s" / "model.safetensors")
    assert torch.equal(
        got["model.embed_tokens.weight"], src["model.embed_tokens.weight"]
    )  # mean of equals is exact
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
