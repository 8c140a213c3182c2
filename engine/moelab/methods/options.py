"""What a weight surgery is asked to do: the options every method reads (api.py dispatches on them)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from moelab.models.routing import RouterWeights

Method = Literal["sparse", "btx", "bam-ekv", "bam-skv", "upit"]
METHODS: tuple[Method, ...] = typing.get_args(Method)
# How an MoE's routers start: as the surgery draws them, or from hidden-state means (mergekit-style).
RouterInit = Literal["random", "hidden"]


@dataclass
class UpcycleOptions:
    method: Method
    seed: Path
    experts: list[Path] = field(
        default_factory=list
    )  # dense expert checkpoints (btx, bam; upit: a run's checkpoints)
    out: Path = Path("moe")
    num_experts: int | None = None  # default: len(experts) (sparse: 4)
    top_k: int = 2  # FFN routing
    attn_top_k: int = 0  # BAM attention routing: 0 = soft mixture over all experts
    router_seed: int = 0
    # "all" | "every-other" | comma-separated layer indices; "" = the method's default (DEFAULT_MOE_LAYERS)
    moe_layers: str = ""
    # "random" | "hidden" (mergekit-style hidden-state means). The surgery always draws random
    # routers: setting them from data is a forward pass over samples, done after it by
    # train/router_preopt.py (as is UpIT's pre-optimization); `moelab upcycle` and the pipeline do both.
    router_init: RouterInit = "random"
    capacity_factor: float = 0.0  # FFN expert capacity of the MoE (0 = dropless); Mixtral cannot express it
    router_jitter_noise: float = 0.0  # router input × uniform(1-ε, 1+ε) in training (0 = off)
    # Kept top-k probabilities -> weights: st (renormalised, straight-through gradient) | renorm | raw
    router_weights: RouterWeights = "st"
    keep_seed: bool = False  # add the seed itself as one more expert (BAM's general-text expert)
    max_shard_bytes: int = 2 * 1024**3
    overwrite: bool = False
    # upit: experts are intermediate checkpoints of one fine-tuning run; when fewer than
    # num_experts, children DARE(α·Δ_j + (1-α)·Δ_k) of the most different pair are added.
    lora_rank: int = 0  # 0 = full FFN experts; r > 0 = rank-r LoRA experts on the seed's FFN
    dare_drop: float = 0.5  # DARE's drop rate p
    dare_rescale: bool = True  # rescale the kept delta entries by 1/(1-p)
    merge_seed: int = 0  # seeds α and the DARE masks

    def __post_init__(self) -> None:
        if not self.moe_layers:
            self.moe_layers = DEFAULT_MOE_LAYERS.get(self.method, "all")


# Sparse upcycling's paper (Komatsuzaki et al., 2022) upcycles every other FFN layer, the second of
# each pair (1, 3, 5, ...), as Switch and T5X place their MoE layers; the other methods' papers
# mix every layer.
DEFAULT_MOE_LAYERS: dict[Method, str] = {"sparse": "every-other"}


UPIT_FIELDS = ("lora_rank", "dare_drop", "dare_rescale", "merge_seed")
