"""Branch-Attend-Mix (Zhang et al., 2024): BTX's mixing plus attention experts.

bam-ekv: attention expert i is all of dense expert i's Q, K, V, O (and biases, and the q/k norms
of the families that have them: Qwen3, OLMo2, Gemma3).
bam-skv: per-expert Q and O (and q_norm); K and V are shared parameters, the mean of the experts',
and so is k_norm: it normalises the one shared K, so it goes with K, not with the experts.
Everything else is the experts' mean, as in BTX. The attention router is soft by default
(--attn-top-k 0), or top-k.
"""

from __future__ import annotations

from moelab.methods.btx import mix_spec as btx_mix_spec
from moelab.methods.common import MixSpec, Source
from moelab.methods.options import UpcycleOptions


def mix_spec(opts: UpcycleOptions, seed: Source, experts: list[Source]) -> MixSpec:
    spec = btx_mix_spec(opts, seed, experts)
    spec.attn_experts = True
    spec.shared_kv = opts.method == "bam-skv"
    return spec
