"""Branch-Train-MiX (Sukhbaatar et al., 2024): expert i's FFN is dense expert i's; attention,
embeddings, norms and head are the uniform mean of the experts'; routers are new.

BAM (bam.py) mixes the same way and adds attention experts, so the choice of experts lives here.
"""

from __future__ import annotations

from moelab.errors import ConfigError
from moelab.methods.common import MixSpec, Source
from moelab.methods.options import UpcycleOptions


def expert_indices(opts: UpcycleOptions, experts: list[Source]) -> list[int]:
    """Source indices of the experts: the --expert checkpoints in order (sources 1..n), then the
    seed (source 0) when keep_seed asks for it as one more expert (BAM's general-text expert)."""
    idx = list(range(1, len(experts) + 1)) + ([0] if opts.keep_seed else [])
    if not idx:
        raise ConfigError(f"--expert: {opts.method} needs at least one expert checkpoint (or --keep-seed)")
    if opts.num_experts is not None and opts.num_experts != len(idx):
        raise ConfigError(
            f"--num-experts {opts.num_experts}: {opts.method} makes one expert per dense expert "
            f"checkpoint ({len(experts)}{' + the seed' if opts.keep_seed else ''} = {len(idx)})"
        )
    return idx


def mix_spec(opts: UpcycleOptions, seed: Source, experts: list[Source]) -> MixSpec:
    idx = expert_indices(opts, experts)
    return MixSpec(sources=[seed, *experts], expert_sources=idx, shared_sources=idx)
