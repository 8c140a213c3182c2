"""`moelab inspect`: counts from headers, FLOPs formula, routing of a text."""

from __future__ import annotations

import json

import pytest
from hf_tiny import make_hf, save_hf

from moelab.cli import main
from moelab.methods.api import UpcycleOptions, upcycle

D, F, L, V, H, HD = 32, 48, 2, 256, 4, 8  # hidden, ffn, layers, vocab, heads, head_dim
FFN_EXPERT = 3 * D * F


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    seed = save_hf(make_hf("llama", seed=0, vocab_size=V), root / "seed")
    btx = upcycle(UpcycleOptions(method="btx", seed=seed, experts=[seed] * 3, out=root / "btx", top_k=2))
    bam = upcycle(
        UpcycleOptions(
            method="bam-ekv",
            seed=seed,
            experts=[seed] * 3,
            out=root / "bam",
            top_k=1,
            attn_top_k=2,
            moe_layers="every-other",
        )
    )
    return seed, btx, bam


def _json(capsys, *args):
    capsys.readouterr()
    assert main(["inspect", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_dense_counts_and_flops(capsys, ckpts):
    seed, _, _ = ckpts
    s = _json(capsys, "--ckpt", str(seed), "--seq-len", "100", "--attention", "full")
    attn = D * H * HD * 2 + D * 2 * HD * 2  # q, o + k, v (2 kv heads)
    per_layer = attn + FFN_EXPERT + 2 * D
    total = 2 * V * D + L * per_layer + D
    assert s["params_total"] == s["params_active"] == total
    matmul = total - V * D - (2 * L + 1) * D
    assert s["flops_per_token"] == 2 * matmul + L * 4 * 100 * HD * H
    assert s["method"] == "dense" and s["num_experts"] == 0
    causal = _json(capsys, "--ckpt", str(seed), "--seq-len", "100", "--unit", "mac")  # mean 50.5 keys
    assert causal["flops_per_token"] == matmul + L * 2 * 50.5 * HD * H


def test_btx_active_params(capsys, ckpts):
    _, btx, _ = ckpts
    s = _json(capsys, "--ckpt", str(btx))
    assert s["model_type"] == "mixtral" and s["method"] == "btx" and s["num_experts"] == 3 and s["top_k"] == 2
    assert s["params_total"] - s["params_active"] == L * FFN_EXPERT  # one of 3 experts idle per layer
    assert [p["role"] for p in s["parents"]] == ["seed", "expert", "expert", "expert"]
    assert 0 < s["weights_bytes"] - 4 * s["params_total"] < 16_000  # fp32 data + headers


def test_bam_top2_attention_counts(capsys, ckpts):
    _, _, bam = ckpts
    s = _json(capsys, "--ckpt", str(bam), "--seq-len", "10")
    attn_expert = D * H * HD * 2 + D * 2 * HD * 2
    assert s["moe_layers"] == [1] and s["attn_top_k"] == 2
    # Top-2 of 3 attention experts: one expert's Q and O idle; expert-KV K and V run for all.
    q_o = D * H * HD * 2
    assert attn_expert > q_o
    assert s["params_total"] - s["params_active"] == 2 * FFN_EXPERT + 1 * q_o
    assert [lay["attn_experts"] for lay in s["per_layer"]] == [0, 3]


def test_text_routing(capsys, ckpts):
    _, btx, bam = ckpts
    s = _json(capsys, "--ckpt", str(bam), "--text", "hi!")
    assert [t["id"] for t in s["tokens"]] == list(b"hi!")
    routes = s["tokens"][0]["routes"]
    assert [(r["layer"], r["router"], len(r["experts"])) for r in routes] == [(1, "attn", 2), (1, "ffn", 1)]
    capsys.readouterr()
    assert main(["inspect", "--ckpt", str(btx), "--text", "ab"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs/token" in out and "L0 ffn" in out and "active per token" in out


def test_text_with_tokenizer_json(capsys, ckpts, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    _, btx, _ = ckpts
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 5, "world": 7}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(btx, ck)
    tok.save(str(ck / "tokenizer.json"))
    s = _json(capsys, "--ckpt", str(ck), "--text", "hello world zzz")
    assert [(t["id"], t["token"]) for t in s["tokens"]] == [(5, "hello"), (7, "world"), (0, "[UNK]")]


def test_bad_checkpoint_one_line(capsys, tmp_path):
    capsys.readouterr()
    assert main(["inspect", "--ckpt", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "missing") in err[0]
