"""The JSON that `moelab analyze` writes, its warnings, and the atomic write.

Schema (version 1; fields are only ever added, never renamed or re-typed, within a version).
Floats are plain JSON numbers; `null` marks a value that is undefined (a cosine with a zero
vector, a distance from a zero reference) or unavailable (no parent found).

Analysis (`moelab analyze --ckpt DIR [--ckpt DIR ...]`):

    {
      "version": 1,
      "mode": "analyze",
      "method": str,                 # config.json "moelab.method" of the first checkpoint ("" if none)
      "threshold": float,            # weight cosine above which experts count as collapsed
      "router_eps": float,           # router row norm below which a router vector counts as zero
      "checkpoints": [{"path": str, "step": int | null}],   # in the order given; [0] is the drift
                                     # reference, [-1] the one similarity and norms describe
      "parents": [{"expert": int, "path": str | null, "source": "against" | "config" | null,
                   "used": bool}],     # used: found and of this architecture (else a warning says why)
      "layers": [                    # one entry per layer and router, by layer, "attn" before "ffn"
        {
          "layer": int,
          "router": "ffn" | "attn",
          "num_experts": E,
          "router_norms": [E floats],           # L2 norm of each expert's router row (last ckpt)
          "router_cosine": [[E x E]],           # cosine between router rows (last ckpt)
          "expert_norms": {matrix: [E floats]}, # Frobenius norm of each expert's matrix (last ckpt)
          "expert_cosine": {matrix: [[E x E]]}, # cosine of flattened weights (last ckpt);
                                     # matrix: "w1","w2","w3" (ffn), "q_proj","k_proj","v_proj",
                                     # "o_proj" (attn; shared-KV: "q_proj","o_proj" only), and any
                                     # other per-expert matrix stored (e.g. UpIT LoRA factors)
          "drift": {
            "steps": [int | null per checkpoint],
            "experts": [[per checkpoint] per expert],   # ||W_t - W_0|| / ||W_0||, all matrices
            "router": [per checkpoint],                 # ||R_t - R_0|| / ||R_0||, whole router
            "router_norms": [[E floats] per checkpoint]
          },
          "parent_distance": [per expert float | null], # ||W_i - P_i|| / ||P_i|| (last ckpt) over
                                     # the matrices with a dense counterpart: w1=mlp.gate_proj,
                                     # w3=mlp.up_proj, w2=mlp.down_proj, x_proj=self_attn.x_proj
          "parent_distance_by_matrix": {matrix: [per expert float | null]}
        }
      ],
      "warnings": [{"layer": int | null, "router": "ffn" | "attn" | null, "kind": str,
                    "experts": [int], "message": str}],
          # kind: "collapsed_experts"  weight cosine > threshold for every matrix (one warning per
          #                            group of experts linked by such pairs)
          #       "router_near_zero"   router rows with norm < router_eps
          #       "router_identical"   router rows with cosine > 0.999 (grouped likewise)
          #       "parent_unavailable" a parent recorded in config.json is missing or mismatched
      "genealogy": [...]             # config.json "moelab.genealogy" copied through (UpIT:
                                     # {"expert", "parents": [j, k], "alpha", "drop"}), else []
    }

Comparison (`moelab analyze --compare A B`):

    {
      "version": 1,
      "mode": "compare",
      "a": str, "b": str,
      "num_tensors": int, "num_changed": int,
      "tensors": [{"name": str, "shape": [int], "dtype_a": str, "dtype_b": str,
                   "norm_a": float, "abs_change": float,      # ||A - B||
                   "rel_change": float | null}]               # ||A - B|| / ||A||; null if ||A|| = 0
          # only tensors that differ, largest rel_change first (null, i.e. infinite, first of all)
    }
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from moelab.io.atomic import write_text_atomic

VERSION = 1
IDENTICAL_ROUTER_COSINE = 0.999


def warning(
    layer: int | None, router: str | None, kind: str, experts: list[int], message: str
) -> dict[str, Any]:
    return {"layer": layer, "router": router, "kind": kind, "experts": experts, "message": message}


def layer_warnings(entry: dict[str, Any], threshold: float, eps: float) -> list[dict[str, Any]]:
    """Collapsed experts, near-zero and identical router rows of one layer entry."""
    layer, router, n = entry["layer"], entry["router"], entry["num_experts"]
    where = f"layer {layer} {router}"
    out = []
    mats = entry["expert_cosine"]
    pairs = [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if mats and all(_above(c[i][j], threshold) for c in mats.values())
    ]
    for grp in _components(n, pairs):
        worst = min(min(c[i][j] for c in mats.values()) for i, j in pairs if i in grp)
        out.append(
            warning(
                layer,
                router,
                "collapsed_experts",
                grp,
                f"{where}: experts {_list(grp)} collapsed onto each other (weight cosine > "
                f"{threshold} in {', '.join(mats)}; lowest {worst:.4f})",
            )
        )
    zero = [e for e, v in enumerate(entry["router_norms"]) if v < eps]
    if zero:
        out.append(
            warning(
                layer,
                router,
                "router_near_zero",
                zero,
                f"{where}: router vectors of experts {_list(zero)} are near zero (norm < {eps:g})",
            )
        )
    rc = entry["router_cosine"]
    same = [(i, j) for i in range(n) for j in range(i + 1, n) if _above(rc[i][j], IDENTICAL_ROUTER_COSINE)]
    for grp in _components(n, same):
        out.append(
            warning(
                layer,
                router,
                "router_identical",
                grp,
                f"{where}: router vectors of experts {_list(grp)} are identical "
                f"(cosine > {IDENTICAL_ROUTER_COSINE}): the router cannot tell them apart",
            )
        )
    return out


def _above(v: float | None, t: float) -> bool:
    return v is not None and v > t


def _components(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Groups of experts linked by pairs (union-find), each sorted, groups by smallest expert."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i, j in pairs:
        for x in (i, j):
            groups.setdefault(find(x), [])
    for x in range(n):
        if find(x) in groups:
            groups[find(x)].append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def _list(xs: list[int]) -> str:
    return ", ".join(map(str, xs))


def clean(obj: Any) -> Any:
    """NaN and infinities -> null, so the file is strict JSON that any reader (JSON.parse) accepts."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(clean(report), allow_nan=False, separators=(",", ":")) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    """Atomically (temp file + rename): a reader such as the extension's cache never sees half a file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, dumps(report))
    # The temp file was created 0600 (mkstemp); give the result the mode any new file would get,
    # so a shared run directory's analysis.json is readable by whoever can read the checkpoint.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(out, 0o666 & ~mask)
