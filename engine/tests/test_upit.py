"""UpIT: DARE, the genetic expansion, router pre-optimization, the LoRA variant, metadata, training.

The invariant (identical experts => dense logits) for both variants is in test_upcycle_invariant.py,
the ONNX export of both in test_export.py, bad options in test_upcycle_errors.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from moelab.cli import main
from moelab.data.mixture import DataConfig
from moelab.data.tokenizer import ByteTokenizer
from moelab.errors import ConfigError
from moelab.io.checkpoint import load_config, load_model, save_model
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.methods.upit import dare, dense_pool, lora_factors, most_different_pair
from moelab.models.config import ModelConfig
from moelab.models.model import MoELabForCausalLM
from moelab.train.config import TrainConfig
from moelab.train.router_preopt import (
    PreoptConfig,
    accuracy,
    dense_expert_losses,
    draw_seed_set,
    preoptimize,
    sample_losses,
    tuning_data,
)
from moelab.train.trainer import train

TINY = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=64,
    eos_token_id=0,
)
DATA = DataConfig(seq_len=32, synthetic_train_chars=40_000, synthetic_eval_chars=4_000)


def _train(root: Path, run_id: str, steps: int, init: str = "", domains: list[str] | None = None) -> Path:
    cfg = TrainConfig(
        run_id=run_id,
        out=str(root),
        steps=steps,
        batch_size=8,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        log_every=50,
        eval_every=1000,
        eval_batches=1,
        ckpt_every=1000,
        keep_last=1,
        data=DATA,
        device="cpu",
        init=init,
        model=None if init else ModelConfig(**TINY),
        domains=domains or [],
    )
    res = train(cfg, quiet=True)
    assert res.checkpoint is not None
    return res.checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A seed and one checkpoint per domain: experts that really are better on different text."""
    root = tmp_path_factory.mktemp("upit-runs")
    seed = _train(root, "seed", 60)
    return seed, [_train(root, f"branch-{d}", 50, str(seed), [d]) for d in ("code", "math", "prose")]


def _perturbed(root: Path, scales: list[float]) -> tuple[Path, list[Path]]:
    """A random seed and checkpoints seed + s·noise (distinct noise each), fast and fully known."""
    torch.manual_seed(0)
    model = MoELabForCausalLM(ModelConfig(**TINY))
    (root / "seed").mkdir(parents=True)
    save_model(model, root / "seed")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    out = []
    for i, s in enumerate(scales):
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for k, p in model.state_dict().items():
                p.copy_(base[k] + s * torch.randn(p.shape, generator=g))
        (root / f"ck{i}").mkdir()
        save_model(model, root / f"ck{i}")
        out.append(root / f"ck{i}")
    return root / "seed", out


# ---- DARE ------------------------------------------------------------------------------------------


