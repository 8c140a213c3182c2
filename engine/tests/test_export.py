"""moelab export --format onnx: onnxruntime matches PyTorch on every model kind, at two lengths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moelab.cli import main
from moelab.errors import CheckpointError
from moelab.export.manifest import check_export
from moelab.io.checkpoint import load_model, save_model
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

BASE = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
KINDS = {
    "dense": dict(model_type="llama"),
    "sparse-top2": dict(
        model_type="moelab", moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1], method="sparse")
    ),
    "bam-ekv-soft": dict(
        model_type="moelab",
        moe=MoEConfig(
            num_experts=3, top_k=2, moe_layers=[0, 1], attn_experts=True, attn_top_k=0, method="bam-ekv"
        ),
    ),
    "bam-skv-top1": dict(
        model_type="moelab",
        moe=MoEConfig(
            num_experts=4,
            top_k=1,
            moe_layers=[1],
            attn_experts=True,
            shared_kv=True,
            attn_top_k=1,
            method="bam-skv",
        ),
    ),
    "mixtral": dict(model_type="mixtral", moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1])),
    # The last router in layer 0 of 2: the graph stops there (no layer 1, no LM head).
    "sparse-first-layer": dict(
        model_type="moelab", moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0], method="sparse")
    ),
    # Expert capacity drops slots at inference too: the export must drop the same ones.
    "sparse-capacity": dict(
        model_type="moelab",
        moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1], capacity_factor=0.75, method="sparse"),
    ),
    # UpIT: full FFN experts are Mixtral's layout; LoRA experts are deltas on a shared FFN.
    "upit-full": dict(
        model_type="mixtral", moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0, 1], method="upit")
    ),
    "upit-lora": dict(
        model_type="moelab",
        moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[1], lora_rank=4, lora_alpha=4.0, method="upit"),
    ),
    # Other families: windows, soft-caps, q/k norms (per attention expert), local RoPE, post norms.
    "gemma2-bam-ekv": dict(
        model_type="moelab",
        family="gemma2",
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0,
        query_pre_attn_scalar=12,
        moe=MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1], attn_experts=True, method="bam-ekv"),
    ),
    "gemma3-bam-skv": dict(
        model_type="moelab",
        family="gemma3_text",
        sliding_window=4,
        rope_local_theta=100.0,
        layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=12,
        moe=MoEConfig(
            num_experts=3,
            top_k=1,
            moe_layers=[0, 1],
            attn_experts=True,
            shared_kv=True,
            attn_top_k=1,
            method="bam-skv",
        ),
    ),
    "olmo2-bam-ekv": dict(
        model_type="moelab",
        family="olmo2",
        moe=MoEConfig(
            num_experts=3, top_k=2, moe_layers=[1], attn_experts=True, attn_top_k=2, method="bam-ekv"
        ),
    ),
}
EXPECTED_ROUTERS = {
    "dense": [],
    "sparse-top2": ["router_probs.L0.ffn", "router_probs.L1.ffn"],
    "bam-ekv-soft": [
        "router_probs.L0.attn",
        "router_probs.L0.ffn",
        "router_probs.L1.attn",
        "router_probs.L1.ffn",
    ],
    # Attention experts only in MoE layers: layer 0 is dense.
    "bam-skv-top1": ["router_probs.L1.attn", "router_probs.L1.ffn"],
    "mixtral": ["router_probs.L0.ffn", "router_probs.L1.ffn"],
    "sparse-first-layer": ["router_probs.L0.ffn"],
    "sparse-capacity": ["router_probs.L0.ffn", "router_probs.L1.ffn"],
    "upit-full": ["router_probs.L0.ffn", "router_probs.L1.ffn"],
    "upit-lora": ["router_probs.L1.ffn"],
    "gemma2-bam-ekv": [
        "router_probs.L0.attn",
        "router_probs.L0.ffn",
        "router_probs.L1.attn",
        "router_probs.L1.ffn",
    ],
    "gemma3-bam-skv": [
        "router_probs.L0.attn",
        "router_probs.L0.ffn",
        "router_probs.L1.attn",
        "router_probs.L1.ffn",
    ],
    "olmo2-bam-ekv": ["router_probs.L1.attn", "router_probs.L1.ffn"],
}


def make_ckpt(root: Path, kind: str, seed: int = 0, **over: object) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**BASE, **KINDS[kind], **over})
    model = MoELabForCausalLM(cfg)
    # Larger router weights than the 0.02 init, so top-k choices are far from ties.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gate.weight", "router.weight")):
                p.normal_(0, 1.0)
            if ".lora_b_" in name:  # LoRA B starts at zero: make the experts differ
                p.normal_(0, 0.1)
            if name.endswith(("q_norm", "k_norm", "q_norm.weight", "k_norm.weight")):
                p.add_(torch.randn_like(p) * 0.3)  # q/k norms start equal: make the attention experts' differ
    out = root / kind
    out.mkdir(parents=True)
    save_model(model, out)
    return out


def export(ckpt: Path, out: Path, *extra: str) -> int:
    return main(["export", "--ckpt", str(ckpt), "--format", "onnx", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("export")
    done = {}
    for kind in KINDS:
        ckpt = make_ckpt(root / "ckpt", kind)
        out = root / "onnx" / kind
        # --no-verify: this test does the comparison itself, at other lengths and batch sizes.
        assert export(ckpt, out, "--no-verify") == 0
        done[kind] = (ckpt, out)
    return done


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_onnx_matches_pytorch_at_two_lengths(exports: dict[str, tuple[Path, Path]], kind: str) -> None:
    ckpt, out = exports[kind]
    manifest = check_export(out)
    assert [r["output"] for r in manifest["routers"]] == EXPECTED_ROUTERS[kind]
    model = load_model(ckpt)
    sess = session(out / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    # The routers only (the inspector reads nothing else); a dense model keeps its logits.
    assert names == (EXPECTED_ROUTERS[kind] or ["logits"])
    gen = torch.Generator().manual_seed(1)
    # One token leaves most experts empty (zero-row matmuls); 5 and 23 show the axes are dynamic.
    for batch, seq in ((1, 1), (1, 5), (2, 23)):
        ids = torch.randint(0, 256, (batch, seq), generator=gen)
        with torch.no_grad():
            ref = model(ids)
        got = dict(zip(names, sess.run(names, {"input_ids": ids.numpy()})))
        if kind == "dense":
            assert got["logits"].shape == (batch, seq, 256)
            np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4, rtol=0)
        assert len(ref.router_logits) == len(EXPECTED_ROUTERS[kind])
        for r in ref.router_logits:
            probs = got[f"router_probs.L{r.layer}.{r.kind}"]
            assert probs.shape == (batch, seq, r.logits.shape[-1])
            np.testing.assert_allclose(probs.reshape(batch * seq, -1), r.probs().numpy(), atol=1e-4, rtol=0)
            # The inspector colours by the top expert: the same expert on both sides.
            assert (probs.reshape(batch * seq, -1).argmax(-1) == r.probs().argmax(-1).numpy()).all()


def module_scopes(path: Path) -> set[str]:
    """The module path of every node of an ONNX file written by torch's dynamo exporter (its
    name_scopes metadata: the enclosing modules, outermost first, then the op)."""
    import ast

    import onnx

    scopes = set()
    for node in onnx.load(str(path)).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        names = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        scopes.update(n for n in names[:-1] if n)
    return scopes


@pytest.mark.parametrize("kind", ["sparse-top2", "sparse-first-layer", "bam-ekv-soft", "olmo2-bam-ekv"])
def test_graph_stops_after_the_last_router(exports: dict[str, tuple[Path, Path]], kind: str) -> None:
    import onnx

    _, out = exports[kind]
    last = max(int(name.split(".")[1][1:]) for name in EXPECTED_ROUTERS[kind])
    scopes = module_scopes(out / "model.onnx")
    assert any(s.startswith(f"model.model.layers.{last}.") for s in scopes)  # the metadata is there
    after = [
        s
        for s in scopes
        if s.startswith(
            ("model.lm_head", "model.model.norm", f"model.model.layers.{last}.block_sparse_moe.experts")
        )
        or (s.startswith("model.model.layers.") and int(s.split(".")[3]) > last)
    ]
    assert after == []
    # Exporter-independent: the only [vocab, hidden] tensor is the embedding (no LM head weight).
    shapes = [sorted(t.dims) for t in onnx.load(str(out / "model.onnx")).graph.initializer]
    assert shapes.count(sorted([BASE["vocab_size"], BASE["hidden_size"]])) == 1


def test_traceable_swap_is_exact_and_undone() -> None:
    from moelab.export.traceable import TraceableExperts, traceable
    from moelab.models.ffn import Experts

    torch.manual_seed(0)
    model = MoELabForCausalLM(ModelConfig(**{**BASE, **KINDS["bam-ekv-soft"]})).eval()
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        want = model(ids).logits
        with traceable(model):
            assert isinstance(model.model.layers[0].block_sparse_moe.experts, TraceableExperts)
            assert "_stacked" in vars(model.model.layers[0].self_attn)
            got = model(ids).logits
        assert type(model.model.layers[0].block_sparse_moe.experts) is Experts
        assert "_stacked" not in vars(model.model.layers[0].self_attn)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(ids).logits, want, atol=0, rtol=0)


def test_manifest_describes_routers_and_tokenizer(exports: dict[str, tuple[Path, Path]]) -> None:
    ckpt, out = exports["bam-skv-top1"]
    m = json.loads((out / "routing.json").read_text())
    assert m["model_type"] == "moelab" and m["method"] == "bam-skv"
    assert m["max_context"] == 64 and m["vocab_size"] == 256 and m["num_layers"] == 2
    assert m["source_checkpoint"] == str(ckpt.resolve())
    assert m["tokenizer"] == {"kind": "byte-level", "file": "moelab_tokenizer.json", "vocab_size": 256}
    assert (out / "moelab_tokenizer.json").is_file()
    attn = [r for r in m["routers"] if r["kind"] == "attn"]
    ffn = [r for r in m["routers"] if r["kind"] == "ffn"]
    assert [r["top_k"] for r in attn] == [1] and [r["top_k"] for r in ffn] == [1]
    assert all(r["num_experts"] == 4 for r in m["routers"])
    assert {o["name"]: o["shape"] for o in m["outputs"]}["router_probs.L1.ffn"] == ["batch", "seq", 4]
    assert json.loads((exports["dense"][1] / "routing.json").read_text())["method"] == "dense"


def test_export_verifies_and_is_atomic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_ckpt(tmp_path, "sparse-top2")
    out = tmp_path / "out"
    assert export(ckpt, out) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    # An existing --out is refused with one line and left untouched.
    before = sorted(p.name for p in out.iterdir())
    assert export(ckpt, out) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_hf_tokenizer_is_copied(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(300)}
    vocab["[UNK]"] = 300
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ckpt = make_ckpt(tmp_path, "dense", vocab_size=301)
    tok.save(str(ckpt / "tokenizer.json"))
    (ckpt / "tokenizer_config.json").write_text("{}")
    out = tmp_path / "onnx"
    assert export(ckpt, out, "--no-verify") == 0
    m = check_export(out)
    assert m["tokenizer"] == {"kind": "hf", "file": "tokenizer.json", "vocab_size": 301}
    assert tokenizers.Tokenizer.from_file(str(out / "tokenizer.json")).encode("w3 w7").ids == [3, 7]
    assert (out / "tokenizer_config.json").is_file()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("moelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_tokenizer_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = make_ckpt(tmp_path, "dense", vocab_size=300)
    assert export(ckpt, tmp_path / "out") == 1
    assert "no tokenizer.json" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_bad_exports_are_one_clear_message(exports: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(exports["sparse-top2"][1], corrupt)
    (corrupt / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(CheckpointError, match=r"model\.onnx: not a readable ONNX model"):
        check_export(corrupt)
    # The dense model's graph under the MoE's manifest: the router outputs are missing.
    mismatched = tmp_path / "mismatched"
    shutil.copytree(exports["sparse-top2"][1], mismatched)
    shutil.copyfile(exports["dense"][1] / "model.onnx", mismatched / "model.onnx")
    with pytest.raises(CheckpointError, match=r"outputs do not match routing\.json"):
        check_export(mismatched)
    no_tok = tmp_path / "no_tok"
    shutil.copytree(exports["sparse-top2"][1], no_tok)
    (no_tok / "moelab_tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer file missing"):
        check_export(no_tok)


def test_hf_format_writes_mixtral_when_it_can(tmp_path: Path) -> None:
    ckpt = make_ckpt(tmp_path, "sparse-top2")
    out = tmp_path / "hf"
    assert main(["export", "--ckpt", str(ckpt), "--format", "hf", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        np.testing.assert_allclose(load_model(out)(ids).logits, load_model(ckpt)(ids).logits, atol=1e-5)
