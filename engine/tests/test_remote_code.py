"""DESIGN §3: every output loads in plain transformers, MoE Lab not installed.

Each method's output (and a training checkpoint, and `export --format hf`) is loaded in a child
process where `import moelab` fails, by AutoModelForCausalLM: model_type moelab through the
checkpoint's generated modeling_moelab.py (trust_remote_code), Mixtral-compatible ones natively.
The child's logits and router logits must equal moelab.load_model's here, and greedy generate()
must give the same tokens with and without the KV cache and as an argmax loop by hand; what
transformers saves back (save_pretrained) must load in MoE Lab as the same model.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_tiny import FAMILY_FIELDS, make_hf, save_hf

from moelab.export.hf_export import export_hf
from moelab.io.checkpoint import load_model, save_model
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.models.config import REMOTE_CODE_FILE, ModelConfig, MoEConfig
from moelab.models.kv_cache import KVCache
from moelab.models.model import MoELabForCausalLM
from moelab.remote_code.bundle import bundle

pytest.importorskip("transformers")

IDS = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(3))
NEW_TOKENS = 6

# Runs in the child: moelab blocked, cwd outside the repository, no PYTHONPATH. One child loads
# every checkpoint (argv: ids file, then checkpoint / result file / trust_remote_code triples):
# importing transformers' generation stack dominates its run time.
CHILD = r"""
import importlib.abc, sys, traceback

class BlockMoELab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "moelab" or name.startswith("moelab."):
            raise ImportError("moelab is blocked in this test")
        return None

sys.meta_path.insert(0, BlockMoELab())
try:
    import moelab  # noqa: F401
    raise SystemExit("moelab is importable in the child")
except ImportError:
    pass

import torch
import transformers

ids = torch.load(sys.argv[1])
args = sys.argv[2:]
for ckpt, out_file, remote in zip(args[0::3], args[1::3], args[2::3]):
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=remote == "1").eval()
        with torch.no_grad():
            out = model(input_ids=ids, output_router_logits=True)
            kwargs = dict(max_new_tokens=__NEW__, do_sample=False, eos_token_id=None, pad_token_id=0)
            cached = model.generate(ids, use_cache=True, **kwargs)
            uncached = model.generate(ids, use_cache=False, **kwargs)
            seq = ids
            for _ in range(__NEW__):
                nxt = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        model.save_pretrained(out_file + ".saved")
        result = {"class": type(model).__name__, "module": type(model).__module__, "logits": out.logits,
                  "router_logits": [r.reshape(-1, r.shape[-1]) for r in out.router_logits],
                  "cached": cached, "uncached": uncached, "manual": seq}
    except Exception:
        result = {"error": traceback.format_exc()}
    torch.save(result, out_file)
