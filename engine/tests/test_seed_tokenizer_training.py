"""Training and evaluation read text with the seed's own Hugging Face tokenizer (tokenizer.json) for
plain-text, JSONL and local `datasets` sources, and a resumed run continues the same loss curve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hf_tiny import make_hf, save_hf
from hf_tokenizer import save_tokenizer

from moelab.data.mixture import DataConfig, build_domains
from moelab.data.sources import DataSource
from moelab.data.tokenizer import HFTokenizer, load_tokenizer
from moelab.train.config import TrainConfig
from moelab.train.runlog import read_jsonl
from moelab.train.trainer import train

transformers = pytest.importorskip("transformers")

VOCAB = 320
EOS = 2  # "</s>" in hf_tokenizer's specials
DOCS = [
    f"def add(a, b): return a + b  # {i}\nthe quick brown fox {i * 7} jumps over the lazy dog"
    for i in range(60)
]


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    # Qwen3-shaped (per-head q/k norms, GQA).
    path = save_hf(
        make_hf("qwen3", seed=2, vocab_size=VOCAB, eos_token_id=EOS, bos_token_id=1),
        tmp_path_factory.mktemp("seed") / "seed",
    )
    save_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    return path


def test_every_user_source_kind_is_read_with_the_seeds_tokenizer(seed, jsonl, tmp_path):
    tok = load_tokenizer(seed, VOCAB, EOS)
    assert isinstance(tok, HFTokenizer)
    # transformers' own reader of tokenizer.json (AutoTokenizer would pick the Qwen class, which
    # replaces the pre-tokenizer of this made-up tokenizer with Qwen's digit-splitting one).
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(seed / "tokenizer.json"))

    def packed(docs: list[str]) -> list[int]:
        return [i for d in docs for i in [*reference(d, add_special_tokens=False)["input_ids"], EOS]]

    (tmp_path / "d.txt").write_text("\n\n".join(DOCS) + "\n")
    sources = [
        DataSource("jsonl", kind="jsonl", path=str(jsonl)),
        DataSource("text", kind="text", path=str(tmp_path / "d.txt")),
    ]
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "ds"))
    sources.append(DataSource("hf", kind="hf", path=str(tmp_path / "ds")))
    domains = build_domains(DataConfig(sources=sources, seq_len=16, eval_fraction=0.25), tok)
    want = {"jsonl": packed(DOCS), "hf": packed(DOCS), "text": packed([d + "\n" for d in DOCS])}
    for name, d in domains.items():
        assert d.train.tolist() + d.eval.tolist() == want[name], name


def _train(seed: Path, jsonl: Path, out: Path, run_id: str) -> Path:
    cfg = TrainConfig(
        run_id=run_id,
        out=str(out),
        init=str(seed),
        steps=6,
        batch_size=2,
        log_every=1,
        eval_every=3,
        ckpt_every=3,
        keep_last=3,
        eval_batches=1,
        warmup_steps=1,
        device="cpu",
        threads=1,
        data=DataConfig(
            sources=[DataSource("d", kind="jsonl", path=str(jsonl))], seq_len=16, eval_fraction=0.2
        ),
    )
    assert train(cfg, quiet=True).status == "done"
    return out / run_id


def _losses(run: Path) -> list[tuple[int, str, float]]:
    recs, bad = read_jsonl(run / "metrics.jsonl")
    assert bad == 0
    return [(r["step"], r["split"], r["loss"]) for r in recs]


def test_train_on_jsonl_with_the_seeds_tokenizer_and_resume_the_same_curve(seed, jsonl, tmp_path):
    ref = _train(seed, jsonl, tmp_path / "runs", "ref")
    run = _train(seed, jsonl, tmp_path / "runs", "cut")
    # As if killed after step 3's checkpoint: it resumes from there.
    shutil.rmtree(run / "checkpoints" / "step-000006")
    (run / "checkpoints" / "latest").write_text("step-000003\n")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    _train(seed, jsonl, tmp_path / "runs", "cut")
    assert _losses(run) == _losses(ref) and len(_losses(ref)) >= 6
    last = run / "checkpoints" / "step-000006"
    assert (last / "tokenizer.json").read_bytes() == (seed / "tokenizer.json").read_bytes()
    assert isinstance(load_tokenizer(last, VOCAB, EOS), HFTokenizer)
    assert transformers.AutoModelForCausalLM.from_pretrained(last).config.vocab_size == VOCAB
