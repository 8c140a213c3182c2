"""`moelab analyze` on tiny synthetic checkpoints whose relations are known by construction."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from moelab.analysis import AnalyzeOptions, analyze, compare_checkpoints
from moelab.cli import main
from moelab.errors import MoELabError
from moelab.io.checkpoint import write_config
from moelab.models.config import ModelConfig, MoEConfig

D, F, E, L = 8, 12, 4, 2


def cfg(moe: bool = True, attn: bool = False, shared_kv: bool = False) -> ModelConfig:
    if not moe:
        return ModelConfig(
            vocab_size=16,
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    if attn:
        return ModelConfig(
            vocab_size=16,
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=2,
            num_key_value_heads=2,
            model_type="moelab",
            moe=MoEConfig(num_experts=E, moe_layers=list(range(L)), attn_experts=True, shared_kv=shared_kv),
        )
    return ModelConfig(
        vocab_size=16,
        hidden_size=D,
        intermediate_size=F,
        num_hidden_layers=L,
        num_attention_heads=2,
        num_key_value_heads=2,
        model_type="mixtral",
        moe=MoEConfig(num_experts=E, moe_layers=list(range(L))),
    )


def write_ckpt(
    path: Path, tensors: dict[str, torch.Tensor], config: ModelConfig | None = None, meta: dict | None = None
) -> Path:
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    write_config(path, config or cfg(), meta)
    return path


def ffn_moe(seed: int = 0, experts: list[dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """An FFN MoE: random routers and experts (or the given per-expert w1/w2/w3 in every layer)."""
    g = torch.Generator().manual_seed(seed)
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(16, D, generator=g)}
    for layer in range(L):
        p = f"model.layers.{layer}.block_sparse_moe"
        t[f"{p}.gate.weight"] = torch.randn(E, D, generator=g)
        for e in range(E):
            w = (
                experts[e]
                if experts
                else {
                    "w1": torch.randn(F, D, generator=g),
                    "w3": torch.randn(F, D, generator=g),
                    "w2": torch.randn(D, F, generator=g),
                }
            )
            for m, v in w.items():
                t[f"{p}.experts.{e}.{m}.weight"] = v.clone()
    return t


def dense(seed: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = {"model.embed_tokens.weight": torch.randn(16, D, generator=g)}
    for layer in range(L):
        t[f"model.layers.{layer}.mlp.gate_proj.weight"] = torch.randn(F, D, generator=g)
        t[f"model.layers.{layer}.mlp.up_proj.weight"] = torch.randn(F, D, generator=g)
        t[f"model.layers.{layer}.mlp.down_proj.weight"] = torch.randn(D, F, generator=g)
        for p in ("q", "k", "v", "o"):
            t[f"model.layers.{layer}.self_attn.{p}_proj.weight"] = torch.randn(D, D, generator=g)
    return t


def run_analyze(*ckpts: Path, **kw) -> dict:
    return analyze(AnalyzeOptions(checkpoints=list(ckpts), progress=None, **kw))


def f64(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def layer(report: dict, n: int, router: str = "ffn") -> dict:
    return next(x for x in report["layers"] if x["layer"] == n and x["router"] == router)


def same_expert() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    w = {
        "w1": torch.randn(F, D, generator=g),
        "w3": torch.randn(F, D, generator=g),
        "w2": torch.randn(D, F, generator=g),
    }
    return [w] * E


# ---- similarity and drift ---------------------------------------------------------------------


def test_identical_experts_have_cosine_one_zero_drift_and_a_collapse_warning(tmp_path):
    t = ffn_moe(experts=same_expert())
    a = write_ckpt(tmp_path / "step-000000", t)
    b = write_ckpt(tmp_path / "step-000100", t)
    r = run_analyze(a, b)
    assert [c["step"] for c in r["checkpoints"]] == [0, 100]
    assert len(r["layers"]) == L
    for x in r["layers"]:
        for m in ("w1", "w2", "w3"):
            assert torch.allclose(f64(x["expert_cosine"][m]), torch.ones(E, E, dtype=torch.float64))
        assert x["drift"]["steps"] == [0, 100]
        assert x["drift"]["experts"] == [[0.0, 0.0]] * E
        assert x["drift"]["router"] == [0.0, 0.0]
    collapsed = [w for w in r["warnings"] if w["kind"] == "collapsed_experts"]
    assert [(w["layer"], w["router"], w["experts"]) for w in collapsed] == [
        (0, "ffn", [0, 1, 2, 3]),
        (1, "ffn", [0, 1, 2, 3]),
    ]


def test_scaled_expert_has_cosine_one_and_twice_the_norm(tmp_path):
    experts = [dict(w) for w in ffn_expert_list(3)]
    experts[1] = {m: 2 * v for m, v in experts[0].items()}
    r = run_analyze(write_ckpt(tmp_path / "c", ffn_moe(experts=experts)))
    x = layer(r, 0)
    for m in ("w1", "w2", "w3"):
        assert x["expert_cosine"][m][0][1] == pytest.approx(1.0, abs=1e-12)
        assert x["expert_norms"][m][1] / x["expert_norms"][m][0] == pytest.approx(2.0, rel=1e-12)
        assert abs(x["expert_cosine"][m][0][2]) < 0.9  # random experts are far apart
    kinds = [(w["kind"], w["experts"]) for w in r["warnings"] if w["layer"] == 0]
    assert ("collapsed_experts", [0, 1]) in kinds


def ffn_expert_list(seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "w1": torch.randn(F, D, generator=g),
            "w3": torch.randn(F, D, generator=g),
            "w2": torch.randn(D, F, generator=g),
        }
        for _ in range(E)
    ]


def test_known_perturbation_gives_the_drift_of_that_expert_only(tmp_path):
    t0 = ffn_moe(seed=1)
    t1 = {k: v.clone() for k, v in t0.items()}
    t2 = {k: v.clone() for k, v in t0.items()}
    p = "model.layers.1.block_sparse_moe"
    delta = 0.1 * torch.randn(F, D, generator=torch.Generator().manual_seed(5))
    t1[f"{p}.experts.2.w1.weight"] += delta
    t2[f"{p}.experts.2.w1.weight"] += 3 * delta
    t2[f"{p}.gate.weight"] *= 1.5
    ckpts = [write_ckpt(tmp_path / f"step-{s}", t) for s, t in ((0, t0), (10, t1), (20, t2))]
    x = layer(run_analyze(*ckpts), 1)
    ref = math.sqrt(
        sum(float(t0[f"{p}.experts.2.{m}.weight"].double().square().sum()) for m in ("w1", "w2", "w3"))
    )
    want = float(delta.double().norm()) / ref
    assert x["drift"]["experts"][2] == pytest.approx([0.0, want, 3 * want], rel=1e-6)
    for e in (0, 1, 3):
        assert x["drift"]["experts"][e] == [0.0, 0.0, 0.0]
    assert x["drift"]["router"] == pytest.approx([0.0, 0.0, 0.5], rel=1e-9)
    assert x["drift"]["router_norms"][2] == pytest.approx(
        [1.5 * v for v in x["drift"]["router_norms"][0]], rel=1e-6
    )
    assert layer(run_analyze(*ckpts), 0)["drift"]["experts"] == [[0.0] * 3] * E


def test_chunked_streaming_matches_direct_computation(tmp_path):
    t0, t1 = ffn_moe(seed=2), ffn_moe(seed=3)
    ckpts = [write_ckpt(tmp_path / "a", t0), write_ckpt(tmp_path / "b", t1)]
    whole = run_analyze(*ckpts)
    rowwise = run_analyze(*ckpts, chunk_bytes=1)  # one row per chunk: many partial sums
    assert json.dumps(whole["layers"]) != ""  # serialisable
    for x, y in zip(whole["layers"], rowwise["layers"]):
        for m in ("w1", "w2", "w3"):
            assert torch.allclose(f64(x["expert_cosine"][m]), f64(y["expert_cosine"][m]), atol=1e-12)
        assert torch.allclose(f64(x["drift"]["experts"]), f64(y["drift"]["experts"]), atol=1e-12)
    # Against torch on the whole flattened weights of the last checkpoint.
    p = "model.layers.0.block_sparse_moe"
    w = torch.stack([t1[f"{p}.experts.{e}.w2.weight"].double().flatten() for e in range(E)])
    cos = torch.nn.functional.cosine_similarity(w[:, None], w[None], dim=-1)
    assert torch.allclose(f64(rowwise["layers"][0]["expert_cosine"]["w2"]), cos, atol=1e-12)


# ---- routers ----------------------------------------------------------------------------------


def test_router_near_zero_and_identical_are_warned(tmp_path):
    t = ffn_moe(seed=4)
    t["model.layers.0.block_sparse_moe.gate.weight"][1] = 0.0
    g1 = t["model.layers.1.block_sparse_moe.gate.weight"]
    g1[3] = g1[0] * 3  # same direction, other norm: the softmax still cannot separate them reliably
    r = run_analyze(write_ckpt(tmp_path / "c", t))
    x0 = layer(r, 0)
    assert x0["router_norms"][1] == 0.0
    assert x0["router_cosine"][1][0] is None  # undefined, not 0
    ws = {(w["layer"], w["router"], w["kind"]): w["experts"] for w in r["warnings"]}
    assert ws == {(0, "ffn", "router_near_zero"): [1], (1, "ffn", "router_identical"): [0, 3]}
    assert layer(r, 1)["router_cosine"][0][3] == pytest.approx(1.0)


# ---- parents ----------------------------------------------------------------------------------


def _upcycled_from(
    tmp_path: Path,
    parent_dirs: list[Path],
    parents: list[dict[str, torch.Tensor]],
    noise: list[float],
    meta: dict,
) -> Path:
    g = torch.Generator().manual_seed(11)
    t: dict[str, torch.Tensor] = {}
    for lay in range(L):
        p = f"model.layers.{lay}.block_sparse_moe"
        t[f"{p}.gate.weight"] = torch.randn(E, D, generator=g)
        for e in range(E):
            src = parents[e]
            for m, dn in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                w = src[f"model.layers.{lay}.mlp.{dn}.weight"]
                t[f"{p}.experts.{e}.{m}.weight"] = w * (1 + noise[e])
    return write_ckpt(tmp_path / "moe", t, meta=meta)


def test_parent_distance_from_config_parents_with_keep_seed(tmp_path):
    seed, x1, x2, x3 = dense(1), dense(2), dense(3), dense(4)
    dirs = [
        write_ckpt(tmp_path / n, t, cfg(moe=False))
        for n, t in (("seed", seed), ("x1", x1), ("x2", x2), ("x3", x3))
    ]
    meta = {
        "method": "btx",
        "options": {"keep_seed": True},
        "parents": [{"role": "seed", "path": str(dirs[0]), "files": []}]
        + [{"role": "expert", "path": str(d), "files": []} for d in dirs[1:]],
        "genealogy": [{"expert": 3, "parents": [1, 2], "alpha": 0.5, "drop": 0.1}],
    }
    # keep_seed: the expert parents in order, then the seed (methods/btx.py expert_indices).
    # Expert e = its parent scaled by (1 + noise[e]): relative distance exactly |noise[e]|.
    noise = [0.0, 0.1, -0.2, 0.3]
    moe = _upcycled_from(tmp_path, dirs, [x1, x2, x3, seed], noise, meta)
    r = run_analyze(moe)
    assert r["method"] == "btx"
    assert [p["path"] for p in r["parents"]] == [str(d) for d in dirs[1:] + dirs[:1]]
    assert {p["source"] for p in r["parents"]} == {"config"}
    for x in r["layers"]:
        assert x["parent_distance"] == pytest.approx([abs(n) for n in noise], rel=1e-6, abs=1e-9)
        assert x["parent_distance_by_matrix"]["w2"] == pytest.approx(
            [abs(n) for n in noise], rel=1e-6, abs=1e-9
        )
    assert r["genealogy"] == meta["genealogy"]
    # Without keep_seed the same record maps experts to the expert parents only: the 4th has none
    # (as UpIT's merged children have none).
    meta2 = {**meta, "options": {}, "genealogy": []}
    (moe / "config.json").write_text(
        json.dumps({**json.loads((moe / "config.json").read_text()), "moelab": meta2})
    )
    r2 = run_analyze(moe)
    assert [p["path"] for p in r2["parents"]] == [str(d) for d in dirs[1:]] + [None]
    assert r2["layers"][0]["parent_distance"][:3] == pytest.approx([0.0, 0.1, 0.2], rel=1e-6, abs=1e-9)
    assert r2["layers"][0]["parent_distance"][3] is None
    assert r2["warnings"] == []  # no recorded parent is missing: expert 3 simply has none


def test_missing_config_parent_warns_and_against_overrides(tmp_path):
    seed = dense(1)
    sdir = write_ckpt(tmp_path / "seed", seed, cfg(moe=False))
    meta = {
        "method": "sparse",
        "options": {},
        "parents": [{"role": "seed", "path": str(tmp_path / "gone"), "files": []}],
    }
    moe = _upcycled_from(tmp_path, [sdir] * E, [seed] * E, [0.0, 0.5, 0.0, 0.0], meta)
    r = run_analyze(moe)
    assert all(x["parent_distance"] == [None] * E for x in r["layers"])
    missing = [w for w in r["warnings"] if w["kind"] == "parent_unavailable"]
    assert len(missing) == 1 and missing[0]["experts"] == [0, 1, 2, 3] and "gone" in missing[0]["message"]
    r = run_analyze(moe, against=[sdir])
    assert r["layers"][0]["parent_distance"] == pytest.approx([0.0, 0.5, 0.0, 0.0], rel=1e-6, abs=1e-9)
    assert not [w for w in r["warnings"] if w["kind"] == "parent_unavailable"]
    with pytest.raises(MoELabError, match="--against: 2 directories for 4 experts"):
        run_analyze(moe, against=[sdir, sdir])
    bad = write_ckpt(tmp_path / "other", {"x": torch.zeros(1)}, cfg(moe=False))
    with pytest.raises(MoELabError, match="dense parent has no tensor 'model.layers.0.mlp.gate_proj.weight'"):
        run_analyze(moe, against=[bad])


def test_bam_shared_kv_attention_experts(tmp_path):
    parents = [dense(20 + e) for e in range(E)]
    pdirs = [write_ckpt(tmp_path / f"p{e}", t, cfg(moe=False)) for e, t in enumerate(parents)]
    g = torch.Generator().manual_seed(3)
    t: dict[str, torch.Tensor] = {}
    for lay in range(L):
        a = f"model.layers.{lay}.self_attn"
        t[f"{a}.router.weight"] = torch.randn(E, D, generator=g)
        t[f"{a}.k_proj.weight"] = torch.randn(D, D, generator=g)
        t[f"{a}.v_proj.weight"] = torch.randn(D, D, generator=g)
        for e in range(E):
            t[f"{a}.experts.{e}.q_proj.weight"] = parents[e][f"{a}.q_proj.weight"]
            t[f"{a}.experts.{e}.o_proj.weight"] = parents[e][f"{a}.o_proj.weight"] * (e + 1)
        f = f"model.layers.{lay}.block_sparse_moe"
        t[f"{f}.gate.weight"] = torch.randn(E, D, generator=g)
        for e in range(E):
            for m, dn in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                t[f"{f}.experts.{e}.{m}.weight"] = parents[e][f"model.layers.{lay}.mlp.{dn}.weight"]
    moe = write_ckpt(tmp_path / "bam", t, cfg(attn=True, shared_kv=True))
    r = run_analyze(moe, against=pdirs)
    assert [(x["layer"], x["router"]) for x in r["layers"]] == [
        (0, "attn"),
        (0, "ffn"),
        (1, "attn"),
        (1, "ffn"),
    ]
    att = layer(r, 0, "attn")
    assert list(att["expert_cosine"]) == ["q_proj", "o_proj"]
    assert att["parent_distance_by_matrix"]["q_proj"] == [0.0] * E
    assert att["parent_distance_by_matrix"]["o_proj"] == pytest.approx([float(e) for e in range(E)])
    assert layer(r, 0, "ffn")["parent_distance"] == [0.0] * E


# ---- compare ----------------------------------------------------------------------------------


def test_compare_lists_changed_tensors_by_relative_change(tmp_path):
    t0 = ffn_moe(seed=5)
    t1 = {k: v.clone() for k, v in t0.items()}
    small = "model.layers.0.block_sparse_moe.experts.1.w3.weight"
    big = "model.embed_tokens.weight"
    t1[small] = t1[small] * 1.01
    t1[big] = t1[big] * 0.5
    a, b = write_ckpt(tmp_path / "a", t0), write_ckpt(tmp_path / "b", t1)
    r = compare_checkpoints(a, b, chunk_bytes=64)
    assert r["num_tensors"] == len(t0)
    assert [x["name"] for x in r["tensors"]] == [big, small]
    assert r["tensors"][0]["rel_change"] == pytest.approx(0.5, rel=1e-6)
    assert r["tensors"][1]["rel_change"] == pytest.approx(0.01, rel=1e-4)
    assert r["tensors"][0]["abs_change"] == pytest.approx(0.5 * float(t0[big].double().norm()), rel=1e-6)
    assert compare_checkpoints(a, a)["tensors"] == []


def test_compare_refuses_other_architectures_naming_the_first_mismatch(tmp_path):
    t0 = ffn_moe(seed=5)
    a = write_ckpt(tmp_path / "a", t0)
    t1 = dict(t0)
    t1["model.embed_tokens.weight"] = torch.zeros(17, D)
    b = write_ckpt(tmp_path / "b", t1)
    with pytest.raises(
        MoELabError, match=r"architectures differ: tensor 'model.embed_tokens.weight' has shape \[16, 8\]"
    ):
        compare_checkpoints(a, b)
    t2 = dict(t0)
    del t2["model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    c = write_ckpt(tmp_path / "c", t2)
    with pytest.raises(
        MoELabError, match="'model.layers.1.block_sparse_moe.experts.3.w2.weight' is in .*a but not in .*c"
    ):
        compare_checkpoints(a, c)
    # A sequence of checkpoints must be one architecture too.
    with pytest.raises(MoELabError, match="not of one architecture"):
        run_analyze(a, b)


# ---- hostile input and the CLI ----------------------------------------------------------------


def test_malformed_moe_layers_are_one_line_errors(tmp_path):
    t = ffn_moe()
    del t["model.layers.0.block_sparse_moe.experts.2.w1.weight"]
    with pytest.raises(MoELabError, match="expert 2 has no 'w1' tensor"):
        run_analyze(write_ckpt(tmp_path / "a", t))
    t = ffn_moe()
    t["model.layers.0.block_sparse_moe.experts.2.w1.weight"] = torch.zeros(F + 1, D)
    with pytest.raises(
        MoELabError, match=r"experts.2.w1.weight' has shape \[13, 8\], expert 0 has \[12, 8\]"
    ):
        run_analyze(write_ckpt(tmp_path / "b", t))
    t = ffn_moe()
    del t["model.layers.1.block_sparse_moe.gate.weight"]
    with pytest.raises(MoELabError, match="layer 1 \\(ffn\\): experts without a router"):
        run_analyze(write_ckpt(tmp_path / "c", t))
    with pytest.raises(MoELabError, match="no MoE layers"):
        run_analyze(write_ckpt(tmp_path / "d", dense(), cfg(moe=False)))


def test_cli_writes_json_atomically_and_reports_truncated_files(tmp_path, capsys):
    a = write_ckpt(tmp_path / "run" / "checkpoints" / "step-000001", ffn_moe(seed=1))
    write_ckpt(tmp_path / "run" / "checkpoints" / "step-000002", ffn_moe(seed=1))
    out = tmp_path / "deep" / "analysis.json"
    # A run directory stands for its checkpoints in step order.
    assert main(["analyze", "--ckpt", str(tmp_path / "run"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "analyze: [1/2] layer 0 ffn" in err and "analyze: [2/2] layer 1 ffn" in err
    doc = json.loads(out.read_text())
    assert doc["version"] == 1 and [c["step"] for c in doc["checkpoints"]] == [1, 2]
    assert set(doc) >= {"checkpoints", "layers", "warnings", "genealogy", "parents"}
    assert [p.name for p in out.parent.iterdir()] == ["analysis.json"]  # no temp file left behind

    assert main(["analyze", "--diff", str(a), str(a), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["num_changed"] == 0

    f = a / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    assert main(["analyze", "--ckpt", str(a), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("moelab: error: ") and "truncated" in err[0] and str(f) in err[0]
    )
    assert "Traceback" not in err[0]
    assert json.loads(out.read_text())["version"] == 1  # the previous result is untouched


def test_bf16_checkpoints_and_nonfinite_values_give_strict_json(tmp_path, capsys):
    t = {k: v.to(torch.bfloat16) for k, v in ffn_moe(experts=same_expert()).items()}
    t["model.layers.0.block_sparse_moe.gate.weight"] = torch.zeros(E, D, dtype=torch.bfloat16)
    a = write_ckpt(tmp_path / "a", t)
    assert main(["analyze", "--ckpt", str(a), "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    x = doc["layers"][0]
    assert x["router_cosine"] == [[None] * E] * E
    assert x["expert_cosine"]["w1"][0][3] == pytest.approx(1.0)
    assert any(w["kind"] == "router_near_zero" and w["experts"] == [0, 1, 2, 3] for w in doc["warnings"])


def test_relative_parent_paths_and_mismatched_parents_from_config(tmp_path, monkeypatch):
    seed = dense(1)
    ws = tmp_path / "workspace"
    write_ckpt(ws / "runs" / "seed", seed, cfg(moe=False))
    meta = {
        "method": "sparse",
        "options": {"keep_seed": True},  # sparse: every expert is the seed regardless
        "parents": [{"role": "seed", "path": "runs/seed", "files": []}],
    }
    moe = _upcycled_from(ws / "runs", [], [seed] * E, [0.0, 0.25, 0.0, 0.0], meta)
    monkeypatch.chdir(tmp_path)  # not the workspace: found through the checkpoint's ancestors
    r = run_analyze(moe)
    assert r["parents"][1] == {
        "expert": 1,
        "path": str(ws / "runs" / "seed"),
        "source": "config",
        "used": True,
    }
    assert r["layers"][1]["parent_distance"] == pytest.approx([0.0, 0.25, 0.0, 0.0], rel=1e-6, abs=1e-9)
    # The recorded parent replaced by another architecture: skipped with a warning, not an error.
    small = {k: v[:, :4].contiguous() if k.endswith("down_proj.weight") else v for k, v in seed.items()}
    (ws / "runs" / "seed" / "model.safetensors").unlink()
    save_file(small, str(ws / "runs" / "seed" / "model.safetensors"))
    r = run_analyze(moe)
    ws_ = [w for w in r["warnings"] if w["kind"] == "parent_unavailable"]
    assert len(ws_) == 1 and ws_[0]["experts"] == [0, 1, 2, 3] and "down_proj" in ws_[0]["message"]
    assert r["layers"][0]["parent_distance"] == [None] * E
    assert [p["used"] for p in r["parents"]] == [False] * E


def test_hostile_configs_and_paths_are_one_line_errors(tmp_path, capsys):
    a = write_ckpt(tmp_path / "a", ffn_moe())
    (a / "config.json").write_text(json.dumps({"moelab": {"genealogy": "x"}}))
    with pytest.raises(MoELabError, match="genealogy is not a list"):
        run_analyze(a)
    (a / "config.json").write_text(json.dumps({"moelab": {"parents": [{"role": "seed", "path": 3}]}}))
    with pytest.raises(MoELabError, match=r"moelab.parents\[0\].path is not a path"):
        run_analyze(a)
    (a / "config.json").unlink()
    for argv in (
        ["--ckpt", str(a)],
        ["--ckpt", str(tmp_path / "nope")],
        ["--compare", str(a), str(tmp_path)],
        ["--ckpt", str(a), "--threshold", "2"],
    ):
        assert main(["analyze", "--quiet", *argv]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("moelab: error: ") and "Traceback" not in err[0], err
    t = ffn_moe()
    t["model.layers.0.block_sparse_moe.experts.4.w1.weight"] = torch.zeros(F, D)
    with pytest.raises(MoELabError, match="names expert 4 but the router has 4"):
        run_analyze(write_ckpt(tmp_path / "b", t))
    t = ffn_moe()
    t["model.layers.0.block_sparse_moe.gate.weight"] = torch.zeros(E, D, dtype=torch.int32)
    with pytest.raises(MoELabError, match="dtype I32, expected a float dtype"):
        run_analyze(write_ckpt(tmp_path / "c", t))


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 7),
    n=st.integers(1, 4),
    chunk=st.integers(1, 2000),
    seed=st.integers(0, 2**16),
)
def test_chunked_reader_gram_and_distance_equal_whole_tensor_math(rows, cols, n, chunk, seed):
    from moelab.analysis.drift import Distance
    from moelab.analysis.similarity import Gram
    from moelab.analysis.source import ChunkReader, rows_per_chunk

    g = torch.Generator().manual_seed(seed)
    ws = {f"w{e}": torch.randn(rows, cols, generator=g) for e in range(n)}
    ref = {f"r{e}": torch.randn(rows, cols, generator=g) for e in range(n)}
    with tempfile.TemporaryDirectory() as d:
        save_file({**ws, **ref}, f"{d}/model.safetensors")
        with ChunkReader(Path(d)) as r:
            gram, dist = Gram(n), Distance(n)
            step = rows_per_chunk(cols * n, 4, chunk)
            for r0 in range(0, rows, step):
                x = torch.stack([r.rows(f"w{e}", r0, r0 + step).flatten() for e in range(n)])
                y = torch.stack([r.rows(f"r{e}", r0, r0 + step).flatten() for e in range(n)])
                gram.add(x)
                dist.add(x, y)
    w = torch.stack([ws[f"w{e}"].double().flatten() for e in range(n)])
    y = torch.stack([ref[f"r{e}"].double().flatten() for e in range(n)])
    assert torch.allclose(
        f64(gram.cosine()), torch.nn.functional.cosine_similarity(w[:, None], w[None], dim=-1), atol=1e-12
    )
    assert torch.allclose(f64(dist.relative()), (w - y).norm(dim=1) / y.norm(dim=1), atol=1e-12)


@pytest.mark.parametrize("method", ["btx", "bam-skv", "sparse"])
def test_real_upcycle_outputs_map_every_expert_to_its_parent(tmp_path, method):
    """The contract with methods/: the parents recorded by `upcycle` (keep_seed: the seed last)
    are found, and each expert is at distance 0 from the dense model it was copied from."""
    from moelab.io.checkpoint import save_model
    from moelab.methods.api import UpcycleOptions, upcycle
    from moelab.models.model import MoELabForCausalLM

    dirs = []
    for i in range(3):
        torch.manual_seed(40 + i)
        d = tmp_path / f"dense{i}"
        d.mkdir()
        save_model(MoELabForCausalLM(cfg(moe=False)), d)
        dirs.append(d)
    experts = [] if method == "sparse" else dirs[1:]
    out = upcycle(
        UpcycleOptions(
            method=method,
            seed=dirs[0],
            experts=experts,
            out=tmp_path / "moe",
            keep_seed=method != "sparse",
            num_experts=3 if method == "sparse" else None,
        )
    )
    r = run_analyze(out)
    want = [dirs[0]] * 3 if method == "sparse" else [dirs[1], dirs[2], dirs[0]]
    assert [p["path"] for p in r["parents"]] == [str(p.resolve()) for p in want]
    assert {x["router"] for x in r["layers"]} == ({"ffn", "attn"} if method.startswith("bam") else {"ffn"})
    for x in r["layers"]:
        assert x["parent_distance"] == [0.0] * 3, (x["layer"], x["router"])
        assert x["num_experts"] == 3
    if method == "bam-skv":
        assert list(layer(r, 0, "attn")["expert_cosine"]) == ["q_proj", "o_proj"]
    if method == "sparse":
        assert {w["kind"] for w in r["warnings"]} == {"collapsed_experts"}  # copies, by construction


def test_output_file_gets_the_usual_permissions(tmp_path):
    import os
    import stat

    a = write_ckpt(tmp_path / "a", ffn_moe())
    out = tmp_path / "analysis.json"
    old = os.umask(0o022)
    try:
        assert main(["analyze", "--quiet", "--ckpt", str(a), "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
