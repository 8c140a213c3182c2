"""DESIGN §2 invariant from every dense family: when every expert is the seed, the upcycled MoE
computes the seed, checked against transformers' own dense model, for every method (one top-k
each). The families' q/k norms, post norms, windows, soft-caps and Gemma scalings must therefore
survive the surgery, per attention expert in BAM. Outputs Mixtral can express (Mistral's window,
Phi-3 split) are also loaded by transformers' MixtralForCausalLM."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import FAMILY_FIELDS, hf_logits, input_ids, make_hf, our_logits, save_hf

from moelab.methods.api import UpcycleOptions, upcycle

IDS = input_ids(t=13)
FAMILIES = FAMILY_FIELDS
# method, FFN top-k, attention top-k, LoRA rank
METHODS = [
    ("sparse", 2, 0, 0),
    ("btx", 1, 0, 0),
    ("bam-ekv", 2, 1, 0),
    ("bam-skv", 2, 0, 0),
    ("upit", 2, 0, 0),
    ("upit", 1, 0, 4),
]
_seeds: dict[str, tuple] = {}


def _seed(family: str, root) -> tuple:
    """The family's seed saved once per session, as one file and sharded, with its reference logits."""
    if family not in _seeds:
        model = make_hf(family, seed=5, **FAMILIES[family])
        save_hf(model, root / "single")
        save_hf(model, root / "sharded", "16KB")
        _seeds[family] = (root, hf_logits(model, IDS))
    return _seeds[family]


@pytest.mark.parametrize(
    "method,top_k,attn_top_k,lora_rank", METHODS, ids=[f"{m[0]}{'-lora' if m[3] else ''}" for m in METHODS]
)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_identical_experts_equal_the_dense_family(
    tmp_path_factory, family, method, top_k, attn_top_k, lora_rank
):
    root, ref = _seed(family, tmp_path_factory.mktemp(family)) if family not in _seeds else _seeds[family]
    experts = [] if method == "sparse" else [root / "single", root / "sharded"]
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=root / "single",
            experts=experts,
            out=tmp_path_factory.mktemp("moe") / "moe",
            num_experts=3,
            top_k=top_k,
            attn_top_k=attn_top_k,
            lora_rank=lora_rank,
            keep_seed=method != "sparse",
        )
    )
    cfg = json.loads((out / "config.json").read_text())
    # Sparse upcycling puts MoE on every other layer by default, which Mixtral cannot express
    # (Qwen3-MoE can: mlp_only_layers).
    mixtral = family in ("mistral", "phi3") and method in ("btx", "upit") and not lora_rank
    qwen3_moe = family == "qwen3" and method in ("sparse", "btx", "upit") and not lora_rank
    assert cfg["model_type"] == ("mixtral" if mixtral else "qwen3_moe" if qwen3_moe else "moelab")
    assert cfg.get("base_model_type", "qwen3" if qwen3_moe else None) == family
    if FAMILIES[family].get("sliding_window"):
        assert cfg["sliding_window"] == 5
    ours = our_logits(out, IDS)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    if mixtral:
        import transformers

        hf = transformers.MixtralForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        torch.testing.assert_close(hf_logits(hf, IDS), ref, atol=1e-4, rtol=0)
    if qwen3_moe:
        import transformers

        hf = transformers.Qwen3MoeForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        torch.testing.assert_close(hf_logits(hf, IDS), ref, atol=1e-4, rtol=0)
