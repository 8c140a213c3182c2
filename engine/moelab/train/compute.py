"""Training compute of a checkpoint's architecture, for compute-matched comparisons.

One function, so that the count has one source: today the forward FLOPs per token of
`moelab inspect` (active matmul parameters and attention scores, top-k experts counted as the
experts that run), times 3 for forward plus backward (the backward pass costs about twice the
forward: the usual 6·N per token of dense training).
"""

from __future__ import annotations

from pathlib import Path


def train_flops_per_token(ckpt: Path, seq_len: int) -> float:
    """Executed training FLOPs (forward + backward) per token of the model at `ckpt`."""
    from moelab.commands.inspect import summarize

    return 3.0 * summarize(Path(ckpt), seq_len=seq_len)["flops_per_token"]
