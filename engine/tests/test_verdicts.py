"""The verdict logic and the study summary, on made-up per-seed perplexities (logic tests)."""

from __future__ import annotations

import pytest

from moelab.train.study import format_setting, summarize_setting
from moelab.train.verdicts import (
    BAM_MAIN,
    DOES_NOT_HOLD,
    EVERY_SEED,
    MEAN_ONLY,
    NOT_MEASURED,
    Claim,
    chain,
    mean_std,
    study_claims,
    verdict,
)

CLAIM = Claim("a < b < c", chain("a", "b", "c"), "test", {"a": 9.0, "b": 10.0})


def test_every_seed():
    v = verdict(CLAIM, {"a": [1.0, 1.1, 1.2], "b": [2.0, 2.1, 2.2], "c": [3.0, 3.0, 3.0]})
    assert v["verdict"] == EVERY_SEED
    ab, bc = v["comparisons"]
    assert (ab["lower"], ab["higher"], bc["lower"], bc["higher"]) == ("a", "b", "b", "c")
    assert ab["margin_pct"] == pytest.approx(100 * (2.1 - 1.1) / 2.1, abs=1e-3)
    assert ab["margin_pct_per_seed"] == pytest.approx([50.0, 100 * 1 / 2.1, 100 * 1 / 2.2], abs=1e-3)
    assert ab["paper_margin_pct"] == pytest.approx(10.0)
    assert bc["paper_margin_pct"] is None  # the paper has no c


def test_mean_only_when_one_seed_reverses():
    # b > a on the mean (2.0 vs 1.5) but seed 2 has a above b
    v = verdict(CLAIM, {"a": [1.0, 1.0, 2.5], "b": [2.0, 2.0, 2.0], "c": [3.0, 3.0, 3.0]})
    assert v["verdict"] == MEAN_ONLY
    assert v["comparisons"][0]["margin_pct_per_seed"][2] < 0 < v["comparisons"][0]["margin_pct"]


def test_does_not_hold_when_one_comparison_fails_on_the_mean():
    v = verdict(CLAIM, {"a": [1.0, 1.0], "b": [2.0, 2.0], "c": [1.9, 2.5]})  # c's mean 2.2 > b, seed 0 not
    assert v["verdict"] == MEAN_ONLY
    v = verdict(CLAIM, {"a": [1.0, 1.0], "b": [2.0, 2.0], "c": [1.9, 1.95]})
    assert v["verdict"] == DOES_NOT_HOLD
    assert v["comparisons"][1]["margin_pct"] < 0


def test_a_tie_does_not_hold():
    v = verdict(Claim("a < b", (("a", "b"),), "test"), {"a": [2.0], "b": [2.0]})
    assert v["verdict"] == DOES_NOT_HOLD


def test_not_measured_when_a_model_is_missing_or_failed_in_a_seed():
    v = verdict(CLAIM, {"a": [1.0], "b": [2.0]})
    assert v["verdict"] == NOT_MEASURED and v["missing"] == ["c"]
    v = verdict(CLAIM, {"a": [1.0, 1.0], "b": [2.0, None], "c": [3.0, 3.0]})
    assert v["verdict"] == NOT_MEASURED and v["missing"] == ["b"]


def test_paper_margins_match_the_papers_numbers():
    # BAM expert-KV 9.70 vs BTX 10.72: 9.5 % lower
    claim = next(c for c in study_claims(["btx", "bam-ekv"]) if c.text == "BAM below BTX at equal tokens")
    v = verdict(claim, {"bam-ekv": [2.0], "btx": [2.1]})
    assert v["comparisons"][0]["paper_margin_pct"] == pytest.approx(100 * (10.72 - 9.70) / 10.72, abs=1e-3)
    attn = next(c for c in study_claims([]) if c.text.startswith("attention routing"))
    assert [p for p in attn.pairs] == [
        ("bam-ekv", "bam-ekv-attn-top2"),
        ("bam-ekv-attn-top2", "bam-ekv-attn-top1"),
    ]
    assert attn.paper["bam-ekv"] == 10.47 != BAM_MAIN["bam-ekv"]  # the ablation's own table


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "values": [1.0, 2.0, 3.0]}
    assert mean_std([2.0])["std"] is None


def _ev(ppl: dict[str, float]) -> dict:
    models = {
        x: {"domains": {"code": {"ppl": p - 0.1}, "math": {"ppl": p + 0.1}}, "average": {"ppl": p}}
        for x, p in ppl.items()
    }
    return {
        "domains": ["code", "math"],
        "models": models,
        "budgets": {x: {"steps": 1, "tokens": 10, "tokens_after_seed": 10} for x in ppl},
    }


def test_summarize_setting_and_table():
    evals = [
        _ev({"seed": 3.0, "branch-code": 9.0, "btx": 2.5, "bam-ekv": 2.4}),
        _ev({"seed": 3.2, "branch-code": 8.0, "btx": 2.6, "bam-ekv": 2.65}),
    ]
    s = summarize_setting("study", "parallel", [0, 1], ["seed-0", "seed-1"], evals, ["btx", "bam-ekv"])
    avg = s["models"]["bam-ekv"]["ppl"]["average"]
    assert avg["values"] == [2.4, 2.65] and avg["mean"] == pytest.approx(2.525)
    assert avg["std"] == pytest.approx(0.1768, abs=1e-4)
    assert s["models"]["bam-ekv"]["ppl"]["math"]["mean"] == pytest.approx(2.625)
    assert [s["models"][x]["role"] for x in s["models"]] == ["seed", "branch", "method", "method"]
    claims = {c["claim"]: c["verdict"] for c in s["claims"]}
    assert claims["every MoE below the seed"] == EVERY_SEED
    assert claims["BAM below BTX at equal tokens"] == MEAN_ONLY  # 2.525 < 2.55, not in seed 1
    assert "BAM below BTX at equal compute" not in claims  # btx-compute not run in this setting
    text = format_setting(s, ["code", "math"])
    assert "2.525 ± 0.177" in text and "holds in every seed" in text


def test_a_model_failed_in_one_seed_keeps_the_others():
    evals = [_ev({"seed": 3.0, "btx": 2.5}), _ev({"seed": 3.2})]  # btx failed in seed 1
    s = summarize_setting("study", "parallel", [0, 1], ["a", "b"], evals, ["btx"])
    assert s["models"]["btx"]["ppl"]["average"]["values"] == [2.5, None]
    assert "failed" not in format_setting(s, ["code", "math"])  # mean over the seed that ran
    assert s["claims"][0]["verdict"] == NOT_MEASURED
