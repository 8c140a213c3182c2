"""UpIT (Hui et al., 2024): experts are intermediate checkpoints of one fine-tuning run.

- The --expert checkpoints (and the seed too with keep_seed) are the first experts.
- Expert expansion, while there are fewer than --num-experts: the pair that differs most (L2
  distance over the FFN weights of the MoE layers) gets a child
  seed + DARE(α·(E_j - seed) + (1-α)·(E_k - seed)), α ~ U(0, 1) from a generator seeded by
  --merge-seed; DARE drops each delta entry with probability p and rescales the rest by 1/(1-p).
  The child joins the pool, so later children may descend from earlier ones; a pair is merged
  at most once (while unmerged pairs remain).
- Full variant: expert e's FFN is pool member e. LoRA variant (--lora-rank r): the seed's FFN is
  shared and expert e is its rank-r SVD approximation of (pool member e - seed).
- Attention, embeddings, norms and head are the mean of the checkpoints (not of the children:
  they lie in the checkpoints' span anyway). Routers are random here; their pre-optimization on a
  seed set is training, in train/router_preopt.py.

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

import torch

from moelab.errors import ConfigError
from moelab.io.tensor_io import FileCache, TensorLoc, bytes_to_tensor
from moelab.methods.common import MixSpec, Source, moe_layer_indices, stderr_progress
from moelab.methods.options import UpcycleOptions

_FFN = ("gate_proj", "up_proj", "down_proj")
_TO_DENSE = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_FULL_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
_LORA_EXPERT = re.compile(r"^(model\.layers\.\d+)\.block_sparse_moe\.experts\.(\d+)\.lora_([ab])_(w[123])\.weight$")
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


def most_different_pair(dist: list[list[float]], merged: set[tuple[int, int]] | frozenset = frozenset()) -> tuple[int, int]:
    """(j, k), j < k, of the largest distance among the pairs not in `merged` (all pairs when every
    one is); ties go to the smallest indices."""
    pairs = [(j, k) for j in range(len(dist)) for k in range(j + 1, len(dist))]
    fresh = [p for p in pairs if p not in merged] or pairs
    return max(fresh, key=lambda p: (dist[p[0]][p[1]], -p[0], -p[1]))


def _mask_generator(merge_seed: int, child: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(merge_seed * 1_000_003 + child * 7919 + zlib.crc32(name.encode()))


class Pool:
    """The experts before they become MoE weights: the checkpoints, then the merged children."""

    def __init__(self, seed: Source, members: list[Source], opts: UpcycleOptions) -> None:
        self.seed, self.members, self.opts = seed, members, opts
        self.children: list[Child] = []

    def __len__(self) -> int:
        return len(self.members) + len(self.children)

    @staticmethod
    def read(files: FileCache, loc: TensorLoc) -> torch.Tensor:
        return bytes_to_tensor(files.read(loc), loc.dtype, loc.shape).to(torch.float64)

    def tensors(self, files: FileCache, name: str, upto: int | None = None) -> list[torch.Tensor]:
        """Dense tensor `name` of every member and of the first `upto` children (default all), float64."""
        base = self.read(files, self.seed.tensors[name])
        out = [self.read(files, m.tensors[name]) for m in self.members]
        for c in self.children[:upto]:
            j, k = c.parents
            delta = c.alpha * (out[j] - base) + (1.0 - c.alpha) * (out[k] - base)
            out.append(base + dare(delta, c.drop, c.rescale, _mask_generator(self.opts.merge_seed, c.expert, name)))
        return out


def expand(pool: Pool, names: list[str], n: int, progress: Callable[[str], None] | None = None) -> None:
    """Adds children to `pool` until it has n members (the genetic step of UpIT)."""
    opts = pool.opts
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
            j, k = most_different_pair(dist, {tuple(c.parents) for c in pool.children})
            child = Child(len(pool), [j, k], rng.random(), opts.dare_drop, opts.dare_rescale, dist[j][k])
            pool.children.append(child)
            if progress:
                progress(f"expert {child.expert} = DARE({child.alpha:.3f}·E{j} + {1 - child.alpha:.3f}·E{k}), "
                         f"parents {dist[j][k]:.4g} apart")
            new = [0.0] * (len(pool) - 1)
            for name in names:
                ts = pool.tensors(files, name)
                for i in range(len(new)):
                    new[i] += float((ts[-1] - ts[i]).square().sum())
            for row, v in zip(sq, new):
                row.append(v)
            sq.append([*new, 0.0])


def lora_factors(delta: torch.Tensor, rank: int, scale: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
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

    def __init__(self, pool: Pool, n_members: int, rank: int, alpha: float) -> None:
        self.pool, self.n_members, self.rank, self.scale = pool, n_members, rank, alpha / rank if rank else 1.0
        self._key: tuple[str, str] | None = None
        self._value: list = []

    def _cached(self, kind: str, dense: str, files: FileCache) -> list:
        if self._key != (kind, dense):
            ts = self.pool.tensors(files, dense)
            if kind == "full":
                self._value = ts
            else:
                base = self.pool.read(files, self.pool.seed.tensors[dense])
                self._value = [lora_factors(t - base, self.rank, self.scale,
                                            _mask_generator(self.pool.opts.merge_seed, e, "lora:" + dense))
                               for e, t in enumerate(ts)]
            self._key = (kind, dense)
        return self._value

    def __call__(self, name: str) -> TensorLoc | Callable[[FileCache], torch.Tensor] | None:
        if m := _SHARED.match(name):
            return self.pool.seed.tensors[f"{m[1]}.mlp.{m[2]}.weight"]
        if m := _LORA_EXPERT.match(name):
            dense, e, ab = f"{m[1]}.mlp.{_TO_DENSE[m[4]]}.weight", int(m[2]), m[3]
            return lambda files: self._cached("lora", dense, files)[e][0 if ab == "a" else 1]
        if (m := _FULL_EXPERT.match(name)) and int(m[2]) >= self.n_members:  # checkpoints are plain copies
            dense, e = f"{m[1]}.mlp.{_TO_DENSE[m[3]]}.weight", int(m[2])
            return lambda files: self._cached("full", dense, files)[e]
        return None


def mix_spec(opts: UpcycleOptions, seed: Source, experts: list[Source], progress: Callable[[str], None] | None = None) -> MixSpec:
    members = [*experts, seed] if opts.keep_seed else list(experts)
    if not experts:
        raise ConfigError("--expert: upit needs the intermediate checkpoints of a fine-tuning run (one --expert each)")
    n = opts.num_experts if opts.num_experts is not None else len(members)
    if n < len(members):
        raise ConfigError(f"--num-experts {n}: fewer than the {len(members)} checkpoints given (upit only adds experts)")
    if n > len(members) and len(members) < 2:
        raise ConfigError(f"--num-experts {n}: expanding to more experts merges pairs of checkpoints; give at least two --expert")
    if not 0.0 <= opts.dare_drop < 1.0:
        raise ConfigError(f"--dare-drop {opts.dare_drop}: must be in [0, 1)")
    cfg = seed.cfg
    if opts.lora_rank < 0 or opts.lora_rank > min(cfg.hidden_size, cfg.intermediate_size):
        raise ConfigError(f"--lora-rank {opts.lora_rank}: must be between 0 (full experts) and "
                          f"{min(cfg.hidden_size, cfg.intermediate_size)} (the FFN's smaller side)")
    pool = Pool(seed, members, opts)
    layers = moe_layer_indices(opts.moe_layers, cfg.num_hidden_layers)
    names = [f"model.layers.{i}.mlp.{p}.weight" for i in layers for p in _FFN]
    expand(pool, names, n, progress or stderr_progress("upcycle upit"))

    idx = list(range(1, len(experts) + 1)) + ([0] if opts.keep_seed else [])
    lora_alpha = float(opts.lora_rank)  # scale 1: the SVD factors carry the delta's size
    meta = {
        "variant": "lora" if opts.lora_rank else "full",
        "genealogy": [asdict(c) for c in pool.children],
        "distance": "L2 over the FFN weights of the MoE layers",
    }
    return MixSpec(
        sources=[seed, *experts],
        expert_sources=idx + [0] * len(pool.children),  # children: computed, see _Computed
        shared_sources=idx,
        lora_rank=opts.lora_rank, lora_alpha=lora_alpha if opts.lora_rank else 0.0,
        compute=_Computed(pool, len(members), opts.lora_rank, lora_alpha),
        meta=meta,
    )
