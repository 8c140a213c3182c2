"""Tiny random Hugging Face decoders of every supported family for tests (every parameter
randomised, biases and norms too), built by transformers' own classes with eager attention (the
reference math: its SDPA path drops Gemma2's soft-cap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 97


def base_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return cfg


def make_hf(kind: str = "llama", seed: int = 0, **overrides: Any) -> torch.nn.Module:
    import transformers

    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM),
        "olmo2": (transformers.Olmo2Config, transformers.Olmo2ForCausalLM),
        "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
        "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    }
    config_cls, model_cls = classes[kind]
    # Special tokens inside the tiny vocabulary (several families default to ids past it).
    fields = base_config(**{"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, **overrides})
    if kind == "phi3":
        fields.pop("head_dim")  # Phi-3 has no head_dim field: hidden_size / heads
    config = config_cls(**fields)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    randomize(model, seed)
    return model


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """transformers' init leaves biases at zero and norms at one: draw everything so that a
    misplaced bias or norm weight shows in the logits."""
    g = torch.Generator().manual_seed(1000 + seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if "norm" in name:
            p.copy_(1.0 + 0.2 * noise)
        else:
            p.copy_(0.15 * noise)


def save_hf(model: torch.nn.Module, path: Path, shard: str | int | None = None) -> Path:
    if shard is None:
        model.save_pretrained(path)
    else:
        model.save_pretrained(path, max_shard_size=shard)
    return path


def input_ids(vocab: int = VOCAB, t: int = 11, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def hf_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float()


@torch.no_grad()
def our_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    from moelab import load_model

    return load_model(path)(ids).logits.float()


# Per-family fields that exercise each family's own features (windows, soft-caps, local RoPE) in tiny models.
FAMILY_FIELDS = {
    "mistral": {"sliding_window": 5},
    "qwen3": {"head_dim": 16},
    "phi3": {"sliding_window": 5},
    "olmo2": {},
    "gemma": {},
    "gemma2": {
        "sliding_window": 5,
        "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 3.0,
        "query_pre_attn_scalar": 12,
    },
    "gemma3_text": {
        "sliding_window": 5,
        "query_pre_attn_scalar": 12,
        "final_logit_softcapping": 3.0,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        },
    },
}