def test_dare_keeps_the_expectation_of_the_delta():
    delta = torch.randn(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    p, draws = 0.7, 4000
    mean = torch.stack([dare(delta, p, True, g) for _ in range(draws)]).mean(0)
    # Each entry's estimate has std |δ|·sqrt(p/(1-p)/draws); allow 5 of them.
    sigma = delta.abs() * math.sqrt(p / (1 - p) / draws)
    assert ((mean - delta).abs() <= 5 * sigma + 1e-12).all()
    # Without the rescale the expectation shrinks to (1-p)·δ; with p = 0 DARE is the identity.
    plain = torch.stack([dare(delta, p, False, g) for _ in range(draws)]).mean(0)
    assert ((plain - (1 - p) * delta).abs() <= 5 * sigma * (1 - p) + 1e-12).all()
    assert torch.equal(dare(delta, 0.0, True, g), delta)
    kept = (dare(delta, p, True, g) != 0).double().mean()
    assert abs(float(kept) - (1 - p)) < 0.1


# ---- the genetic step --------------------------------------------------------------------------------


def test_most_different_pair():
    d = [[0, 1, 5, 2], [1, 0, 3, 4], [5, 3, 0, 6], [2, 4, 6, 0]]
    assert most_different_pair(d) == (2, 3)
    assert most_different_pair(d, {(2, 3)}) == (0, 2)  # a merged pair is not picked again
    assert most_different_pair([[0, 1], [1, 0]], {(0, 1)}) == (0, 1)  # ...unless no other pair is left


def _ffn(ckpt: Path) -> dict[str, torch.Tensor]:
    sd = load_model(ckpt).state_dict()
    return {k: v for k, v in sd.items() if ".mlp." in k}


def test_expansion_merges_the_most_different_pair(tmp_path):
    seed, cks = _perturbed(tmp_path, [0.01, 0.05, 0.03])
    ffn = [_ffn(c) for c in cks]
    dist = [
        [math.sqrt(sum(float((a[k].double() - b[k].double()).square().sum()) for k in a)) for b in ffn]
        for a in ffn
    ]
    out = upcycle(
        UpcycleOptions(
            method="upit", seed=seed, experts=cks, out=tmp_path / "moe", num_experts=5, dare_drop=0.0
        )
    )
    meta = json.loads((out / "config.json").read_text())["moelab"]
    first, second = meta["genealogy"]
    assert first["parents"] == [1, 2] and first["expert"] == 3  # noise 0.05 vs 0.03: the farthest apart
    assert first["distance"] == pytest.approx(dist[1][2], rel=1e-6)
    assert second["expert"] == 4 and second["parents"] != [1, 2]
    assert meta["variant"] == "full" and meta["method"] == "upit"
    # With p = 0 the child is exactly α·E_j + (1-α)·E_k (the seed cancels).
    moe = load_model(out).state_dict()
    a = first["alpha"]
    w1 = moe["model.layers.0.block_sparse_moe.experts.w1"]
    expect = (
        a * ffn[1]["model.layers.0.mlp.gate_proj.weight"]
        + (1 - a) * ffn[2]["model.layers.0.mlp.gate_proj.weight"]
    )
    torch.testing.assert_close(w1[3], expect, atol=1e-6, rtol=0)
    torch.testing.assert_close(w1[0], ffn[0]["model.layers.0.mlp.gate_proj.weight"], atol=0, rtol=0)


def test_expansion_is_deterministic_for_a_seed(tmp_path):
    seed, cks = _perturbed(tmp_path, [0.02, 0.04])

    def run(name: str, merge_seed: int) -> bytes:
        out = upcycle(
            UpcycleOptions(
                method="upit",
                seed=seed,
                experts=cks,
                out=tmp_path / name,
                num_experts=4,
                merge_seed=merge_seed,
            )
        )
        return (out / "model.safetensors").read_bytes()

    assert run("a", 3) == run("b", 3)
    assert run("a2", 3) != run("c", 4)


def test_lora_factors_are_the_best_low_rank_approximation():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(40, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 24, generator=g, dtype=torch.float64
    )
    a, b = lora_factors(delta, 3, 0.5, g)
    torch.testing.assert_close(0.5 * b @ a, delta, atol=1e-9, rtol=0)  # rank 3 is exact for a rank-3 delta
    a, b = lora_factors(delta, 5, 1.0, g)  # directions beyond the delta's rank: B = 0, A small random
    torch.testing.assert_close(b @ a, delta, atol=1e-9, rtol=0)
    assert (b[:, 3:] == 0).all() and (a[3:].abs() > 0).any()
    a, b = lora_factors(torch.zeros(8, 6, dtype=torch.float64), 2, 1.0, g)
    assert (b == 0).all() and (a.abs() > 0).all()


# ---- router pre-optimization --------------------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 8])
def test_preoptimization_beats_a_random_router(trained, tmp_path, lora_rank):
    seed, cks = trained
    out = upcycle(
        UpcycleOptions(
            method="upit",
            seed=seed,
            experts=cks,
            out=tmp_path / "moe",
            num_experts=4,
            lora_rank=lora_rank,
            router_seed=1,
        )
    )
    model = load_model(out)
    pool = _pool(out)
    seed_set = draw_seed_set(DATA, ByteTokenizer(), 0.04, 32, seed=0)
    windows = seed_set.windows
    # 40k characters a domain: some 3.6k windows of 33 byte tokens, 4% of them.
    assert 3600 <= seed_set.tuning_windows < 3800 and len(windows) == math.ceil(
        0.04 * seed_set.tuning_windows
    )
    rec = preoptimize(model, windows, PreoptConfig(data="code,math,prose", seq_len=32, steps=80), pool)
    assert rec["labels_from"]["kind"] == "dense models"
    # Domain experts: each domain's samples go mostly to its own checkpoint.
    assert sum(rec["label_counts"][:3]) >= 0.8 * sum(rec["label_counts"])
    assert rec["heldout_accuracy_after"] > rec["heldout_accuracy_before"]
    assert rec["heldout_accuracy_after"] >= 0.6
    # Random routers (other draws) do not label well: the trained ones beat every one of them.
    n_held = rec["heldout_samples"]
    labels = dense_expert_losses(pool, windows, 16).argmin(-1)[:n_held]
    for s in range(3):
        rnd = load_model(out)
        with torch.no_grad():
            for name, p in rnd.named_parameters():
                if name.endswith("gate.weight"):
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(s))
        assert accuracy(rnd, windows[:n_held], labels, 16) < rec["heldout_accuracy_after"]


def _pool(ckpt: Path):
    return dense_pool(json.loads((ckpt / "config.json").read_text())["moelab"])


