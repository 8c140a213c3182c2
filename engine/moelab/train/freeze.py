"""Which parameters a run trains: the `freeze` option of the train config and the experiment.

Every parameter is one of four parts, named by where it sits in the model:

- router:      an FFN router (`block_sparse_moe.gate`) or an attention router (`self_attn.router`)
- ffn expert:  an FFN expert (`block_sparse_moe.experts.*`; UpIT's LoRA factors included)
- attn expert: a per-expert attention projection (`self_attn.experts.*`, BAM)
- other:       the rest: embeddings, every norm, the LM head, dense FFNs (layers outside the MoE,
               and the shared FFN under UpIT's LoRA experts), and attention that is no expert's
               (plain attention, BAM shared-KV's shared K and V)

A freeze group is a set of those parts; a parameter is frozen when any listed group holds it:

- backbone:  other (everything except the MoE's experts and routers)
- experts:   ffn expert
- attention: attn expert, and the parts of `other` under `self_attn` (every attention weight but the router)
- routers:   router

Frozen parameters get requires_grad=False before the model is wrapped (DDP and FSDP then leave
them alone) and are left out of the optimizer, so they stay bit-identical.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from moelab.errors import ConfigError
from moelab.train.config import FreezeGroup

FREEZE_GROUPS: tuple[str, ...] = typing.get_args(FreezeGroup)


def part_of(name: str) -> str:
    """router | ffn expert | attn expert | other, from a parameter's (internal) name."""
    if ".block_sparse_moe.gate." in name or ".self_attn.router." in name:
        return "router"
    if ".block_sparse_moe.experts." in name:
        return "ffn expert"
    if ".self_attn.experts." in name:
        return "attn expert"
    return "other"


def groups_of(name: str) -> set[str]:
    """The freeze groups that hold parameter `name`."""
    part = part_of(name)
    groups = {
        "router": {"routers"},
        "ffn expert": {"experts"},
        "attn expert": {"attention"},
        "other": {"backbone"},
    }[part]
    if part == "other" and ".self_attn." in name:
        groups = groups | {"attention"}
    return groups


@dataclass
class FreezeSummary:
    groups: list[str]
    frozen: int  # parameter elements (tied weights counted once)
    trainable: int

    def to_dict(self) -> dict[str, object]:
        return {"groups": self.groups, "frozen_params": self.frozen, "trainable_params": self.trainable}


def apply_freeze(model: nn.Module, groups: Sequence[str]) -> FreezeSummary:
    """Sets requires_grad=False on every parameter of a listed group (and True on the others)."""
    unknown = [g for g in groups if g not in FREEZE_GROUPS]
    if unknown:
        raise ConfigError(f"freeze: {unknown[0]!r} is not a group ({', '.join(FREEZE_GROUPS)})")
    wanted = set(groups)
    frozen = trainable = 0
    for name, p in model.named_parameters():  # tied weights appear once, under their first name
        freeze = bool(groups_of(name) & wanted)
        p.requires_grad_(not freeze)
        if freeze:
            frozen += p.numel()
        else:
            trainable += p.numel()
    if groups and trainable == 0:
        raise ConfigError(f"freeze: {', '.join(groups)} leaves no parameter of this model to train")
    return FreezeSummary(sorted(wanted, key=FREEZE_GROUPS.index), frozen, trainable)
