"""Which tensors of a checkpoint form MoE layers, found from the tensor names alone.

Names are Mixtral's and the engine's (the patterns of io/layout.py):
  ffn : model.layers.L.block_sparse_moe.gate.weight [E, d] and ...experts.E.{w1,w2,w3}.weight
  attn: model.layers.L.self_attn.router.weight [E, d] and ...self_attn.experts.E.{q,k,v,o}_proj.weight
        (shared-KV checkpoints have only q_proj and o_proj per expert)
Reading the names rather than config.json means a checkpoint whose config and tensors disagree
is analysed as it is stored, and the checks here name the tensor at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from moelab.analysis.source import FLOAT_DTYPES
from moelab.errors import CheckpointError, MoELabError
from moelab.io import layout
from moelab.models.routing import ROUTER_KINDS, RouterKind

_ROUTER = {"ffn": layout.FFN_ROUTER, "attn": layout.ATTN_ROUTER}
_EXPERT = {"ffn": layout.FFN_EXPERT, "attn": layout.ATTN_EXPERT}
# The dense tensor an expert matrix was copied from, in the parent checkpoint's layer L.
PARENT_TENSOR = {
    "ffn": {"w1": "mlp.gate_proj", "w3": "mlp.up_proj", "w2": "mlp.down_proj"},
    "attn": {p: f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
}
# Report order of matrices (anything else, e.g. UpIT's LoRA factors, follows sorted by name).
_ORDER = ["w1", "w2", "w3", "q_proj", "k_proj", "v_proj", "o_proj"]
_STEP = re.compile(r"(?:^|[-_])(?:step|checkpoint|ckpt)[-_]?0*(\d+)$", re.IGNORECASE)


@dataclass
class Group:
    """One router and the experts it routes between, in one layer."""

    layer: int
    router: RouterKind
    router_tensor: str
    num_experts: int
    matrices: dict[str, list[str]] = field(default_factory=dict)  # matrix -> tensor name of expert e

    def parent_tensor(self, matrix: str) -> str | None:
        base = PARENT_TENSOR[self.router].get(matrix)
        return f"model.layers.{self.layer}.{base}.weight" if base else None


def find_groups(shapes: dict[str, tuple[list[int], str]], where: Path) -> list[Group]:
    """The MoE groups of a checkpoint, sorted by layer, attention before FFN (forward order)."""
    routers: dict[tuple[int, RouterKind], str] = {}
    experts: dict[tuple[int, RouterKind], dict[str, dict[int, str]]] = {}
    for name in shapes:
        for kind in ROUTER_KINDS:
            m = _ROUTER[kind].match(name)
            if m:
                routers[(int(m[1]), kind)] = name
            m = _EXPERT[kind].match(name)
            # Matrices only: biases, and the per-expert q/k norm weights of BAM's attention
            # experts (Qwen3, OLMo2, Gemma3 families) are vectors.
            if m and m[4] == "weight" and (kind == "ffn" or m[3].endswith("_proj")):
                experts.setdefault((int(m[1]), kind), {}).setdefault(m[3], {})[int(m[2])] = name
    groups = []
    for key in sorted(set(routers) | set(experts), key=lambda k: (k[0], k[1] != "attn")):
        layer, kind = key
        what = f"{where}: layer {layer} ({kind})"
        router = routers.get(key)
        if router is None:
            raise CheckpointError(f"{what}: experts without a router tensor")
        rshape, rdtype = shapes[router]
        if len(rshape) != 2 or rshape[0] < 1:
            raise CheckpointError(
                f"{where}: router {router!r} has shape {rshape}, expected [experts, hidden]"
            )
        if rdtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{where}: router {router!r} has dtype {rdtype}, expected a float dtype")
        n = rshape[0]
        mats = experts.get(key)
        if not mats:
            raise CheckpointError(f"{what}: router {router!r} has no expert tensors")
        g = Group(layer, kind, router, n)
        for mat in sorted(mats, key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m)):
            by_e = mats[mat]
            missing = [e for e in range(n) if e not in by_e]
            if missing:
                raise CheckpointError(
                    f"{what}: router has {n} experts but expert {missing[0]} has no {mat!r} tensor"
                )
            extra = sorted(e for e in by_e if e >= n)
            if extra:
                raise CheckpointError(
                    f"{what}: tensor {by_e[extra[0]]!r} names expert {extra[0]} but the router has {n}"
                )
            names = [by_e[e] for e in range(n)]
            shape0 = shapes[names[0]][0]
            for nm in names:
                shape, dtype = shapes[nm]
                if shape != shape0:
                    raise CheckpointError(f"{where}: tensor {nm!r} has shape {shape}, expert 0 has {shape0}")
                if dtype not in FLOAT_DTYPES or not shape:
                    raise CheckpointError(f"{where}: tensor {nm!r} ({dtype} {shape}) is not a float matrix")
            g.matrices[mat] = names
        groups.append(g)
    if not groups:
        raise MoELabError(
            f"{where}: no MoE layers (no block_sparse_moe or self_attn.experts tensors): is it a dense checkpoint?"
        )
    return groups


def first_mismatch(
    a: dict[str, tuple[list[int], str]], b: dict[str, tuple[list[int], str]], a_name: str, b_name: str
) -> str | None:
    """The first tensor (by name) whose presence or shape differs, as a sentence; None if none."""
    for name in sorted(set(a) | set(b)):
        if name not in b:
            return f"tensor {name!r} is in {a_name} but not in {b_name}"
        if name not in a:
            return f"tensor {name!r} is in {b_name} but not in {a_name}"
        if a[name][0] != b[name][0]:
            return f"tensor {name!r} has shape {a[name][0]} in {a_name} but {b[name][0]} in {b_name}"
    return None


def step_of(ckpt: Path) -> int | None:
    """The training step in a checkpoint directory's name (step-000100 -> 100), if any."""
    m = _STEP.search(Path(ckpt).resolve().name)
    return int(m[1]) if m else None


def expand_checkpoints(paths: list[Path]) -> list[Path]:
    """Each path as given, except a run directory (has checkpoints/) or a checkpoints directory
    (has step-* children but no config.json), which stand for their complete checkpoints in step order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / "config.json").exists() or not p.is_dir():
            out.append(p)
            continue
        base = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        steps = [
            c
            for c in base.iterdir()
            if c.is_dir() and step_of(c) is not None and (c / "config.json").exists()
        ]
        if not steps:
            out.append(p)  # let the reader say what is wrong with it
            continue
        out.extend(sorted(steps, key=lambda c: (step_of(c), c.name)))
    return out
