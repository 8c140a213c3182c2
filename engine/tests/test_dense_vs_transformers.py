"""Dense Llama-family checkpoints saved by transformers load into moelab with the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, our_logits, save_hf

from moelab.errors import ConfigError

CASES = {
    "llama-gqa": ("llama", {}),
    "llama-mha-headdim": ("llama", {"num_key_value_heads": 4, "head_dim": 16}),
    "llama-llama3-rope": ("llama", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}),
    "llama-linear-rope": ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 5000.0, "factor": 4.0}}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {}),
    "qwen2-bias-tied": ("qwen2", {"tie_word_embeddings": True}),
}


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(tmp_path, case, shard):
    kind, overrides = CASES[case]
    model = make_hf(kind, seed=3, **overrides)
    path = save_hf(model, tmp_path / case, shard)
    if shard:
        assert (path / "model.safetensors.index.json").exists()
    if "rope_parameters" in overrides:  # transformers kept the scaling, so it is really exercised
        saved = json.loads((path / "config.json").read_text())["rope_parameters"]
        assert saved["rope_type"] == overrides["rope_parameters"]["rope_type"]
    ids = input_ids(t=19)
    ref = hf_logits(model, ids)
    assert ref.abs().max() > 0.1  # the random weights do reach the logits
    torch.testing.assert_close(our_logits(path, ids), ref, atol=1e-4, rtol=0)


def test_qwen2_biases_are_loaded(tmp_path):
    """The q/k/v biases matter: zeroing them changes the logits (so they were not dropped)."""
    model = make_hf("qwen2", seed=1)
    path = save_hf(model, tmp_path / "q")
    from moelab import load_model

    ours = load_model(path)
    assert ours.model.layers[0].self_attn.q_proj.bias is not None
    ids = input_ids()
    with torch.no_grad():
        before = ours(ids).logits
        for layer in ours.model.layers:
            layer.self_attn.k_proj.bias.zero_()
        assert (ours(ids).logits - before).abs().max() > 1e-3


def test_llama_attention_bias_is_refused(tmp_path):
    """Llama's attention_bias also biases o_proj, which the decoder has no place for."""
    model = make_hf("llama", seed=0, attention_bias=True)
    path = save_hf(model, tmp_path / "b")
    with pytest.raises(ConfigError, match="attention_bias"):
        our_logits(path, input_ids())
