"""Dense checkpoints of every supported family, saved by transformers, load into moelab with the
same logits as transformers' own model class (windows of 5 over 19 tokens, so tokens past the
window are checked; soft-caps small enough that tanh bends the scores)."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, our_logits, save_hf

from moelab.errors import ConfigError

CASES = {
    "llama-gqa": ("llama", {}),
    "llama-mha-headdim": ("llama", {"num_key_value_heads": 4, "head_dim": 16}),
    "llama-llama3-rope": (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            }
        },
    ),
    "llama-linear-rope": (
        "llama",
        {"rope_parameters": {"rope_type": "linear", "rope_theta": 5000.0, "factor": 4.0}},
    ),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {}),
    "mistral-window": ("mistral", {"sliding_window": 5}),
    "qwen2-bias-tied": ("qwen2", {"tie_word_embeddings": True}),
    "qwen2-window-layers": (
        "qwen2",
        {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1},
    ),
    "qwen3-headdim": ("qwen3", {"head_dim": 16}),
    "phi3-fused-window": ("phi3", {"sliding_window": 5}),
    "olmo2": ("olmo2", {}),
    "gemma-tied": ("gemma", {"tie_word_embeddings": True}),
    "gemma2-softcap-window": (
        "gemma2",
        {
            "sliding_window": 5,
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 3.0,
            "query_pre_attn_scalar": 12,
        },
    ),
    "gemma3-local-rope": (
        "gemma3_text",
        {
            "sliding_window": 5,
            "num_hidden_layers": 3,
            "query_pre_attn_scalar": 12,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "final_logit_softcapping": 3.0,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            },
        },
    ),
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
        want = overrides["rope_parameters"]
        saved, want = (
            saved.get("full_attention", saved),
            want.get("full_attention", want),
        )  # Gemma3: per layer type
        assert saved["rope_type"] == want["rope_type"]
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


@pytest.mark.parametrize(
    "case",
    [
        "mistral-window",
        "qwen2-window-layers",
        "qwen3-headdim",
        "phi3-fused-window",
        "olmo2",
        "gemma-tied",
        "gemma2-softcap-window",
        "gemma3-local-rope",
    ],
)
def test_saved_dense_model_loads_in_transformers(tmp_path, case):
    """What the engine writes for a dense model of a family (a fine-tuned expert, say) is read by
    transformers as the same model: config.json carries the family's windows, soft-caps, norms
    and rope settings (Phi-3, its tensors written split, as Mistral)."""
    import transformers

    from moelab import load_model
    from moelab.io.checkpoint import save_model

    kind, overrides = CASES[case]
    model = make_hf(kind, seed=4, **overrides)
    ids = input_ids(t=19)
    ref = hf_logits(model, ids)
    (tmp_path / "ours").mkdir()
    save_model(load_model(save_hf(model, tmp_path / "hf")), tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == ("mistral" if kind == "phi3" else kind)
    back = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "ours", attn_implementation="eager"
    ).eval()
    torch.testing.assert_close(hf_logits(back, ids), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(our_logits(tmp_path / "ours", ids), ref, atol=1e-4, rtol=0)


REFUSED = {
    "phi3-longrope": (
        "phi3",
        {
            "rope_parameters": {
                "rope_type": "longrope",
                "rope_theta": 10000.0,
                "short_factor": [1.0] * 4,
                "long_factor": [2.0] * 4,
            },
            "original_max_position_embeddings": 32,
        },
        "rope_type 'longrope'",
    ),
    "phi3-partial-rotary": ("phi3", {"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
    "qwen3-attention-bias": ("qwen3", {"attention_bias": True}, "attention_bias"),
    "llama-gelu": ("llama", {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    "gemma3-bidirectional": (
        "gemma3_text",
        {"use_bidirectional_attention": True},
        "use_bidirectional_attention",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_features_are_refused_in_one_line(tmp_path, case):
    from moelab.io.checkpoint import load_config

    kind, overrides, words = REFUSED[case]
    path = save_hf(make_hf(kind, seed=0, **overrides), tmp_path / case)
    with pytest.raises(ConfigError, match=words) as e:
        load_config(path)
    assert "\n" not in str(e.value) and str(path / "config.json") in str(e.value)


@pytest.mark.parametrize(
    "edit,words",
    [
        ({"model_type": "phimoe"}, "model_type 'phimoe'"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"layer_types": ["chunked_attention", "full_attention"]}, "layer_types: 'chunked_attention'"),
        ({"model_type": "moelab", "base_model_type": "gpt_neox"}, "base_model_type 'gpt_neox'"),
    ],
)
def test_unsupported_config_fields_are_refused(edit, words):
    from moelab.models.config import ModelConfig

    d = {
        "model_type": "gemma2",
        "vocab_size": 97,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        **edit,
    }
    with pytest.raises(ConfigError, match=words):
        ModelConfig.from_hf_dict(d)
