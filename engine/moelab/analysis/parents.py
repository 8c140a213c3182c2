"""Which dense checkpoint each expert was copied from.

`--against DIR ...` names them explicitly (one DIR for every expert, or one per expert).
Otherwise config.json's "moelab" record of the upcycle is read:
  parents: [{"role": "seed" | "expert", "path", "files": [...]}, ...]
  options: {"keep_seed": bool, ...}
Expert i comes from the i-th "expert" parent; with keep_seed the seed is one more expert, the
last (as methods/btx.py `expert_indices` orders them); with no expert parents (sparse
upcycling) every expert is a copy of the seed. Experts beyond the parents (UpIT's merged children) have none: their lineage is the
genealogy record, copied through to the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moelab.errors import ConfigError


@dataclass
class Parent:
    path: Path | None
    source: Literal["against", "config"] | None
    recorded: str | None = None  # the path as config.json has it (for messages)


def from_against(against: list[Path], num_experts: int) -> list[Parent]:
    if len(against) == 1:
        return [Parent(Path(against[0]), "against") for _ in range(num_experts)]
    if len(against) != num_experts:
        raise ConfigError(
            f"--against: {len(against)} directories for {num_experts} experts (give one for all, or one per expert)"
        )
    return [Parent(Path(p), "against") for p in against]


def from_config(meta: dict[str, Any], num_experts: int, ckpt: Path) -> list[Parent]:
    """Parents recorded by the upcycle; a recorded path that cannot be found gives path None."""
    source = f"{ckpt / 'config.json'}: moelab.parents"
    parents = meta.get("parents") or []
    if not isinstance(parents, list) or not all(isinstance(p, dict) for p in parents):
        raise ConfigError(f"{source} is not a list of objects")
    seeds = [p for p in parents if p.get("role") == "seed"]
    experts = [p for p in parents if p.get("role") == "expert"]
    options = meta.get("options") or {}
    keep_seed = bool(options.get("keep_seed")) if isinstance(options, dict) else False
    order = [*experts, *seeds[:1]] if keep_seed else experts
    if not experts:  # sparse upcycling: every expert is the seed (keep_seed changes nothing there)
        order = seeds[:1] * num_experts
    out = []
    for e in range(num_experts):
        if e >= len(order):
            out.append(Parent(None, None))
            continue
        recorded = order[e].get("path")
        if not isinstance(recorded, str) or not recorded:
            raise ConfigError(f"{source}[{parents.index(order[e])}].path is not a path")
        out.append(Parent(resolve(recorded, ckpt), "config", recorded))
    return out


def resolve(recorded: str, ckpt: Path) -> Path | None:
    """A recorded parent path: absolute, else relative to the working directory (where the upcycle
    ran, usually the workspace), else relative to an ancestor of the checkpoint (the workspace
    when analysis runs from elsewhere). None if no candidate is a directory."""
    p = Path(recorded)
    if p.is_absolute():
        return p if p.is_dir() else None
    if p.is_dir():
        return p
    for base in Path(ckpt).resolve().parents:
        if (base / p).is_dir():
            return base / p
    return None
