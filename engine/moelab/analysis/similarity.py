"""Similarity between experts' weights and between router vectors.

Cosine similarity of flattened weights needs only the Gram matrix G[i, j] = <W_i, W_j>, which is
a sum over rows: it is accumulated one row chunk at a time (float64, so millions of terms do not
lose the digits that tell 0.9999 from 1), never holding a whole expert.
"""

from __future__ import annotations

import math

import torch


class Gram:
    """Incremental Gram matrix of E flattened tensors."""

    def __init__(self, n: int) -> None:
        self.g = torch.zeros(n, n, dtype=torch.float64)

    def add(self, chunk: torch.Tensor) -> None:
        """chunk: [E, k], the same k elements of every expert's tensor."""
        self.g += chunk @ chunk.T

    def norms(self) -> list[float]:
        return [math.sqrt(max(0.0, v)) for v in self.g.diagonal().tolist()]

    def cosine(self) -> list[list[float | None]]:
        return cosine_from_gram(self.g)


def cosine_from_gram(g: torch.Tensor) -> list[list[float | None]]:
    """E x E cosines; None where a vector is zero (the cosine is undefined, not 0)."""
    d = g.diagonal().clamp_min(0).sqrt()
    out: list[list[float | None]] = []
    for i in range(g.shape[0]):
        row: list[float | None] = []
        for j in range(g.shape[0]):
            den = float(d[i] * d[j])
            # Clamp: rounding can put identical vectors a hair above 1.
            row.append(None if den == 0.0 else max(-1.0, min(1.0, float(g[i, j]) / den)))
        out.append(row)
    return out


def router_stats(router: torch.Tensor) -> tuple[list[float], list[list[float | None]]]:
    """Per-expert norms of the router's rows and their E x E cosines (router: [E, d], float64)."""
    g = router @ router.T
    return [math.sqrt(max(0.0, v)) for v in g.diagonal().tolist()], cosine_from_gram(g)
