"""Relative Frobenius distances, ||W - W_ref|| / ||W_ref||, accumulated over row chunks.

Used for drift (each checkpoint of a run against the first) and for the distance of each expert
from the dense parent it was copied from. Squared sums are accumulated per expert so that an
expert's distance covers all its matrices (w1, w2, w3 or q, k, v, o) at once.
"""

from __future__ import annotations

import math

import torch


class Distance:
    """Per-expert squared distance and squared reference norm, summed over chunks and matrices."""

    def __init__(self, n: int) -> None:
        self.diff2 = torch.zeros(n, dtype=torch.float64)
        self.ref2 = torch.zeros(n, dtype=torch.float64)

    def add(self, x: torch.Tensor, ref: torch.Tensor) -> None:
        """x, ref: [E, k], the same k elements of every expert."""
        d = x - ref  # the one temporary: squared in place, norms reduce without another copy
        self.diff2 += d.mul_(d).sum(-1)
        self.add_ref(ref)

    def add_ref(self, ref: torch.Tensor) -> None:
        """Only the reference (a distance of zero, as for the first checkpoint against itself)."""
        self.ref2 += torch.linalg.vector_norm(ref, dim=-1).square()

    def add_expert(self, e: int, x: torch.Tensor, ref: torch.Tensor) -> None:
        d = x - ref
        self.diff2[e] += float(d.mul_(d).sum())
        self.ref2[e] += float(torch.linalg.vector_norm(ref).square())

    def relative(self) -> list[float | None]:
        return [relative(float(d), float(r)) for d, r in zip(self.diff2, self.ref2)]


def relative(diff2: float, ref2: float) -> float | None:
    """sqrt(diff2 / ref2); 0 when both are 0; None (undefined) when only the reference is 0."""
    if ref2 > 0:
        return math.sqrt(diff2 / ref2)
    return 0.0 if diff2 == 0 else None


def relative_distance(x: torch.Tensor, ref: torch.Tensor) -> float | None:
    return relative(float((x - ref).square().sum()), float(ref.square().sum()))
