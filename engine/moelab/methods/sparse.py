"""Sparse upcycling (Komatsuzaki et al., 2022): every expert is a copy of the seed's FFN;
attention, embeddings and norms are the seed's; routers are new."""

from __future__ import annotations

from moelab.errors import ConfigError
from moelab.methods.common import MixSpec, Source
from moelab.methods.options import UpcycleOptions

DEFAULT_EXPERTS = 4


def mix_spec(opts: UpcycleOptions, seed: Source, experts: list[Source]) -> MixSpec:
    if experts:
        raise ConfigError(
            "--expert: sparse upcycling copies the seed's FFN into every expert; pass no --expert "
            "(use btx or bam-* to mix separately trained experts)"
        )
    n = opts.num_experts if opts.num_experts is not None else DEFAULT_EXPERTS
    if n < 1:
        raise ConfigError(f"--num-experts {n}: must be at least 1")
    # keep_seed adds nothing here: every expert already is the seed.
    return MixSpec(sources=[seed], expert_sources=[0] * n, shared_sources=[0])