def test_labels_come_from_the_experts_dense_models(trained, tmp_path):
    """Each expert's loss is its dense checkpoint's: the checkpoints as load_model reads them, and
    for the merged child the same merge of the parents' whole dense models, done here by hand."""
    seed, cks = trained
    out = upcycle(
        UpcycleOptions(
            method="upit",
            seed=seed,
            experts=cks[:2],
            out=tmp_path / "moe",
            num_experts=3,
            lora_rank=4,
            dare_drop=0.0,
        )
    )
    pool = _pool(out)
    windows = draw_seed_set(DATA, ByteTokenizer(), 0.001, 12, seed=1).windows
    assert len(windows) == 12  # 0.1% of ~3.6k windows is 4: the minimum wins
    a = json.loads((out / "config.json").read_text())["moelab"]["genealogy"][0]["alpha"]
    sd0, sd1 = (load_model(c).state_dict() for c in cks[:2])
    child = MoELabForCausalLM(load_config(seed))
    child.load_state_dict({k: a * sd0[k] + (1 - a) * sd1[k] for k in sd0})  # p = 0: no drop, the seed cancels
    expect = torch.stack(
        [sample_losses(m.eval(), windows, 5) for m in (load_model(cks[0]), load_model(cks[1]), child)], 1
    )
    torch.testing.assert_close(dense_expert_losses(pool, windows, 8), expect, atol=1e-5, rtol=1e-5)


def test_a_merged_dense_model_holds_the_moe_expert(trained, tmp_path):
    """With DARE (p = 0.5) too, the child's dense FFN in an MoE layer is the MoE's expert exactly."""
    seed, cks = trained
    out = upcycle(
        UpcycleOptions(
            method="upit", seed=seed, experts=cks, out=tmp_path / "moe", num_experts=5, dare_drop=0.5
        )
    )
    pool = _pool(out)
    moe = load_model(out).state_dict()
    for e in (3, 4):  # the two children, the second perhaps a grandchild
        dense = pool.dense_state(e)
        for w, proj in (("w1", "gate_proj"), ("w2", "down_proj")):
            torch.testing.assert_close(
                moe[f"model.layers.1.block_sparse_moe.experts.{w}"][e],
                dense[f"model.layers.1.mlp.{proj}.weight"],
                atol=1e-6,
                rtol=0,
            )
    assert "DARE" in pool.describe(3) and str(cks[0].resolve()) in pool.describe(0)


def test_cli_upcycle_records_variant_genealogy_and_preopt_then_trains(trained, tmp_path, capsys):
    seed, cks = trained
    out = tmp_path / "moe"
    args = [
        "upcycle",
        "--method",
        "upit",
        "--seed",
        str(seed),
        *(x for c in cks[:2] for x in ("--expert", str(c))),
        "--num-experts",
        "4",
        "--lora-rank",
        "4",
        "--out",
        str(out),
        "--router-data",
        "code,math",
        "--router-fraction",
        "0.002",
        "--router-min-samples",
        "16",
        "--router-steps",
        "5",
        "--seq-len",
        "32",
    ]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "moelab" and cfg["moe"]["lora_rank"] == 4 and cfg["moe"]["method"] == "upit"
    meta = cfg["moelab"]
    assert meta["variant"] == "lora" and meta["options"]["lora_rank"] == 4
    assert [g["expert"] for g in meta["genealogy"]] == [2, 3]
    assert meta["genealogy"][0]["parents"] == [0, 1]
    pre = meta["router_preopt"]
    # --router-data's synthetic domains at their default size (1M characters each): 0.2% of their windows.
    assert pre["trained"] and pre["train_samples"] + pre["heldout_samples"] == pre["samples"]
    assert pre["samples"] == math.ceil(0.002 * pre["tuning_windows"]) and pre["tuning_windows"] > 50_000
    assert pre["labels_from"]["kind"] == "dense models" and len(pre["labels_from"]["experts"]) == 4
    assert {"heldout_accuracy_before", "heldout_accuracy_after", "label_counts"} <= set(pre)
    assert [p["role"] for p in meta["parents"]] == ["seed", "expert", "expert"]
    assert (out / "moelab_tokenizer.json").exists()
    # The shared FFN is the seed's; the expert factors are stored per expert.
    model = load_model(out)
    sd = model.state_dict()
    torch.testing.assert_close(
        sd["model.layers.1.block_sparse_moe.shared_mlp.up_proj.weight"],
        load_model(seed).state_dict()["model.layers.1.mlp.up_proj.weight"],
        atol=0,
        rtol=0,
    )
    assert sd["model.layers.1.block_sparse_moe.experts.lora_a_w2"].shape == (4, 4, 64)
    # `moelab train` continues it, and its checkpoints keep the provenance.
    res = train(
        TrainConfig(
            run_id="moe",
            out=str(tmp_path / "runs"),
            stage="moe",
            method="upit",
            init=str(out),
            steps=3,
            batch_size=4,
            log_every=1,
            eval_every=1000,
            eval_batches=1,
            ckpt_every=1000,
            data=DATA,
            device="cpu",
        ),
        quiet=True,
    )
    assert res.checkpoint is not None
    done = json.loads((res.checkpoint / "config.json").read_text())["moelab"]
    assert done["genealogy"] == meta["genealogy"] and done["router_preopt"] == pre