""".replace("__NEW__", str(NEW_TOKENS))


def load_in_plain_transformers(ckpts: dict[str, Path], work: Path) -> dict[str, dict]:
    """Per name, what the child computed from that checkpoint (or its traceback under "error")."""
    work.mkdir(parents=True, exist_ok=True)
    torch.save(IDS, work / "ids.pt")
    args = []
    for name, ckpt in ckpts.items():
        remote = json.loads((ckpt / "config.json").read_text())["model_type"] == "moelab"
        args += [str(ckpt), str(work / f"{name}.pt"), "1" if remote else "0"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(work / "hf_modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(work / "ids.pt"), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: {**torch.load(work / f"{name}.pt"), "saved": work / f"{name}.pt.saved"} for name in ckpts}


def check_same_model(ckpt: Path, got: dict, model_type: str) -> None:
    assert "error" not in got, got.get("error")
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == model_type
    if model_type == "moelab":
        assert (ckpt / REMOTE_CODE_FILE).read_text() == bundle()  # regenerated from the current sources
    assert got["class"] == ("MoELabHFForCausalLM" if model_type == "moelab" else "MixtralForCausalLM")
    if model_type == "moelab":
        assert got["module"].startswith("transformers_modules.")
    ours = load_model(ckpt)
    with torch.no_grad():
        ref = ours(IDS)
    torch.testing.assert_close(got["logits"], ref.logits, atol=1e-4, rtol=0)
    # What transformers saves back (save_pretrained) is a checkpoint MoE Lab reads as the same model.
    torch.testing.assert_close(load_model(got["saved"])(IDS).logits, ref.logits, atol=1e-4, rtol=0)
    assert len(got["router_logits"]) == len(ref.router_logits) > 0
    for theirs, r in zip(got["router_logits"], ref.router_logits, strict=True):
        torch.testing.assert_close(theirs, r.logits, atol=1e-4, rtol=0)
    assert got["cached"].shape == (IDS.shape[0], IDS.shape[1] + NEW_TOKENS)
    if ours.config.moe is not None and ours.config.moe.capacity_factor > 0:
        # Capacity drops depend on which tokens share a forward pass: decoding with a cache
        # computes another function by design, so only the uncached paths must agree.
        assert torch.equal(got["uncached"], got["manual"])
        return
    assert torch.equal(got["cached"], got["uncached"])
    assert torch.equal(got["cached"], got["manual"])
    # The engine's own cache (the code the bundle runs): prefill, one token, then a chunk of three.
    seq, cache = got["manual"], KVCache()
    with torch.no_grad():
        parts = [ours(seq[:, t0:t1], cache).logits for t0, t1 in ((0, 5), (5, 6), (6, 9), (9, seq.shape[1]))]
        torch.testing.assert_close(torch.cat(parts, dim=1), ours(seq).logits, atol=1e-4, rtol=0)


CASES = {
    "sparse-every-other": (dict(method="sparse", num_experts=3, moe_layers="every-other"), "llama", "moelab"),
    "btx-mixtral": (dict(method="btx", top_k=2), "llama", "mixtral"),
    "bam-ekv-soft": (dict(method="bam-ekv", attn_top_k=0), "llama", "moelab"),
    "bam-skv-top2": (dict(method="bam-skv", attn_top_k=2, top_k=1), "llama", "moelab"),
    "upit-lora": (dict(method="upit", lora_rank=4, num_experts=3), "llama", "moelab"),
    "btx-qwen2": (dict(method="btx", top_k=2), "qwen2", "moelab"),
    # The families' windows, q/k norms, post norms, soft-caps and Gemma scalings, cached too (the
    # prompt and its continuation outgrow the window of 5).
    "btx-mistral-window": (dict(method="btx", top_k=2), "mistral", "mixtral"),
    "bam-ekv-qwen3": (dict(method="bam-ekv", attn_top_k=1), "qwen3", "moelab"),
    "bam-skv-olmo2": (dict(method="bam-skv", attn_top_k=0), "olmo2", "moelab"),
    "btx-gemma2": (dict(method="btx", top_k=1), "gemma2", "moelab"),
    "bam-ekv-gemma3": (dict(method="bam-ekv", attn_top_k=2), "gemma3_text", "moelab"),
    # save_model (training checkpoints), then `export --format hf`: a parallel-block, tied-embedding
    # LoRA MoE on some layers; an all-layer MoE with expert capacity, which Mixtral (dropless) cannot be.
    "train-export-parallel-lora": (
        None,
        dict(
            parallel_block=True,
            tie_word_embeddings=True,
            moe=MoEConfig(num_experts=3, top_k=2, moe_layers=[1, 2], lora_rank=4, method="upit"),
        ),
        "moelab",
    ),
    "train-export-capacity": (
        None,
        dict(
            moe=MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1, 2], capacity_factor=0.75, method="sparse")
        ),
        "moelab",
    ),
}


def _upcycled(root: Path, name: str, opts: dict, family: str) -> Path:
    experts = [root / f"{family}{i}" for i in range(3)]
    if opts["method"] == "sparse":
        experts = []
    elif opts["method"] == "upit":
        experts = experts[1:]  # two "checkpoints of one run"; the third expert is their merged child
    return upcycle(UpcycleOptions(seed=root / f"{family}0", experts=experts, out=root / name, **opts))


def _trained_and_exported(root: Path, name: str, fields: dict) -> Path:
    cfg = ModelConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        model_type="moelab",
        **fields,
    )
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    with torch.no_grad():
        for p_name, p in model.named_parameters():
            if "lora_b" in p_name:
                p.normal_(std=0.05)  # B = 0 would make every expert the shared FFN
            if p_name.endswith("gate.weight"):
                p.normal_(std=1.0)  # spread the routing, so that capacity drops happen
    ckpt, out = root / f"{name}-ckpt", root / name
    ckpt.mkdir()
    save_model(model, ckpt)
    assert (ckpt / REMOTE_CODE_FILE).read_text() == bundle()
    out.mkdir()
    assert export_hf(ckpt, out) == "moelab"
    return out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every case's checkpoint, and what plain transformers computed from it in one child."""
    root = tmp_path_factory.mktemp("remote")
    for family in {family for opts, family, _ in CASES.values() if opts}:
        for i in range(3):  # experts that differ, so the routing matters
            save_hf(make_hf(family, seed=10 + i, **FAMILY_FIELDS.get(family, {})), root / f"{family}{i}")
    ckpts = {
        name: _upcycled(root, name, opts, family) if opts else _trained_and_exported(root, name, family)
        for name, (opts, family, _) in CASES.items()
    }
    return ckpts, load_in_plain_transformers(ckpts, root / "child")


@pytest.mark.parametrize("case", list(CASES))
def test_output_loads_in_plain_transformers(loaded, case):
    ckpts, results = loaded
    check_same_model(ckpts[case], results[case], CASES[case][2])


def test_bundle_is_self_contained_python():
    """The bundle compiles, defines the two auto_map classes, and imports only torch, transformers
    and the standard library (so models/ must keep to those and moelab.models / moelab.errors)."""
    text = bundle()
    tree = ast.parse(text)
    compile(tree, REMOTE_CODE_FILE, "exec")
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert roots - {"torch", "transformers", "__future__"} <= set(sys.stdlib_module_names), roots
    for cls in (
        ModelConfig(model_type="moelab", moe=MoEConfig(moe_layers=[0])).to_hf_dict()["auto_map"].values()
    ):
        assert f"class {cls.split('.')[1]}(" in text
