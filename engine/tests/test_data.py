"""Data: synthetic domains deterministic by seed and distinct, sources, tokenizers, packing, mixture."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from moelab.data import synthetic
from moelab.data.mixture import DataConfig, MixtureSampler, build_domains
from moelab.data.packing import eval_windows, pack
from moelab.data.sources import DataSource, load_user_documents
from moelab.data.tokenizer import ByteTokenizer, load_tokenizer
from moelab.errors import CheckpointError, ConfigError


def test_synthetic_deterministic_by_seed():
    for d in synthetic.DOMAINS:
        a = synthetic.documents(d, 1, 5000)
        assert a == synthetic.documents(d, 1, 5000)
        assert a != synthetic.documents(d, 2, 5000)
        assert a != synthetic.documents(d, 1, 5000, split="eval")
        assert sum(map(len, a)) >= 5000


def test_synthetic_domains_differ():
    hist = {d: Counter("".join(synthetic.documents(d, 0, 20000))) for d in synthetic.DOMAINS}
    digits = {d: sum(v for k, v in h.items() if k.isdigit()) / sum(h.values()) for d, h in hist.items()}
    assert digits["math"] > 0.5 > digits["code"] and digits["prose"] == 0
    assert "def " in "".join(synthetic.documents("code", 0, 2000))
    # arithmetic answers are right
    for line in "".join(synthetic.documents("math", 0, 3000)).split():
        lhs, rhs = line.split("=")
        assert eval(lhs) == int(rhs)  # noqa: S307 - our own generated digits and operators


def test_byte_tokenizer_and_packing():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo")) == "héllo"
    s = pack(["ab", "c"], tok)
    assert s.tolist() == [97, 98, 0, 99, 0]
    w = eval_windows(torch.arange(20), 4, 10)
    assert w.shape == (4, 5) and w[1].tolist() == [4, 5, 6, 7, 8]


def test_tokenizer_from_checkpoint(tmp_path):
    ByteTokenizer().save(tmp_path)
    assert json.loads((tmp_path / "moelab_tokenizer.json").read_text())["type"] == "bytes"
    assert isinstance(load_tokenizer(tmp_path, 256), ByteTokenizer)
    with pytest.raises(CheckpointError, match="vocab_size 1000"):
        load_tokenizer(tmp_path / "nothing", 1000)


def test_hf_tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3}
    t = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path, 4, eos_token_id=1)
    assert tok.encode("hello world") == [2, 3]
    assert pack(["hello", "world hello"], tok).tolist() == [2, 1, 3, 2, 1]
    out = tmp_path / "copy"
    out.mkdir()
    tok.save(out)
    assert (out / "tokenizer.json").exists()


def test_user_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n")
    assert load_user_documents(DataSource("x", kind="text", path=str(tmp_path / "a.txt"))) == [
        "first doc\n",
        "second doc\n",
    ]
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert load_user_documents(DataSource("y", kind="jsonl", path=str(tmp_path / "b.jsonl"))) == [
        "one",
        "two",
    ]
    (tmp_path / "bad.jsonl").write_text('{"body": "one"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*'text'"):
        load_user_documents(DataSource("y", kind="jsonl", path=str(tmp_path / "bad.jsonl")))
    with pytest.raises(ConfigError, match="no such file"):
        load_user_documents(DataSource("z", kind="text", path=str(tmp_path / "missing.txt")))


def test_hf_datasets_optional(tmp_path):
    try:
        import datasets  # noqa: F401
    except ImportError:
        (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
        with pytest.raises(ConfigError, match="datasets"):
            load_user_documents(DataSource("w", kind="hf", path=str(tmp_path / "d.jsonl")))
    else:
        pytest.skip("datasets is installed")


def test_build_domains_user_split(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    cfg = DataConfig(
        sources=[DataSource("mine", kind="text", path=str(tmp_path / "t.txt"))], seq_len=16, eval_fraction=0.2
    )
    d = build_domains(cfg, ByteTokenizer())["mine"]
    assert len(d.eval) > 16 and abs(len(d.train) / (len(d.train) + len(d.eval)) - 0.8) < 0.01
    cfg.seq_len = 10_000
    with pytest.raises(ConfigError, match=r"data.sources\[0\] \(mine\)"):
        build_domains(cfg, ByteTokenizer())


def test_mixture_sampler_deterministic_and_weighted():
    streams = {d: torch.arange(1000) + 1000 * i for i, d in enumerate(["a", "b", "c"])}
    s = MixtureSampler(streams, {"a": 1, "b": 1, "c": 1}, seq_len=8, batch_size=9, seed=3)
    x, rows = s.batch(7, 1)
    x2, rows2 = s.batch(7, 1)
    assert torch.equal(x, x2) and rows == rows2 and x.shape == (9, 9)
    assert Counter(rows) == {"a": 3, "b": 3, "c": 3}
    assert not torch.equal(x, s.batch(8, 1)[0])
    for row, d in zip(x, rows):  # each row is a contiguous window of its domain's stream
        assert (row // 1000 == "abc".index(d)).all() and (row.diff() == 1).all()
    only = MixtureSampler(streams, {"a": 0, "b": 1, "c": 0}, seq_len=8, batch_size=4, seed=3)
    assert set(only.batch(0)[1]) == {"b"}
