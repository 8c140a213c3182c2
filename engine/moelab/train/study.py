"""The study's combined results: per-seed evals -> mean ± std per model and domain, the training
budget of each model, and the verdict of every claim (moelab.train.verdicts).

study.json, "schema": 1 (read by people and by the extension's Results view):

  {"schema": 1, "kind": "moelab-study", "quick": bool, "seconds": float, "domains": [d, ...],
   "settings": [                      # the parallel-block study first, then the sequential variant
     {"name": str, "block": "parallel" | "sequential", "seeds": [int, ...],
      "runs": [dir, ...],             # per seed, the run directory (relative to study.json) holding eval.json
      "models": {label: {
          "role": "seed" | "branch" | "tune" | "baseline" | "method" | "variant",
          "budget": {"steps", "tokens", "tokens_after_seed", "train_flops"?, "matched_to"?},
          "ppl": {d | "average": {"mean", "std" (null with one seed), "values": [per seed, null if failed]}}}},
      "claims": [{"claim", "source", "verdict", "missing"?, "comparisons": [
          {"lower", "higher", "margin_pct", "margin_pct_per_seed", "paper_margin_pct"}]}]}]}

A budget's `tokens` are its own training run's; `tokens_after_seed` adds what was trained on the way
to it after the seed (the branches for btx and bam, UpIT's fine-tuning run for upit, nothing for
sparse); `train_flops` is its own run's executed training FLOPs (run.json "flops"); `matched_to` says what the run's
length was matched to: "tokens" (the MoEs' shared budget), "training FLOPs of bam-ekv"
(btx-compute) or "tokens of the branches + one MoE run" (dense-continued).
"""

from __future__ import annotations

from typing import Any

from moelab.train.verdicts import mean_std, study_claims, verdict

SCHEMA = 1


def role(label: str, methods: list[str]) -> str:
    if label in ("seed", "tune"):
        return label
    if label.startswith("branch-"):
        return "branch"
    if label == "dense-continued":
        return "baseline"
    return "method" if label in methods else "variant"


def summarize_setting(
    name: str, block: str, seeds: list[int], runs: list[str], evals: list[dict[str, Any]], methods: list[str]
) -> dict[str, Any]:
    """One setting (a block type over its seeds) from each seed's eval (Pipeline's eval dict)."""
    domains = evals[0]["domains"]
    labels = list(dict.fromkeys(x for ev in evals for x in ev["models"]))
    models: dict[str, Any] = {}
    average: dict[str, list[float | None]] = {}
    for x in labels:
        got = [ev["models"].get(x) for ev in evals]
        ppl = {d: _spread([m["domains"][d]["ppl"] if m else None for m in got]) for d in domains}
        average[x] = [m["average"]["ppl"] if m else None for m in got]
        ppl["average"] = _spread(average[x])
        budget: dict[str, Any] = next((ev["budgets"][x] for ev in evals if x in ev.get("budgets", {})), {})
        models[x] = {"role": role(x, methods), "budget": budget, "ppl": ppl}
    moes = [m for m in methods if m in labels]
    # A claim about models this setting does not run is left out; one whose model failed in a seed stays.
    claims = [verdict(c, average) for c in study_claims(moes) if all(x in labels for p in c.pairs for x in p)]
    return {"name": name, "block": block, "seeds": seeds, "runs": runs, "models": models, "claims": claims}


def _spread(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    out = mean_std(present) if present else {"mean": None, "std": None}
    return out | {"values": values}


def study_doc(
    settings: list[dict[str, Any]], domains: list[str], quick: bool, seconds: float
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": "moelab-study",
        "quick": quick,
        "seconds": round(seconds, 1),
        "domains": domains,
        "settings": settings,
    }


def format_setting(s: dict[str, Any], domains: list[str]) -> str:
    """Mean ± std per model and domain with each model's budget, then the claims and their verdicts."""
    head = ["model", *domains, "average", "tokens after seed", "train FLOPs", "matched to"]
    rows = []
    for x, m in s["models"].items():
        b = m["budget"]
        flops = f"{b['train_flops']:.3g}" if "train_flops" in b else ""
        rows.append(
            [
                x,
                *(_pm(m["ppl"][d]) for d in [*domains, "average"]),
                f"{b.get('tokens_after_seed', 0):,}",
                flops,
                b.get("matched_to", ""),
            ]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    seeds = ",".join(map(str, s["seeds"]))
    out = [
        f"{s['name']}: {s['block']} block, seed{'s' if len(s['seeds']) > 1 else ''} {seeds}, "
        "average perplexity" + (" (mean ± std over seeds)" if len(s["seeds"]) > 1 else ""),
        line(head),
        line(["-" * w for w in widths]),
        *(line(r) for r in rows),
        "",
    ]
    for c in s["claims"]:
        out.append(f"{c['verdict']:<22}  {c['claim']} ({c['source']})")
        for p in c["comparisons"]:
            paper = "—" if p["paper_margin_pct"] is None else f"{p['paper_margin_pct']:+.1f} %"
            per_seed = ", ".join(f"{v:+.1f}" for v in p["margin_pct_per_seed"])
            out.append(
                f"{'':24}{p['lower']} < {p['higher']}: ours {p['margin_pct']:+.2f} % "
                f"(per seed {per_seed}), paper {paper}"
            )
        if c.get("missing"):
            out.append(f"{'':24}not run: {', '.join(c['missing'])}")
    return "\n".join(out)


def _pm(v: dict[str, Any]) -> str:
    if v["mean"] is None:
        return "failed"
    return f"{v['mean']:.3f}" + (f" ± {v['std']:.3f}" if v.get("std") is not None else "")
