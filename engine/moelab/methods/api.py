"""The one entry point for weight surgery: dense checkpoints in, an MoE checkpoint directory out.

Implemented in this package (sparse.py, btx.py, bam.py, upit.py); callers (the CLI's upcycle
command, the demo and experiment pipelines) use only `UpcycleOptions` and `upcycle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("sparse", "btx", "bam-ekv", "bam-skv", "upit")


@dataclass
class UpcycleOptions:
    method: str
    seed: Path
    experts: list[Path] = field(default_factory=list)  # dense expert checkpoints (btx, bam, upit)
    out: Path = Path("moe")
    num_experts: int | None = None  # default: len(experts) (sparse: 4)
    top_k: int = 2  # FFN routing
    attn_top_k: int = 0  # BAM attention routing: 0 = soft mixture over all experts
    router_seed: int = 0
    moe_layers: str = "all"  # "all" | "every-other" | comma-separated layer indices
    router_init: str = "random"  # "random" | "hidden" (mergekit-style hidden-state means)
    keep_seed: bool = False  # add the seed itself as one more expert (BAM's general-text expert)
    max_shard_bytes: int = 2 * 1024**3
    overwrite: bool = False


def upcycle(opts: UpcycleOptions) -> Path:
    """Writes the MoE checkpoint to opts.out atomically and returns it."""
    raise NotImplementedError("moelab.methods.api.upcycle is being implemented")
