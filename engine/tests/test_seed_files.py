"""Nothing of the seed is lost: tokenizer files (chat template included), generation_config.json and
the config keys the engine does not model reach every output (upcycle, training checkpoints, HF
export); experts that attend differently from the seed are refused; a bad --out is one clear line."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hf_tiny import make_hf, save_hf
from hf_tokenizer import save_tokenizer

from moelab.cli import main
from moelab.data.tokenizer import HFTokenizer, detect, load_tokenizer
from moelab.io.seed_files import SEED_FILES

pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

VOCAB = 320
MESSAGES = [{"role": "user", "content": "route the quick fox"}, {"role": "assistant", "content": "42"}]


def make_seed(path: Path, kind: str = "llama", seed: int = 0, **overrides) -> Path:
    overrides.setdefault("vocab_size", VOCAB)
    model = make_hf(kind, seed=seed, bos_token_id=1, eos_token_id=2, pad_token_id=3, **overrides)
    save_hf(model, path)
    save_tokenizer(path)
    transformers.GenerationConfig(
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=17,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    return make_seed(tmp_path_factory.mktemp("seed") / "seed")


def seed_files(ckpt: Path) -> dict[str, bytes]:
    return {n: (ckpt / n).read_bytes() for n in SEED_FILES if (ckpt / n).is_file()}


def assert_carries_seed(seed: Path, out: Path) -> None:
    want = seed_files(seed)
    assert {
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "vocab.json",
        "merges.txt",
        "generation_config.json",
    } <= set(want)
    assert seed_files(out) == want
    seed_tok = transformers.AutoTokenizer.from_pretrained(seed)
    out_tok = transformers.AutoTokenizer.from_pretrained(out)
    chat = out_tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert chat == seed_tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert chat.startswith("<s>user: route the quick fox</s>")
    ids = out_tok.apply_chat_template(MESSAGES, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids and max(ids) < VOCAB
    assert transformers.GenerationConfig.from_pretrained(
        out
    ) == transformers.GenerationConfig.from_pretrained(seed)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 3)
    loaded = transformers.AutoConfig.from_pretrained(out)
    assert loaded.pad_token_id == 3


@pytest.mark.parametrize("method", ["sparse", "btx"])
def test_upcycle_carries_everything_of_the_seed(seed, tmp_path, method):
    experts = [] if method == "sparse" else ["--expert", str(seed), "--expert", str(seed)]
    out = tmp_path / "moe"
    assert (
        main(
            [
                "upcycle",
                "--method",
                method,
                "--seed",
                str(seed),
                *experts,
                "--out",
                str(out),
                "--num-experts",
                "2",
                "--moe-layers",
                "all",
            ]
        )
        == 0
    )
    assert_carries_seed(seed, out)


def test_mistral_sliding_window_reaches_the_mixtral_output(tmp_path):
    seed = make_seed(tmp_path / "seed", "mistral", sliding_window=16)
    out = tmp_path / "moe"
    assert (
        main(
            [
                "upcycle",
                "--method",
                "sparse",
                "--seed",
                str(seed),
                "--num-experts",
                "2",
                "--moe-layers",
                "all",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cfg = transformers.AutoConfig.from_pretrained(out)
    assert cfg.model_type == "mixtral" and cfg.sliding_window == 16 and cfg.pad_token_id == 3
    assert_carries_seed(seed, out)


def test_training_checkpoints_and_hf_export_carry_the_seed(seed, tmp_path):
    # A few steps on the seed's own tokenizer, then the checkpoint is exported: both keep it all.
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"the quick brown fox {i} jumps over {i * 7}"}) + "\n" for i in range(80))
    )
    cfg = {
        "run_id": "t",
        "out": str(tmp_path / "runs"),
        "init": str(seed),
        "steps": 2,
        "batch_size": 2,
        "log_every": 1,
        "eval_every": 100,
        "ckpt_every": 2,
        "eval_batches": 1,
        "warmup_steps": 1,
        "device": "cpu",
        "threads": 1,
        "data": {
            "seq_len": 16,
            "eval_fraction": 0.2,
            "sources": [{"domain": "d", "kind": "jsonl", "path": str(data)}],
        },
    }
    (tmp_path / "t.json").write_text(json.dumps(cfg))
    assert main(["train", str(tmp_path / "t.json"), "--quiet"]) == 0
    ckpt = tmp_path / "runs" / "t" / "checkpoints" / "step-000002"
    assert_carries_seed(seed, ckpt)
    out = tmp_path / "hf"
    assert main(["export", "--ckpt", str(ckpt), "--format", "hf", "--out", str(out)]) == 0
    assert_carries_seed(seed, out)


def test_one_tokenizer_rule_for_a_checkpoint_with_both_a_byte_marker_and_tokenizer_json(
    seed, tmp_path, capsys
):
    both = tmp_path / "both"
    shutil.copytree(seed, both)
    (both / "moelab_tokenizer.json").write_text(json.dumps({"type": "bytes", "vocab_size": 256, "eos_id": 0}))
    text = "the quick fox"
    want = transformers.AutoTokenizer.from_pretrained(seed)(text, add_special_tokens=False)["input_ids"]
    assert want != list(text.encode())
    # training and evaluation, ONNX export and inspection all use tokenizer.json
    tok = load_tokenizer(both, VOCAB, 2)
    assert isinstance(tok, HFTokenizer) and tok.encode(text) == want
    assert detect(both, VOCAB).kind == "hf"
    assert main(["inspect", "--ckpt", str(both), "--text", text, "--json"]) == 0
    tokens = json.loads(capsys.readouterr().out)["tokens"]
    assert [t["id"] for t in tokens] == want


# ---- experts that attend differently --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "overrides", "field"),
    [
        ("mistral", {}, "model_type"),
        ("llama", {"rope_theta": 5e5}, "rope_theta"),
        ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ],
)
def test_experts_that_differ_from_the_seed_are_refused(seed, tmp_path, capsys, kind, overrides, field):
    other = make_seed(tmp_path / "other", kind, seed=1, **overrides)
    line = _cli_error(
        capsys,
        "upcycle",
        "--method",
        "btx",
        "--seed",
        str(seed),
        "--expert",
        str(seed),
        "--expert",
        str(other),
        "--out",
        str(tmp_path / "out"),
    )
    assert str(other) in line and field in line
    assert not (tmp_path / "out").exists()


def test_expert_with_another_sliding_window_is_refused(tmp_path, capsys):
    seed = make_seed(tmp_path / "seed", "mistral", sliding_window=16)
    other = make_seed(tmp_path / "other", "mistral", seed=1, sliding_window=32)
    line = _cli_error(
        capsys,
        "upcycle",
        "--method",
        "btx",
        "--seed",
        str(seed),
        "--expert",
        str(other),
        "--out",
        str(tmp_path / "out"),
    )
    assert str(other) in line and "sliding_window is 32" in line and "16" in line


# ---- --out on a file system that says no ----------------------------------------------------------


def _cli_error(capsys, *args: str) -> str:
    capsys.readouterr()
    rc = main(list(args))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("upcycle ")]  # progress lines
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("moelab: error: "), err
    assert "Traceback" not in err and "Errno" not in err
    return lines[0]


def test_out_under_a_regular_file(seed, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "moe"
    line = _cli_error(capsys, "upcycle", "--method", "sparse", "--seed", str(seed), "--out", str(out))
    assert str(out) in line and "not a directory" in line and "choose another" in line


def test_out_where_creating_is_not_permitted(seed, capsys):
    # /sys refuses new entries to everyone, root included (EPERM).
    line = _cli_error(
        capsys, "upcycle", "--method", "sparse", "--seed", str(seed), "--out", "/sys/moelab-out"
    )
    assert "/sys" in line and "permission denied" in line and "choose an output directory" in line


def _subprocess_upcycle(seed: Path, out: Path, preexec):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "moelab",
            "upcycle",
            "--method",
            "sparse",
            "--num-experts",
            "2",
            "--seed",
            str(seed),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=300,
    )


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("upcycle ")]
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("moelab: error: "), p.stderr
    assert "Traceback" not in p.stderr and "Errno" not in p.stderr
    return lines[0]


def test_out_on_a_full_disk(seed, tmp_path):
    def limit() -> None:  # writes past the limit fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = tmp_path / "moe"
    line = _one_error_line(_subprocess_upcycle(seed, out, limit))
    assert str(out) in line and "no space left" in line and "free some space" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".moe.")]


def test_out_in_a_read_only_directory(seed, capsys):
    # Root ignores permissions: then the command runs with the effective uid of `nobody`, on a
    # seed it may read, in this process (everything it imports is imported by the tests above).
    root = Path(tempfile.mkdtemp(prefix="moelab-ro-"))
    try:
        root.chmod(0o755)
        shutil.copytree(seed, root / "seed")
        for p in [root / "seed", *(root / "seed").iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "ro").mkdir()
        (root / "ro").chmod(0o555)
        out = root / "ro" / "moe"
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            line = _cli_error(
                capsys, "upcycle", "--method", "sparse", "--seed", str(root / "seed"), "--out", str(out)
            )
        finally:
            if as_root:
                os.seteuid(0)
        assert (
            str(root / "ro") in line and "permission denied" in line and "choose an output directory" in line
        )
        assert not out.exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
