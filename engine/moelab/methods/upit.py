"""UpIT (Hui et al., 2024): experts are intermediate checkpoints of one fine-tuning run.

- The --expert checkpoints (and the seed too with keep_seed) are the first experts. An --expert may
  also be a PEFT LoRA adapter directory (io/peft_adapter.py): that member is the seed with the
  adapter merged in (W + s·B·A on the FFN projections it adapts), and as a LoRA expert it keeps
  the adapter's own factors.
- Expert expansion, while there are fewer than --num-experts: the pair that differs most (L2
  distance over the FFN weights of the MoE layers) gets a child
  seed + DARE(α·(E_j - seed) + (1-α)·(E_k - seed)), α ~ U(0, 1) from a generator seeded by
  --merge-seed; DARE drops each delta entry with probability p and rescales the rest by 1/(1-p).
  The child joins the pool, so later children may descend from earlier ones; a pair is merged
  at most once (while unmerged pairs remain).
- Full variant: expert e's FFN is pool member e. LoRA variant (--lora-rank r): the seed's FFN is
  shared and expert e is its rank-r SVD approximation of (pool member e - seed); with adapters the
  rank is theirs and adapter members are copied factor for factor.
- Attention, embeddings, norms and head are the mean of the checkpoints (not of the children:
  they lie in the checkpoints' span anyway; an adapter member counts as the seed there). Routers
  are random here; their pre-optimization on a seed set is training, in train/router_preopt.py.
- config.json's moelab.members says what each first expert is (checkpoint, adapter or seed, and
  its path), moelab.genealogy what each child is: enough to rebuild every expert's *dense* model
  (`dense_pool`, `Pool.dense_state`), which router pre-optimization labels its seed set with. A
  child's dense model is the same DARE merge applied to every tensor of its parents' dense models
  (same α, same masks: the masks are seeded by tensor name), so its FFN in the MoE layers is
  exactly the MoE's expert; attention, embeddings and norms are merged the same way.

Every child tensor is recomputed from its parents when needed (masks come from a generator
seeded by (merge_seed, child, tensor name)), so memory stays at one FFN matrix per expert.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from moelab.errors import ConfigError
from moelab.io import layout
from moelab.io.peft_adapter import LoRAAdapter, open_adapter
from moelab.io.tensor_io import FileCache, TensorLoc, bytes_to_tensor
from moelab.methods.common import (
    MixSpec,
    Source,
    check_compatible,
    moe_layer_indices,
    open_source,
    stderr_progress,
)
from moelab.methods.options import UpcycleOptions

_FFN = ("gate_proj", "up_proj", "down_proj")
_TO_DENSE = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_LORA_MATRIX = re.compile(r"^lora_([ab])_(w[123])$")  # an expert's factor, in io/layout's FFN_EXPERT
_SHARED = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.shared_mlp\.(\w+_proj)\.weight$")
LORA_INIT_STD = 0.02  # A rows of directions the delta does not use: trainable, with B = 0 they change nothing


@dataclass
class Child:
    """One merged expert: the genealogy record config.json keeps (moelab.genealogy)."""

    expert: int
    parents: list[int]
    alpha: float  # weight of parents[0]; parents[1] gets 1 - alpha
    drop: float
    rescale: bool
    distance: float  # L2 distance between the parents, the reason they were picked


def dare(delta: torch.Tensor, p: float, rescale: bool, generator: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al., 2024): drop each entry with probability p; with rescale the kept ones are
    divided by 1-p, which keeps the expectation of the delta."""
    if p <= 0:
        return delta
    kept = delta * (torch.rand(delta.shape, generator=generator, dtype=torch.float64) >= p).to(delta.dtype)
    return kept / (1.0 - p) if rescale else kept


def most_different_pair(
    dist: list[list[float]], merged: set[tuple[int, int]] | frozenset = frozenset()
) -> tuple[int, int]:
    """(j, k), j < k, of the largest distance among the pairs not in `merged` (all pairs when every
    one is); ties go to the smallest indices."""
    pairs = [(j, k) for j in range(len(dist)) for k in range(j + 1, len(dist))]
    fresh = [p for p in pairs if p not in merged] or pairs
    return max(fresh, key=lambda p: (dist[p[0]][p[1]], -p[0], -p[1]))


