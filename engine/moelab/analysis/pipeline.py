"""`analyze`: one pass over the MoE layers of a sequence of checkpoints, layer by layer.

For each router group and each expert matrix, row chunks of every expert are read from every
checkpoint (and from the dense parents) together, so each byte is read once and memory holds a
few [experts, chunk] float64 arrays, sized by `chunk_bytes` — never a layer, never a model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moelab.analysis import parents as parents_mod
from moelab.analysis.drift import Distance, relative, relative_distance
from moelab.analysis.report import VERSION, layer_warnings, warning
from moelab.analysis.similarity import Gram, router_stats
from moelab.analysis.source import ChunkReader, rows_per_chunk
from moelab.analysis.structure import Group, expand_checkpoints, find_groups, first_mismatch, step_of
from moelab.errors import ConfigError, MoELabError
from moelab.io.checkpoint import read_config_dict

DEFAULT_CHUNK_BYTES = 64 * 1024**2
ARRAYS_AT_PEAK = 12


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class AnalyzeOptions:
    checkpoints: list[Path]
    against: list[Path] = field(default_factory=list)
    threshold: float = 0.95
    router_eps: float = 1e-6
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    use_parents: bool = True  # parents recorded in config.json, when --against is not given
    progress: Callable[[str], None] | None = _stderr


def analyze(opts: AnalyzeOptions) -> dict[str, Any]:
    if not 0.0 < opts.threshold <= 1.0:
        raise ConfigError(f"--threshold {opts.threshold}: must be in (0, 1]")
    if opts.router_eps < 0:
        raise ConfigError(f"--router-eps {opts.router_eps}: must be >= 0")
    if opts.chunk_bytes <= 0:
        raise ConfigError("--chunk-mb: must be > 0")
    ckpts = expand_checkpoints(opts.checkpoints)
    if not ckpts:
        raise ConfigError("--ckpt: no checkpoint given")
    say = opts.progress or (lambda _m: None)
    configs = [read_config_dict(c) for c in ckpts]
    meta: dict[str, Any] = next((c["moelab"] for c in configs if isinstance(c.get("moelab"), dict)), {})
    genealogy = meta.get("genealogy", [])  # checked before the long part, not after it
    if not isinstance(genealogy, list):
        raise ConfigError(f"{ckpts[0] / 'config.json'}: moelab.genealogy is not a list")
    with ExitStack() as stack:
        readers = [stack.enter_context(ChunkReader(c)) for c in ckpts]
        shapes0 = readers[0].shapes()
        for c, r in zip(ckpts[1:], readers[1:]):
            mm = first_mismatch(shapes0, r.shapes(), str(ckpts[0]), str(c))
            if mm:
                raise MoELabError(f"checkpoints are not of one architecture: {mm}")
        groups = find_groups(shapes0, ckpts[0])
        n_experts = max(g.num_experts for g in groups)
        warnings: list[dict[str, Any]] = []
        parents = _parents(opts, meta, n_experts, ckpts[0])
        parent_readers = _open_parents(parents, groups, shapes0, stack, warnings)

        layers = []
        for i, g in enumerate(groups):
            say(f"analyze: [{i + 1}/{len(groups)}] layer {g.layer} {g.router} ({g.num_experts} experts)")
            entry = _analyze_group(g, readers, parent_readers, opts.chunk_bytes)
            entry["drift"]["steps"] = [step_of(c) for c in ckpts]
            layers.append(entry)
            warnings.extend(layer_warnings(entry, opts.threshold, opts.router_eps))

    return {
        "version": VERSION,
        "mode": "analyze",
        "method": str(meta.get("method", "")),
        "threshold": opts.threshold,
        "router_eps": opts.router_eps,
        "checkpoints": [{"path": str(c), "step": step_of(c)} for c in ckpts],
        "parents": [
            {
                "expert": e,
                "path": str(p.path) if p.path else None,
                "source": p.source if p.path else None,
                "used": parent_readers[e] is not None,
            }
            for e, p in enumerate(parents)
        ],
        "layers": layers,
        "warnings": warnings,
        "genealogy": genealogy,
    }


def _parents(opts: AnalyzeOptions, meta: dict[str, Any], n: int, ckpt: Path) -> list[parents_mod.Parent]:
    if opts.against:
        return parents_mod.from_against(opts.against, n)
    if opts.use_parents:
        return parents_mod.from_config(meta, n, ckpt)
    return [parents_mod.Parent(None, None) for _ in range(n)]


def _open_parents(
    parents: list[parents_mod.Parent],
    groups: list[Group],
    shapes: dict[str, tuple[list[int], str]],
    stack: ExitStack,
    warnings: list[dict[str, Any]],
) -> list[ChunkReader | None]:
    """A reader per expert (shared between experts of one parent), checked against every expert
    matrix before any data is read. Explicit --against parents that do not fit are errors;
    parents found through config.json that are missing or do not fit are dropped with one
    warning each, so that a parent moved or retrained since the upcycle does not block the rest."""
    experts_of: dict[str, list[int]] = {}
    for e, p in enumerate(parents):
        k = _parent_key(p)
        if k is not None:
            experts_of.setdefault(k, []).append(e)
    readers: dict[str, ChunkReader | None] = {}
    for key, experts in experts_of.items():
        p = parents[experts[0]]
        if p.path is None:
            readers[key] = None
            warnings.append(
                warning(
                    None,
                    None,
                    "parent_unavailable",
                    experts,
                    f"experts {', '.join(map(str, experts))}: parent {p.recorded!r} "
                    "recorded in config.json was not found",
                )
            )
            continue
        try:
            readers[key] = _open_parent(p.path, groups, shapes, stack)
        except MoELabError as err:
            if p.source == "against":
                raise
            readers[key] = None
            warnings.append(
                warning(
                    None,
                    None,
                    "parent_unavailable",
                    experts,
                    f"experts {', '.join(map(str, experts))}: parent from config.json skipped: {err}",
                )
            )
    return [readers.get(k) if k is not None else None for k in map(_parent_key, parents)]


def _parent_key(p: parents_mod.Parent) -> str | None:
    if p.path is not None:
        return str(p.path.resolve())
    return None if p.recorded is None else f"recorded:{p.recorded}"


def _open_parent(
    path: Path, groups: list[Group], shapes: dict[str, tuple[list[int], str]], stack: ExitStack
) -> ChunkReader:
    reader = stack.enter_context(ChunkReader(path))
    pshapes = reader.shapes()
    for g in groups:
        for mat, names in g.matrices.items():
            pname = g.parent_tensor(mat)
            if pname is None:
                continue
            if pname not in pshapes:
                raise MoELabError(
                    f"{path}: dense parent has no tensor {pname!r} (for layer {g.layer} {g.router} experts)"
                )
            if pshapes[pname][0] != shapes[names[0]][0]:
                raise MoELabError(
                    f"{path}: parent tensor {pname!r} has shape {pshapes[pname][0]}, "
                    f"the experts' {mat} has {shapes[names[0]][0]}"
                )
    return reader


def _analyze_group(
    g: Group, readers: list[ChunkReader], parent_readers: list[ChunkReader | None], chunk_bytes: int
) -> dict[str, Any]:
    n, steps = g.num_experts, len(readers)
    routers = [r.full(g.router_tensor) for r in readers]
    r_norms, r_cos = router_stats(routers[-1])
    drift = [Distance(n) for _ in readers]
    norms: dict[str, list[float]] = {}
    cosines: dict[str, list[list[float | None]]] = {}
    par: dict[str, Distance] = {}
    for mat, names in g.matrices.items():
        entry = readers[0].entry(names[0])
        pname = g.parent_tensor(mat)
        # Experts grouped by parent reader: each parent chunk is read once for all its experts.
        fams: dict[int, tuple[ChunkReader, list[int]]] = {}
        if pname is not None:
            for e in range(n):
                pr = parent_readers[e] if e < len(parent_readers) else None
                if pr is not None:
                    fams.setdefault(id(pr), (pr, []))[1].append(e)
        # What peaks at once: first, previous and current [E, chunk] arrays, a difference, a parent
        # chunk, the BLAS and conversion temporaries and allocator slack — about 12 arrays'
        # worth as bench/analyze_memory.py measures it, so that chunk_bytes ~ peak above baseline.
        step = rows_per_chunk(entry.cols * n, ARRAYS_AT_PEAK, chunk_bytes)
        gram, pd = Gram(n), Distance(n)
        for r0 in range(0, entry.rows, step):
            r1 = min(entry.rows, r0 + step)
            first = _stack(readers[0], names, r0, r1)
            drift[0].add_ref(first)
            last = first
            for t in range(1, steps):
                last = _stack(readers[t], names, r0, r1)
                drift[t].add(last, first)
            gram.add(last)
            for pr, experts in fams.values():
                p = pr.rows(pname, r0, r1).reshape(-1)  # type: ignore[arg-type]
                for e in experts:
                    pd.add_expert(e, last[e], p)
        norms[mat], cosines[mat] = gram.norms(), gram.cosine()
        if fams:
            par[mat] = pd
    has_parent = [e < len(parent_readers) and parent_readers[e] is not None for e in range(n)]

    def parent_rel(ds: list[Distance]) -> list[float | None]:
        return [
            relative(sum(float(d.diff2[e]) for d in ds), sum(float(d.ref2[e]) for d in ds))
            if has_parent[e] and ds
            else None
            for e in range(n)
        ]

    return {
        "layer": g.layer,
        "router": g.router,
        "num_experts": n,
        "router_norms": r_norms,
        "router_cosine": r_cos,
        "expert_norms": norms,
        "expert_cosine": cosines,
        "drift": {
            "steps": [],
            "experts": [[d.relative()[e] for d in drift] for e in range(n)],
            "router": [relative_distance(r, routers[0]) for r in routers],
            "router_norms": [router_stats(r)[0] for r in routers],
        },
        "parent_distance": parent_rel(list(par.values())),
        "parent_distance_by_matrix": {m: parent_rel([d]) for m, d in par.items()},
    }


def _stack(reader: ChunkReader, names: list[str], r0: int, r1: int) -> torch.Tensor:
    """[E, k]: the same rows of every expert, filled in place (no second copy as torch.stack makes)."""
    first = reader.rows(names[0], r0, r1).reshape(-1)
    out = torch.empty(len(names), first.numel(), dtype=torch.float64)
    out[0] = first
    del first
    for e in range(1, len(names)):
        out[e] = reader.rows(names[e], r0, r1).reshape(-1)
    return out
