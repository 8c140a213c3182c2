"""The papers' claims as comparisons of average perplexity, and their verdict over seeds.

A claim is a set of comparisons `lower < higher` (lower perplexity is better). Its verdict:
- "holds in every seed": every comparison holds in every seed (strictly lower);
- "holds on the mean only": every comparison holds on the mean over seeds, some not in every seed;
- "does not hold": some comparison fails on the mean;
- "not measured": a model it compares was not run (or failed in some seed).
A comparison's margin is (higher - lower) / higher in percent: positive when the claim's direction
holds, comparable with the same margin computed from the paper's perplexities.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

EVERY_SEED, MEAN_ONLY, DOES_NOT_HOLD, NOT_MEASURED = (
    "holds in every seed",
    "holds on the mean only",
    "does not hold",
    "not measured",
)

# BAM paper, small scale, average perplexity (main table; the attention-routing ablation is its own
# table, so its soft row is not the main table's bam-ekv).
BAM_MAIN = {"seed": 13.91, "btx": 10.72, "bam-skv": 10.32, "bam-ekv": 9.70}
BAM_ATTN = {"bam-ekv": 10.47, "bam-ekv-attn-top2": 10.72, "bam-ekv-attn-top1": 10.81}


@dataclass(frozen=True)
class Claim:
    text: str
    pairs: tuple[tuple[str, str], ...]  # (lower, higher)
    source: str  # whose claim: "BAM paper", "UpIT paper", or "control" (not a paper's claim)
    paper: dict[str, float] = field(default_factory=dict)  # the paper's perplexities, for its margins


def chain(*labels: str) -> tuple[tuple[str, str], ...]:
    """a < b < c as the comparisons (a, b), (b, c)."""
    return tuple(zip(labels, labels[1:]))


def study_claims(moes: list[str]) -> list[Claim]:
    """The claims the study checks; `moes` are the MoE methods of the study (the seed is beaten by each)."""
    return [
        Claim("every MoE below the seed", tuple((m, "seed") for m in moes), "BAM paper", BAM_MAIN),
        Claim(
            "bam-ekv < bam-skv < btx < sparse",
            chain("bam-ekv", "bam-skv", "btx", "sparse"),
            "BAM paper",
            BAM_MAIN,
        ),
        Claim(
            "attention routing: soft < top-2 < top-1",
            chain("bam-ekv", "bam-ekv-attn-top2", "bam-ekv-attn-top1"),
            "BAM paper",
            BAM_ATTN,
        ),
        Claim("BAM below BTX at equal tokens", (("bam-ekv", "btx"),), "BAM paper", BAM_MAIN),
        Claim("BAM below BTX at equal compute", (("bam-ekv", "btx-compute"),), "BAM paper"),
        Claim("UpIT below its fine-tuned dense model", (("upit", "tune"),), "UpIT paper"),
        Claim(
            "every MoE below the seed continued for as many tokens",
            tuple((m, "dense-continued") for m in moes),
            "control",
        ),
    ]


def margin(lower: float, higher: float) -> float:
    return 100.0 * (higher - lower) / higher


def mean_std(values: list[float]) -> dict[str, Any]:
    """{"mean", "std" (sample standard deviation; null with one value), "values"}."""
    return {
        "mean": round(statistics.fmean(values), 6),
        "std": round(statistics.stdev(values), 6) if len(values) > 1 else None,
        "values": list(values),
    }


def verdict(claim: Claim, ppl: dict[str, list[float | None]]) -> dict[str, Any]:
    """`ppl`: label -> average perplexity per seed (None where that seed's run failed), seeds aligned."""
    out: dict[str, Any] = {"claim": claim.text, "source": claim.source, "comparisons": []}
    labels = {x for pair in claim.pairs for x in pair}
    missing = sorted(x for x in labels if x not in ppl or any(v is None for v in ppl[x]))
    if missing:
        return out | {"verdict": NOT_MEASURED, "missing": missing}
    every, on_mean = True, True
    for lo, hi in claim.pairs:
        los, his = [float(v) for v in ppl[lo]], [float(v) for v in ppl[hi]]  # type: ignore[arg-type]
        per_seed = [margin(a, b) for a, b in zip(los, his)]
        mean = margin(statistics.fmean(los), statistics.fmean(his))
        every &= all(m > 0 for m in per_seed)
        on_mean &= mean > 0
        paper = margin(claim.paper[lo], claim.paper[hi]) if lo in claim.paper and hi in claim.paper else None
        out["comparisons"].append(
            {
                "lower": lo,
                "higher": hi,
                "margin_pct": round(mean, 3),
                "margin_pct_per_seed": [round(m, 3) for m in per_seed],
                "paper_margin_pct": None if paper is None else round(paper, 3),
            }
        )
    out["verdict"] = EVERY_SEED if every and on_mean else MEAN_ONLY if on_mean else DOES_NOT_HOLD
    return out
