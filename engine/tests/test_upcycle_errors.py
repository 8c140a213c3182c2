"""Bad input: one line on stderr naming the file and the fault, no traceback, no --out left."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from hf_tiny import make_hf, save_hf

from moelab.cli import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return save_hf(make_hf("llama", seed=0), root / "seed")


def _copy(good, tmp_path, name="bad"):
    dst = tmp_path / name
    shutil.copytree(good, dst)
    return dst


def _rewrite_header(path, mutate):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = raw[8 : 8 + n], raw[8 + n :]
    new_header = mutate(json.loads(header))
    if isinstance(new_header, dict):
        new_header = json.dumps(new_header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data)


def _run(capsys, tmp_path, *args):
    out = tmp_path / "out"
    capsys.readouterr()  # drop what building the fixtures printed
    rc = main(["upcycle", "--out", str(out), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("upcycle ")]  # progress lines
    assert rc != 0
    assert len(lines) == 1 and lines[0].startswith("moelab: error: "), err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no half-written temp dir
    return lines[0]


def test_missing_directory(capsys, tmp_path):
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in line and "no such directory" in line


def test_missing_safetensors(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    (bad / "model.safetensors").unlink()
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(bad) in line and "model.safetensors" in line


def test_missing_config(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    (bad / "config.json").unlink()
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(bad / "config.json") in line


def test_truncated_safetensors(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    line = _run(capsys, tmp_path, "--method", "btx", "--seed", str(good), "--expert", str(bad))
    assert str(f) in line and "truncated" in line


def test_tiny_file(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    (bad / "model.safetensors").write_bytes(b"\x01\x02")
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(bad / "model.safetensors") in line and "truncated" in line


def test_header_claims_more_than_the_file(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    f = bad / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(struct.pack("<Q", len(raw) * 10) + raw[8:])
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(f) in line and "header claims" in line


def test_invalid_header_json(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)
    _rewrite_header(bad / "model.safetensors", lambda h: json.dumps(h).encode()[:-7] + b"@@@@@@@")
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(bad / "model.safetensors") in line and "not valid JSON" in line


def test_unknown_dtype(capsys, tmp_path, good):
    bad = _copy(good, tmp_path)

    def mutate(h):
        h["model.norm.weight"]["dtype"] = "F17"
        return h

    _rewrite_header(bad / "model.safetensors", mutate)
    line = _run(capsys, tmp_path, "--method", "sparse", "--seed", str(bad))
    assert str(bad / "model.safetensors") in line and "F17" in line and "model.norm.weight" in line


@pytest.mark.parametrize(
    "field,value", [("num_hidden_layers", 3), ("intermediate_size", 64), ("num_key_value_heads", 4)]
)
def test_expert_architecture_differs(capsys, tmp_path, good, field, value):
    other = save_hf(make_hf("llama", seed=1, **{field: value}), tmp_path / "other")
    line = _run(
        capsys,
        tmp_path,
        "--method",
        "btx",
        "--seed",
        str(good),
        "--expert",
        str(good),
        "--expert",
        str(other),
    )
    assert str(other) in line and field in line


def test_expert_tensor_shape_differs(capsys, tmp_path, good):
    """Same config, one tensor of another shape: named with its file."""
    import torch
    from safetensors.torch import load_file, save_file

    bad = _copy(good, tmp_path)
    state = load_file(bad / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(40, 32)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    line = _run(capsys, tmp_path, "--method", "bam-ekv", "--seed", str(good), "--expert", str(bad))
    assert str(bad / "model.safetensors") in line and "model.layers.1.mlp.up_proj.weight" in line


def test_expert_is_an_moe(capsys, tmp_path, good):
    moe = tmp_path / "moe"
    assert main(["upcycle", "--method", "sparse", "--seed", str(good), "--out", str(moe)]) == 0
    capsys.readouterr()
    line = _run(capsys, tmp_path, "--method", "btx", "--seed", str(good), "--expert", str(moe))
    assert str(moe / "config.json") in line and "already a mixture" in line


@pytest.mark.parametrize(
    "args,option",
    [
        (["--expert", "{good}", "--num-experts", "3"], "--expert"),  # one checkpoint: no pair to merge
        (["--expert", "{good}", "--expert", "{good}", "--num-experts", "1"], "--num-experts"),
        (["--expert", "{good}", "--lora-rank", "999"], "--lora-rank"),
        (["--expert", "{good}", "--dare-drop", "1"], "--dare-drop"),
        (["--expert", "{good}", "--router-data", "nonsense-domain"], "--router-data"),
    ],
)
def test_upit_bad_options(capsys, tmp_path, good, args, option):
    line = _run(
        capsys, tmp_path, "--method", "upit", "--seed", str(good), *(a.format(good=good) for a in args)
    )
    assert option in line


def test_upit_checkpoints_of_another_architecture(capsys, tmp_path, good):
    other = save_hf(make_hf("llama", seed=1, hidden_size=48), tmp_path / "other")
    line = _run(
        capsys,
        tmp_path,
        "--method",
        "upit",
        "--seed",
        str(good),
        "--expert",
        str(good),
        "--expert",
        str(other),
        "--num-experts",
        "3",
    )
    assert str(other) in line and "hidden_size" in line


@pytest.mark.parametrize(
    "args,option",
    [
        (["--top-k", "5"], "--top-k"),
        (["--moe-layers", "7"], "--moe-layers"),
        (["--moe-layers", "x,y"], "--moe-layers"),
        (["--num-experts", "3"], "--num-experts"),
        (["--max-shard-size", "lots"], "--max-shard-size"),
        (["--router-init", "hidden"], "--router-init"),
    ],
)
def test_bad_options(capsys, tmp_path, good, args, option):
    line = _run(
        capsys,
        tmp_path,
        "--method",
        "btx",
        "--seed",
        str(good),
        "--expert",
        str(good),
        "--expert",
        str(good),
        *args,
    )
    assert option in line


def test_existing_out_is_kept(capsys, tmp_path, good):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["upcycle", "--method", "sparse", "--seed", str(good), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep").read_text() == "x"
    assert main(["upcycle", "--method", "sparse", "--seed", str(good), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "keep").exists() and (out / "config.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    from moelab.errors import CheckpointError

    with pytest.raises(CheckpointError):
        main(
            [
                "--debug",
                "upcycle",
                "--method",
                "sparse",
                "--seed",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
