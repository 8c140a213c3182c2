"""Stacked expert parameters in memory <-> one tensor per expert on disk.

Disk names are Mixtral's (`block_sparse_moe.experts.{e}.w1.weight`) and, for BAM attention
experts, `self_attn.experts.{e}.q_proj.weight` (bias: `.bias`; per-expert q/k norms:
`self_attn.experts.{e}.q_norm.weight`). In memory a module's `experts.w1` holds all experts
stacked on dim 0; `experts.q_bias` stacks the q biases.
"""

from __future__ import annotations

import re

import torch

_STACKED = re.compile(
    r"^(?P<prefix>.*\.experts)\.(?P<name>w1|w2|w3|q_proj|k_proj|v_proj|o_proj|q_norm|k_norm|lora_[ab]_w[123])$"
)
_STACKED_BIAS = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<name>[qkv])_bias$")
_PER_EXPERT = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<e>\d+)\.(?P<name>\w+)\.(?P<kind>weight|bias)$")


# Qwen3-MoE (transformers' Qwen2/Qwen3-MoE layout) names the router `mlp.gate` and the experts'
# projections by their dense names; the engine's disk names are Mixtral's. Written for model_type
# qwen3_moe, accepted on read whatever the model_type.
_TO_QWEN3_MOE = [
    (re.compile(r"\.block_sparse_moe\.gate\.weight$"), ".mlp.gate.weight"),
    (re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.w1\.weight$"), r".mlp.experts.\1.gate_proj.weight"),
    (re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.w3\.weight$"), r".mlp.experts.\1.up_proj.weight"),
    (re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.w2\.weight$"), r".mlp.experts.\1.down_proj.weight"),
]
_FROM_QWEN3_MOE = [
    (re.compile(r"\.mlp\.gate\.weight$"), ".block_sparse_moe.gate.weight"),
    (re.compile(r"\.mlp\.experts\.(\d+)\.gate_proj\.weight$"), r".block_sparse_moe.experts.\1.w1.weight"),
    (re.compile(r"\.mlp\.experts\.(\d+)\.up_proj\.weight$"), r".block_sparse_moe.experts.\1.w3.weight"),
    (re.compile(r"\.mlp\.experts\.(\d+)\.down_proj\.weight$"), r".block_sparse_moe.experts.\1.w2.weight"),
]


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, name)
        if n:
            return new
    return name


def native_name(name: str, model_type: str) -> str:
    """The engine's disk name of a tensor -> its name in `model_type`'s files."""
    return _rename(name, _TO_QWEN3_MOE) if model_type == "qwen3_moe" else name


def engine_name(name: str) -> str:
    """A tensor name from any layout the engine reads (Mixtral's, Qwen3-MoE's) -> the engine's disk name."""
    return _rename(name, _FROM_QWEN3_MOE) if ".mlp.gate.weight" in name or ".mlp.experts." in name else name


def to_disk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        m = _STACKED.match(name)
        b = _STACKED_BIAS.match(name)
        if m:
            for e in range(t.shape[0]):
                out[f"{m['prefix']}.{e}.{m['name']}.weight"] = t[e]
        elif b:
            for e in range(t.shape[0]):
                out[f"{b['prefix']}.{e}.{b['name']}_proj.bias"] = t[e]
        else:
            out[name] = t
    return out


def from_disk(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    groups: dict[str, dict[int, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        name = engine_name(name)
        m = _PER_EXPERT.match(name)
        if m:
            key = (
                f"{m['prefix']}.{m['name']}"
                if m["kind"] == "weight"
                else f"{m['prefix']}.{m['name'][0]}_bias"
            )
            groups.setdefault(key, {})[int(m["e"])] = t
        else:
            out[name] = t
    for key, parts in groups.items():
        out[key] = torch.stack([parts[e] for e in sorted(parts)])
    return out


def disk_name_of(internal: str, expert: int) -> str:
    """The disk name of one expert's slice of a stacked parameter."""
    m = _STACKED.match(internal)
    if m:
        return f"{m['prefix']}.{expert}.{m['name']}.weight"
    b = _STACKED_BIAS.match(internal)
    if b:
        return f"{b['prefix']}.{expert}.{b['name']}_proj.bias"
    raise KeyError(internal)
