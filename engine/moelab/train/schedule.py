"""Learning rate: linear warm-up, then cosine decay to min_lr (nanoGPT's schedule)."""

from __future__ import annotations

import math


def lr_at(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    """LR for optimizer step `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
