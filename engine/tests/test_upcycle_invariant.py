"""ARCHITECTURE §2 invariant: when every expert is the seed, the upcycled model computes the seed.

Checked against transformers' own dense model on the seed, for every method (UpIT with full and
with LoRA experts, one of them a merged child), FFN top-k 1, 2, N, BAM attention soft / top-1 / top-2, MoE on all layers and every other layer, two router seeds;
Mixtral-compatible outputs are also loaded by transformers' MixtralForCausalLM.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, our_logits, save_hf

from moelab.methods.api import UpcycleOptions, upcycle

N = 3
IDS = input_ids(t=17)


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    model = make_hf("llama", seed=7)
    save_hf(model, root / "single")
    save_hf(model, root / "sharded", "16KB")  # the same model in another file layout
    return root, hf_logits(model, IDS)


def _combos():
    for method in ("sparse", "btx", "bam-ekv", "bam-skv"):
        attn = (0, 1, 2) if method.startswith("bam") else (0,)
        yield from itertools.product([method], (1, 2, N), attn, ("all", "every-other"), (0, 1), (0,))
    # UpIT, full FFN experts and rank-4 LoRA experts; two checkpoints, so one expert is a merged child.
    yield from itertools.product(["upit"], (1, 2, N), (0,), ("all", "every-other"), (0, 1), (0, 4))


@pytest.mark.parametrize("method,top_k,attn_top_k,layers,router_seed,lora_rank", list(_combos()))
def test_all_experts_equal_the_seed(
    seed, tmp_path, method, top_k, attn_top_k, layers, router_seed, lora_rank
):
    root, ref = seed
    experts = {"sparse": [], "upit": [root / "single", root / "sharded"]}.get(
        method, [root / "single", root / "sharded", root / "single"]
    )
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=root / "single",
            experts=experts,
            out=tmp_path / "moe",
            num_experts=N,
            top_k=top_k,
            attn_top_k=attn_top_k,
            moe_layers=layers,
            router_seed=router_seed,
            lora_rank=lora_rank,
        )
    )
    cfg = json.loads((out / "config.json").read_text())
    mixtral = method in ("sparse", "btx", "upit") and layers == "all" and not lora_rank
    assert cfg["model_type"] == ("mixtral" if mixtral else "moelab")
    ours = our_logits(out, IDS)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    if mixtral:
        import transformers

        hf = transformers.MixtralForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(hf_logits(hf, IDS), ours, atol=1e-4, rtol=0)
        torch.testing.assert_close(hf_logits(hf, IDS), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["btx", "bam-ekv", "bam-skv"])
def test_qwen2_bias_seed_keep_seed(tmp_path, method):
    """q/k/v biases (per attention expert in BAM) and --keep-seed keep the invariant; a model
    with attention biases is not Mixtral-expressible, so the output is model_type moelab."""
    model = make_hf("qwen2", seed=2, tie_word_embeddings=True)
    save_hf(model, tmp_path / "seed")
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=tmp_path / "seed",
            experts=[tmp_path / "seed"] * 2,
            out=tmp_path / "moe",
            keep_seed=True,
            top_k=2,
            attn_top_k=1,
        )
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "moelab" and cfg["moe"]["num_experts"] == 3
    torch.testing.assert_close(our_logits(out, IDS), hf_logits(model, IDS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["sparse", "btx", "bam-ekv", "bam-skv"])
def test_parallel_block_seed_stays_parallel(tmp_path, method):
    from moelab.io.checkpoint import save_model
    from moelab.models.config import ModelConfig
    from moelab.models.model import MoELabForCausalLM

    torch.manual_seed(0)
    dense = MoELabForCausalLM(
        ModelConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            parallel_block=True,
            model_type="moelab",
        )
    )
    (tmp_path / "seed").mkdir()
    save_model(dense, tmp_path / "seed")
    with torch.no_grad():
        ref = dense(IDS).logits
    experts = [] if method == "sparse" else [tmp_path / "seed"] * 2
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=tmp_path / "seed",
            experts=experts,
            out=tmp_path / "moe",
            moe_layers="every-other",
            top_k=1,
        )
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "moelab" and cfg["parallel_block"] is True
    assert cfg["moe"]["moe_layers"] == [1]
    torch.testing.assert_close(our_logits(out, IDS), ref, atol=1e-4, rtol=0)
