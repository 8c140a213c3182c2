"""The tensor-name patterns of io/layout.py: what they capture in real names, in Python's `re`; the
syntax they keep to so that JavaScript reads them alike (test/unit/checkpointModel.test.ts checks the
same names with RegExp); schema/layout.json is generated from them (test_schema.py checks it is current)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from moelab.io.layout import PATTERNS
from moelab.methods.common import model_shapes
from moelab.models.config import ModelConfig, MoEConfig

FIXTURE = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "tensor-names.json"
TINY = dict(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


def _saved_names(model, path: Path) -> set[str]:
    model.save_pretrained(path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.fixture(scope="module")
def real_names(tmp_path_factory) -> dict[str, set[str]]:
    """The names transformers writes for tiny Mixtral and Qwen3-MoE models, and the engine's own (BAM)."""
    tmp = tmp_path_factory.mktemp("names")
    mixtral = MixtralForCausalLM(MixtralConfig(intermediate_size=8, num_local_experts=2, **TINY))
    qwen = Qwen3MoeForCausalLM(
        Qwen3MoeConfig(intermediate_size=8, moe_intermediate_size=8, num_experts=2, head_dim=4, **TINY)
    )
    bam = ModelConfig(
        **{**TINY, "num_hidden_layers": 2},
        intermediate_size=8,
        attention_bias=True,
        moe=MoEConfig(num_experts=2, moe_layers=[1], attn_experts=True, attn_top_k=1),
    )
    return {
        "mixtral": _saved_names(mixtral, tmp / "mixtral"),
        "qwen3_moe": _saved_names(qwen, tmp / "qwen3_moe"),
        "moelab": set(model_shapes(bam)),
    }


def test_fixture_names_are_real(real_names):
    for entry in json.loads(FIXTURE.read_text())["names"]:
        assert entry["name"] in real_names[entry["source"]], entry


def test_patterns_capture_what_the_fixture_says():
    for entry in json.loads(FIXTURE.read_text())["names"]:
        got = {k: list(m.groups()) for k, (p, _, _) in PATTERNS.items() if (m := re.match(p, entry["name"]))}
        assert got == entry["matches"], entry["name"]


def test_every_expert_and_router_of_the_real_models_is_found(real_names):
    """Every tensor under an `experts.` or a router of the three layouts matches an expert or router pattern."""
    specific = [
        re.compile(PATTERNS[k][0]) for k in ("ffn_router", "attn_router", "ffn_expert", "attn_expert")
    ]
    for names in real_names.values():
        for name in names:
            moe = ".experts." in name or name.endswith((".gate.weight", ".router.weight"))
            assert moe == any(p.match(name) for p in specific), name


@pytest.mark.parametrize("key", sorted(PATTERNS))
def test_patterns_keep_to_the_syntax_python_and_javascript_share(key):
    regex, groups, _ = PATTERNS[key]
    # No \d \w \s \b (Python widens them to Unicode), no (?P<..>), (?<..>), lookarounds or inline flags.
    assert re.search(r"\\[dwsbDWSB]|\(\?(?!:)", regex) is None, regex
    assert re.compile(regex).groups == len(groups)