def test_router_init_hidden_sets_routers_from_data(trained, tmp_path):
    seed, cks = trained
    out = tmp_path / "moe"
    assert (
        main(
            [
                "upcycle",
                "--method",
                "btx",
                "--seed",
                str(seed),
                *(x for c in cks for x in ("--expert", str(c))),
                "--out",
                str(out),
                "--router-init",
                "hidden",
                "--router-data",
                "code,math,prose",
                "--router-min-samples",
                "48",
                "--seq-len",
                "32",
            ]
        )
        == 0
    )
    meta = json.loads((out / "config.json").read_text())["moelab"]
    assert meta["options"]["router_init"] == "hidden" and not meta["router_preopt"]["trained"]
    gate = load_model(out).state_dict()["model.layers.0.block_sparse_moe.gate.weight"]
    assert torch.allclose(gate.norm(dim=1), torch.ones(3), atol=1e-5)  # every expert got samples: unit rows
    assert meta["router_preopt"]["heldout_accuracy_after"] > meta["router_preopt"]["heldout_accuracy_before"]


def test_seed_set_is_a_fraction_of_the_tuning_data_with_a_minimum(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30)  # ~1.4k bytes: ~40 windows of 33
    data = tuning_data(["math", str(text)], seq_len=32)
    data.synthetic_train_chars = 20_000
    tok = ByteTokenizer()
    big = draw_seed_set(data, tok, 0.05, 4, seed=0)
    n_math = 20_000 // 33
    assert n_math <= big.tuning_windows < n_math + 120 and len(big.windows) == math.ceil(
        0.05 * big.tuning_windows
    )
    # Distinct windows while the data has enough, each domain in proportion to its size.
    assert len({tuple(w.tolist()) for w in big.windows}) == len(big.windows)
    fox = sum(bytes(w.tolist()).count(b"fox") > 0 for w in big.windows)
    assert 0 < fox <= 0.2 * len(big.windows)
    # Tiny data: the minimum wins (overlapping windows where a domain runs out), and the log says so.
    small = draw_seed_set(tuning_data([str(text)], seq_len=32), tok, 0.01, 60, seed=0)
    assert len(small.windows) == 60 and small.by_fraction == 1
    assert "the minimum 60" in small.describe(PreoptConfig(data=str(text), fraction=0.01, min_samples=60))


def test_pipeline_trains_upit_lora_with_the_backbone_frozen_when_asked(tmp_path):
    """The paper's LoRA setting: only the LoRA experts and the routers learn (the generic freeze option)."""
    from moelab.train.config import Hyper
    from moelab.train.experiment import ExperimentConfig, StageConfig
    from moelab.train.pipeline import Pipeline

    hyper = Hyper(
        steps=4,
        batch_size=4,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=1,
        log_every=2,
        eval_every=100,
        eval_batches=1,
        ckpt_every=2,
        keep_last=1,
    )
    exp = ExperimentConfig(
        name="x",
        out=str(tmp_path / "runs"),
        device="cpu",
        data=DATA,
        defaults=hyper,
        stages=[
            StageConfig(kind="dense", model=ModelConfig(**TINY)),
            StageConfig(kind="tune"),
            StageConfig(
                kind="upcycle",
                methods=["upit"],
                num_experts=3,
                lora_rank=4,
                lora_freeze_backbone=True,
                router_min_samples=8,
                router_steps=2,
            ),
            StageConfig(kind="moe", steps=3),
        ],
    )
    exp.validate()
    exp.stages[2].lora_rank = 0
    with pytest.raises(ConfigError, match="lora_freeze_backbone: needs lora_rank > 0"):
        exp.validate()
    exp.stages[2].lora_rank = 4
    res = Pipeline(exp, quiet=True).run()
    assert res.status == "done", res.failures
    info = json.loads((tmp_path / "runs" / "x-moe-upit" / "run.json").read_text())
    assert info["freeze"]["groups"] == ["backbone"]
    before, after = (
        load_model(res.checkpoints["upcycle-upit"]).state_dict(),
        load_model(res.checkpoints["upit"]).state_dict(),
    )
    shared = "model.layers.0.block_sparse_moe.shared_mlp.up_proj.weight"
    assert torch.equal(before[shared], after[shared]) and torch.equal(
        before["model.norm.weight"], after["model.norm.weight"]
    )
    lora = "model.layers.0.block_sparse_moe.experts.lora_b_w1"
    assert not torch.equal(before[lora], after[lora])
