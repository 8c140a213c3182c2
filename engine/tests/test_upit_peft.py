"""UpIT from real LoRA fine-tuning: PEFT adapter directories as experts, checked against peft itself.

The peer is peft's own merged model (`PeftModel.from_pretrained(...).merge_and_unload()`) on
transformers' Llama: the MoE with its routers forced to expert e must compute adapter e's merged
model, and with identical adapters the MoE (ordinary top-2 routing) computes that model too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, save_hf

from moelab.cli import main
from moelab.errors import ConfigError
from moelab.io.checkpoint import load_model, model_from_tensors
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.methods.upit import dense_pool
from moelab.train.router_preopt import forced_expert

peft = pytest.importorskip("peft")

SEED = 7
IDS = input_ids(t=13)
FFN = ["gate_proj", "up_proj", "down_proj"]


def make_adapter(
    path: Path,
    seed: int,
    r: int = 4,
    alpha: float = 8,
    targets: list[str] | None = None,
    use_rslora: bool = False,
    **base: object,
) -> Path:
    model = make_hf("llama", seed=SEED, **base)
    cfg = peft.LoraConfig(
        r=r, lora_alpha=alpha, target_modules=targets or FFN, init_lora_weights=False, use_rslora=use_rslora
    )
    pm = peft.get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every factor random and non-zero, B included (LoRA training starts it at 0)
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(path)
    return path


def peft_merged_logits(adapter: Path) -> torch.Tensor:
    merged = peft.PeftModel.from_pretrained(make_hf("llama", seed=SEED), adapter).merge_and_unload()
    return hf_logits(merged.eval(), IDS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("peft")
    seed = save_hf(make_hf("llama", seed=SEED), root / "seed")
    # Different scales (alpha/r = 2, rsLoRA 3/sqrt(4)), and one adapting only some projections.
    adapters = [
        make_adapter(root / "a0", 1),
        make_adapter(root / "a1", 2, alpha=3, use_rslora=True),
        make_adapter(root / "a2", 3, targets=["up_proj", "down_proj"]),
    ]
    return seed, adapters


@torch.no_grad()
def _forced_logits(ckpt: Path, expert: int) -> torch.Tensor:
    model = load_model(ckpt)
    with forced_expert(model, expert):
        return model(IDS).logits.float()


def test_forced_expert_equals_peft_merged_model(setup, tmp_path):
    seed, adapters = setup
    out = upcycle(UpcycleOptions(method="upit", seed=seed, experts=adapters, out=tmp_path / "moe", top_k=2))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["moe"]["lora_rank"] == 4 and cfg["moelab"]["variant"] == "lora"
    assert [m["kind"] for m in cfg["moelab"]["members"]] == ["adapter"] * 3
    for e, a in enumerate(adapters):
        torch.testing.assert_close(_forced_logits(out, e), peft_merged_logits(a), atol=1e-4, rtol=0)
    # The adapters differ: forcing the other expert gives another model.
    assert (_forced_logits(out, 0) - peft_merged_logits(adapters[1])).abs().max() > 1e-2


def test_identical_adapters_equal_peft_merged_model_with_ordinary_routing(setup, tmp_path):
    seed, adapters = setup
    out = upcycle(
        UpcycleOptions(method="upit", seed=seed, experts=[adapters[0]] * 3, out=tmp_path / "moe", top_k=2)
    )
    moe = load_model(out)
    with torch.no_grad():
        ours = moe(IDS).logits.float()
    torch.testing.assert_close(ours, peft_merged_logits(adapters[0]), atol=1e-4, rtol=0)
    # Same scale for all: PEFT's factors are copied as they are.
    sd = moe.state_dict()
    from safetensors.torch import load_file

    peft_sd = load_file(adapters[0] / "adapter_model.safetensors")
    torch.testing.assert_close(
        sd["model.layers.1.block_sparse_moe.experts.lora_b_w2"][2],
        peft_sd["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"],
        atol=0,
        rtol=0,
    )


def test_adapters_expand_and_keep_the_seed(setup, tmp_path):
    seed, adapters = setup
    out = upcycle(
        UpcycleOptions(
            method="upit",
            seed=seed,
            experts=adapters[:2],
            out=tmp_path / "moe",
            num_experts=4,
            keep_seed=True,
            dare_drop=0.0,
        )
    )
    meta = json.loads((out / "config.json").read_text())["moelab"]
    assert [m["kind"] for m in meta["members"]] == ["adapter", "adapter", "seed"]
    assert len(meta["genealogy"]) == 1
    # The seed member is the seed: forcing it gives transformers' dense model.
    torch.testing.assert_close(
        _forced_logits(out, 2), hf_logits(make_hf("llama", seed=SEED), IDS), atol=1e-4, rtol=0
    )
    # The dense model router pre-optimization labels with, for an adapter member: peft's merged model.
    pool = dense_pool(meta)
    dense = model_from_tensors(pool.seed.cfg, pool.dense_state(1), "expert 1")
    with torch.no_grad():
        torch.testing.assert_close(
            dense(IDS).logits.float(), peft_merged_logits(adapters[1]), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("kind", ["attention", "ranks", "base", "lora_rank", "not_upit"])
def test_adapters_the_engine_cannot_express_are_refused(setup, tmp_path, kind, capsys):
    seed, adapters = setup
    experts = {
        "attention": [make_adapter(tmp_path / "q", 3, targets=["q_proj", "gate_proj"])],
        "ranks": [adapters[0], make_adapter(tmp_path / "r8", 3, r=8)],
        "base": [make_adapter(tmp_path / "wide", 3, intermediate_size=64)],
        "lora_rank": adapters[:2],
        "not_upit": adapters[:2],
    }[kind]
    args = [
        "upcycle",
        "--method",
        "btx" if kind == "not_upit" else "upit",
        "--seed",
        str(seed),
        *(x for e in experts for x in ("--expert", str(e))),
        "--out",
        str(tmp_path / "moe"),
        *(["--lora-rank", "2"] if kind == "lora_rank" else []),
    ]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert {
        "attention": "q_proj",
        "ranks": "different ranks",
        "base": "another base model",
        "lora_rank": "rank 4",
        "not_upit": "only --method upit",
    }[kind] in err
    assert not (tmp_path / "moe").exists()


def test_open_adapter_refuses_dora(setup, tmp_path):
    from moelab.io.peft_adapter import open_adapter

    _, adapters = setup
    bad = tmp_path / "dora"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes((adapters[0] / "adapter_model.safetensors").read_bytes())
    cfg = json.loads((adapters[0] / "adapter_config.json").read_text()) | {"use_dora": True}
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="DoRA"):
        open_adapter(bad)