def _mask_generator(merge_seed: int, child: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(merge_seed * 1_000_003 + child * 7919 + zlib.crc32(name.encode()))


Member = Source | LoRAAdapter


class Pool:
    """The experts before they become MoE weights: the checkpoints (or adapters), then the merged children."""

    def __init__(self, seed: Source, members: list[Member], merge_seed: int) -> None:
        self.seed, self.members, self.merge_seed = seed, members, merge_seed
        self.children: list[Child] = []

    def __len__(self) -> int:
        return len(self.members) + len(self.children)

    @staticmethod
    def read(files: FileCache, loc: TensorLoc) -> torch.Tensor:
        return bytes_to_tensor(files.read(loc), loc.dtype, loc.shape).to(torch.float64)

    def _first(self, files: FileCache, m: Member, name: str, base: torch.Tensor) -> torch.Tensor:
        if isinstance(m, Source):
            return self.read(files, m.tensors[name])
        if name not in m.factors:
            return base
        a, b = (self.read(files, loc) for loc in m.factors[name])
        return base + m.scale * (b @ a)

    def _child(
        self, c: Child, name: str, base: torch.Tensor, tj: torch.Tensor, tk: torch.Tensor
    ) -> torch.Tensor:
        delta = c.alpha * (tj - base) + (1.0 - c.alpha) * (tk - base)
        return base + dare(delta, c.drop, c.rescale, _mask_generator(self.merge_seed, c.expert, name))

    def tensors(self, files: FileCache, name: str, upto: int | None = None) -> list[torch.Tensor]:
        """Dense tensor `name` of every member and of the first `upto` children (default all), float64."""
        base = self.read(files, self.seed.tensors[name])
        out = [self._first(files, m, name, base) for m in self.members]
        for c in self.children[:upto]:
            out.append(self._child(c, name, base, out[c.parents[0]], out[c.parents[1]]))
        return out

    def member(self, files: FileCache, name: str, e: int, base: torch.Tensor | None = None) -> torch.Tensor:
        """Dense tensor `name` of member e alone (a child computes only its ancestors), float64."""
        base = self.read(files, self.seed.tensors[name]) if base is None else base
        if e < len(self.members):
            return self._first(files, self.members[e], name, base)
        c = self.children[e - len(self.members)]
        j, k = c.parents
        return self._child(
            c, name, base, self.member(files, name, j, base), self.member(files, name, k, base)
        )

    def dense_state(self, e: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Member e's whole dense model ({disk name: tensor}), one tensor computed at a time."""
        with FileCache() as files:
            return {name: self.member(files, name, e).to(dtype) for name in self.seed.tensors}

    def describe(self, e: int) -> str:
        if e >= len(self.members):
            c = self.children[e - len(self.members)]
            return (
                f"DARE({c.alpha:.3f}·E{c.parents[0]} + {1 - c.alpha:.3f}·E{c.parents[1]}) of the dense models"
            )
        m = self.members[e]
        if isinstance(m, LoRAAdapter):
            return f"the seed with adapter {m.path} merged"
        return f"seed {m.path}" if m is self.seed else f"checkpoint {m.path}"


def expand(
    pool: Pool, names: list[str], n: int, opts: UpcycleOptions, progress: Callable[[str], None] | None = None
) -> None:
    """Adds children to `pool` until it has n members (the genetic step of UpIT)."""
    rng = random.Random(f"moelab:upit:{opts.merge_seed}")
    k0 = len(pool)
    sq = [[0.0] * k0 for _ in range(k0)]
    with FileCache() as files:
        for name in names:
            ts = pool.tensors(files, name)
            for j in range(k0):
                for k in range(j + 1, k0):
                    sq[j][k] += float((ts[j] - ts[k]).square().sum())
        for j in range(k0):
            for k in range(j):
                sq[j][k] = sq[k][j]
        while len(pool) < n:
            dist = [[math.sqrt(v) for v in row] for row in sq]
            # A merged pair is not picked again: its child lies between the two, so the pair would
            # stay the most different and every child would have the same parents.
            j, k = most_different_pair(dist, {(c.parents[0], c.parents[1]) for c in pool.children})
            child = Child(len(pool), [j, k], rng.random(), opts.dare_drop, opts.dare_rescale, dist[j][k])
            pool.children.append(child)
            if progress:
                progress(
                    f"expert {child.expert} = DARE({child.alpha:.3f}·E{j} + {1 - child.alpha:.3f}·E{k}), "
                    f"parents {dist[j][k]:.4g} apart"
                )
            new = [0.0] * (len(pool) - 1)
            for name in names:
                ts = pool.tensors(files, name)
                for i in range(len(new)):
                    new[i] += float((ts[-1] - ts[i]).square().sum())
            for row, v in zip(sq, new):
                row.append(v)
            sq.append([*new, 0.0])


def lora_factors(
    delta: torch.Tensor, rank: int, scale: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, in], B [out, r]) with scale·B·A the best rank-r approximation of delta (SVD).
    Directions the delta does not use get B = 0 and a small random A, so they still learn."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    root = (s / scale).sqrt()
    b, a = u * root, root[:, None] * vh
    top = float(s[0]) if s.numel() else 0.0
    dead = s <= top * 1e-7 if top > 0 else torch.ones_like(s, dtype=torch.bool)
    if dead.any():
        a[dead] = torch.randn(int(dead.sum()), a.shape[1], generator=generator, dtype=a.dtype) * LORA_INIT_STD
        b[:, dead] = 0.0
    return a, b


class _Computed:
    """The claim hook of the MixSpec: computes pool members (and their LoRA factors) per dense
    tensor, keeping only the latest tensor's results (the plan visits one projection at a time)."""

    def __init__(self, pool: Pool, rank: int, alpha: float) -> None:
        self.pool, self.rank, self.scale = pool, rank, alpha / rank if rank else 1.0
        self._key: tuple[str, str] | None = None
        self._value: list = []

    def _factors(self, files: FileCache, e: int, dense: str, t: torch.Tensor, base: torch.Tensor) -> tuple:
        m = self.pool.members[e] if e < len(self.pool.members) else None
        if isinstance(m, LoRAAdapter) and dense in m.factors:
            # The adapter's own factors; its scale folded into B when it differs from the MoE's.
            a, b = (self.pool.read(files, loc) for loc in m.factors[dense])
            return a, b * (m.scale / self.scale)
        return lora_factors(
            t - base, self.rank, self.scale, _mask_generator(self.pool.merge_seed, e, "lora:" + dense)
        )

    def _cached(self, kind: Literal["full", "lora"], dense: str, files: FileCache) -> list:
        if self._key != (kind, dense):
            ts = self.pool.tensors(files, dense)
            if kind == "full":
                self._value = ts
            else:
                base = self.pool.read(files, self.pool.seed.tensors[dense])
                self._value = [self._factors(files, e, dense, t, base) for e, t in enumerate(ts)]
            self._key = (kind, dense)
        return self._value

    def __call__(self, name: str) -> TensorLoc | Callable[[FileCache], torch.Tensor] | None:
        if m := _SHARED.match(name):
            return self.pool.seed.tensors[f"{m[1]}.mlp.{m[2]}.weight"]
        m = layout.FFN_EXPERT.match(name)
        if m is None or m[4] != "weight":
            return None
        prefix, e = f"model.layers.{m[1]}", int(m[2])
        if lora := _LORA_MATRIX.match(m[3]):
            dense, ab = f"{prefix}.mlp.{_TO_DENSE[lora[2]]}.weight", lora[1]
            return lambda files: self._cached("lora", dense, files)[e][0 if ab == "a" else 1]
        # Checkpoints are plain copies; children and adapter members are computed.
        if m[3] in _TO_DENSE and (
            e >= len(self.pool.members) or isinstance(self.pool.members[e], LoRAAdapter)
        ):
            dense = f"{prefix}.mlp.{_TO_DENSE[m[3]]}.weight"
            return lambda files: self._cached("full", dense, files)[e]
        return None


def _check_adapter(seed: Source, a: LoRAAdapter, layers: list[int]) -> None:
    """The adapter must fit the seed (shapes) and adapt only FFNs that become experts."""
    for name, (fa, fb) in a.factors.items():
        loc = seed.tensors.get(name)
        if loc is None:
            raise ConfigError(
                f"{a.path}: adapts {name.removesuffix('.weight')}, which the seed {seed.path} does not have "
                "(an adapter of another base model)"
            )
        out_f, in_f = loc.shape
        if fa.shape[1] != in_f or fb.shape[0] != out_f:
            raise ConfigError(
                f"{a.path}: {name.removesuffix('.weight')} factors {list(fa.shape)} x {list(fb.shape)} do "
                f"not fit the seed's weight {list(loc.shape)} (an adapter of another base model)"
            )
    dense = sorted(a.layers() - set(layers))
    if dense:
        raise ConfigError(
            f"{a.path}: adapts layer {dense[0]}'s FFN, which --moe-layers keeps dense "
            "(its delta would be lost)"
        )


def _lora_rank(opts: UpcycleOptions, cfg: Any, adapters: list[LoRAAdapter]) -> int:
    if adapters:
        ranks = sorted({a.rank for a in adapters})
        if len(ranks) > 1:
            raise ConfigError(
                f"--expert: the adapters have different ranks ({', '.join(map(str, ranks))}); "
                "the MoE's LoRA experts share one"
            )
        if opts.lora_rank not in (0, ranks[0]):
            raise ConfigError(
                f"--lora-rank {opts.lora_rank}: the adapters have rank {ranks[0]} (leave it out or give that)"
            )
        return ranks[0]
    if opts.lora_rank < 0 or opts.lora_rank > min(cfg.hidden_size, cfg.intermediate_size):
        raise ConfigError(
            f"--lora-rank {opts.lora_rank}: must be between 0 (full experts) and "
            f"{min(cfg.hidden_size, cfg.intermediate_size)} (the FFN's smaller side)"
        )
    return opts.lora_rank


def _member_record(pool: Pool, e: int) -> dict[str, Any]:
    m = pool.members[e]
    kind = "adapter" if isinstance(m, LoRAAdapter) else "seed" if m is pool.seed else "checkpoint"
    return {"expert": e, "kind": kind, "path": str(Path(m.path).resolve())}


def mix_spec(
    opts: UpcycleOptions, seed: Source, experts: list[Member], progress: Callable[[str], None] | None = None
) -> MixSpec:
    members: list[Member] = [*experts, seed] if opts.keep_seed else list(experts)
    if not experts:
        raise ConfigError(
            "--expert: upit needs the intermediate checkpoints of a fine-tuning run (one --expert each)"
        )
    n = opts.num_experts if opts.num_experts is not None else len(members)
    if n < len(members):
        raise ConfigError(
            f"--num-experts {n}: fewer than the {len(members)} checkpoints given (upit only adds experts)"
        )
    if n > len(members) and len(members) < 2:
        raise ConfigError(
            f"--num-experts {n}: expanding to more experts merges pairs of checkpoints; give at least two --expert"
        )
    if not 0.0 <= opts.dare_drop < 1.0:
        raise ConfigError(f"--dare-drop {opts.dare_drop}: must be in [0, 1)")
    cfg = seed.cfg
    layers = moe_layer_indices(opts.moe_layers, cfg.num_hidden_layers)
    adapters = [m for m in experts if isinstance(m, LoRAAdapter)]
    rank = _lora_rank(opts, cfg, adapters)
    for a in adapters:
        _check_adapter(seed, a, layers)
    pool = Pool(seed, members, opts.merge_seed)
    names = [f"model.layers.{i}.mlp.{p}.weight" for i in layers for p in _FFN]
    expand(pool, names, n, opts, progress or stderr_progress("upcycle upit"))

    checkpoints = [m for m in experts if isinstance(m, Source)]
    # Source index of each member: an adapter member's non-FFN tensors are the seed's.
    idx = [next((1 + i for i, c in enumerate(checkpoints) if c is m), 0) for m in members]
    scales = {a.scale for a in adapters}
    # Scale 1 (the SVD factors carry the delta's size), or the adapters' common scale so that
    # their factors are copied unchanged.
    lora_alpha = float(rank) * (scales.pop() if len(scales) == 1 else 1.0)
    meta = {
        "variant": "lora" if rank else "full",
        "members": [_member_record(pool, e) for e in range(len(members))],
        "genealogy": [asdict(c) for c in pool.children],
        "distance": "L2 over the FFN weights of the MoE layers",
    }
    return MixSpec(
        sources=[seed, *checkpoints],
        expert_sources=idx + [0] * len(pool.children),  # children: computed, see _Computed
        shared_sources=idx,
        lora_rank=rank,
        lora_alpha=lora_alpha if rank else 0.0,
        compute=_Computed(pool, rank, lora_alpha),
        meta=meta,
    )


def dense_pool(meta: dict[str, Any]) -> Pool:
    """The pool an upit checkpoint was made from, rebuilt from its config.json record (moelab.*)."""
    try:
        seed_path = next(Path(p["path"]) for p in meta["parents"] if p["role"] == "seed")
        records, genealogy, merge_seed = (
            meta["members"],
            meta["genealogy"],
            int(meta["options"]["merge_seed"]),
        )
    except (KeyError, StopIteration, TypeError, ValueError):
        raise ConfigError(
            "config.json: moelab record of an upit checkpoint without members, genealogy or "
            "seed (made by an older moelab?)"
        ) from None
    seed = open_source(seed_path, "seed")
    members: list[Member] = []
    for r in records:
        if r["kind"] == "seed":
            members.append(seed)
        elif r["kind"] == "adapter":
            members.append(open_adapter(Path(r["path"])))
        else:
            src = open_source(Path(r["path"]), "expert")
            check_compatible(seed, src)
            members.append(src)
    pool = Pool(seed, members, merge_seed)
    pool.children = [Child(**c) for c in genealogy]
    return pool
