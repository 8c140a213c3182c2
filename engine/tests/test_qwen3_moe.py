"""Qwen3 seeds upcycle into transformers' own Qwen3-MoE type (DESIGN: a native MoE type where one
computes the result exactly): Qwen3MoeForCausalLM loads the output and gives the engine's logits
and router logits; MoE on some layers becomes mlp_only_layers; raw top-k weights become
norm_topk_prob false; the engine reads the Qwen3-MoE names back."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, save_hf

from moelab import load_model
from moelab.io.checkpoint import save_model
from moelab.methods.api import UpcycleOptions, upcycle

IDS = input_ids(t=13)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3")
    a = make_hf("qwen3", seed=3, head_dim=16)
    b = make_hf("qwen3", seed=4, head_dim=16)  # a different expert: routing matters
    return save_hf(a, root / "a"), save_hf(b, root / "b"), hf_logits(a, IDS)


def _transformers(out):
    import transformers

    return transformers.Qwen3MoeForCausalLM.from_pretrained(out).eval()


@pytest.mark.parametrize(
    "method,layers,rule", [("btx", "", "st"), ("sparse", "", "st"), ("btx", "all", "raw")]
)
def test_qwen3_moe_output_is_transformers_qwen3_moe(seeds, tmp_path, method, layers, rule):
    a, b, _ = seeds
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=a,
            experts=[] if method == "sparse" else [a, b],
            out=tmp_path / "moe",
            num_experts=3 if method == "sparse" else None,
            top_k=1,
            moe_layers=layers,
            router_weights=rule,
            router_seed=2,
        )
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_moe"
    assert cfg["norm_topk_prob"] is (rule != "raw")
    if method == "sparse":  # every other layer by default: layer 0 stays dense
        assert cfg["mlp_only_layers"] == [0]
    ours = load_model(out)
    hf = _transformers(out)
    with torch.no_grad():
        got = ours(IDS)
        ref = hf(input_ids=IDS, output_router_logits=True)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-4, rtol=0)
    assert len(ref.router_logits) == len(got.router_logits)
    for r, h in zip(got.router_logits, ref.router_logits):
        torch.testing.assert_close(r.logits, h.reshape(r.logits.shape), atol=1e-5, rtol=0)


def test_identical_qwen3_experts_are_the_seed_in_transformers(seeds, tmp_path):
    a, _, dense = seeds
    out = upcycle(UpcycleOptions(method="btx", seed=a, experts=[a, a, a], out=tmp_path / "moe", top_k=2))
    torch.testing.assert_close(hf_logits(_transformers(out), IDS), dense, atol=1e-4, rtol=0)


def test_saved_qwen3_moe_stays_qwen3_moe(seeds, tmp_path):
    """A training checkpoint (save_model) of a Qwen3-MoE is written in Qwen3-MoE names again."""
    a, b, _ = seeds
    out = upcycle(UpcycleOptions(method="btx", seed=a, experts=[a, b], out=tmp_path / "moe", top_k=1))
    model = load_model(out)
    (tmp_path / "saved").mkdir()
    save_model(model, tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "qwen3_moe"
    torch.testing.assert_close(
        hf_logits(_transformers(tmp_path / "saved"), IDS), model(IDS).logits, atol=1e-4, rtol=0
    )
