"""Training options the papers and peers use: freezing parts of the model, MoE options of a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from moelab.errors import ConfigError
from moelab.io.checkpoint import load_model, save_model
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM
from moelab.train.checkpointing import latest_checkpoint
from moelab.train.config import TrainConfig
from moelab.train.freeze import apply_freeze, groups_of
from moelab.train.trainer import train

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
TINY_DATA = {"seq_len": 32, "synthetic_train_chars": 20000, "synthetic_eval_chars": 4000}


def _init(tmp: Path, moe: MoEConfig, name: str = "init") -> str:
    out = tmp / name
    out.mkdir()
    torch.manual_seed(0)
    save_model(MoELabForCausalLM(ModelConfig(**TINY_MODEL, model_type="moelab", moe=moe)), out)
    return str(out)


def _config(tmp: Path, run_id: str, init: str, **kw) -> TrainConfig:
    from moelab.train import jsoncfg

    d = {
        "run_id": run_id,
        "out": str(tmp / "runs"),
        "stage": "moe",
        "init": init,
        "steps": 6,
        "batch_size": 4,
        "log_every": 3,
        "eval_every": 3,
        "ckpt_every": 3,
        "eval_batches": 1,
        "warmup_steps": 1,
        "data": TINY_DATA,
        "threads": 1,
        "device": "cpu",
        **kw,
    }
    return jsoncfg.from_dict(TrainConfig, d)


# BAM shared-KV with one dense layer: every kind of parameter the groups tell apart.
BAM_SKV = MoEConfig(num_experts=3, top_k=2, moe_layers=[1], attn_experts=True, shared_kv=True)


def test_freeze_groups_name_every_part():
    model = MoELabForCausalLM(ModelConfig(**TINY_MODEL, model_type="moelab", moe=BAM_SKV))
    got = {n: groups_of(n) for n, _ in model.named_parameters()}
    expect = {
        "model.embed_tokens.weight": {"backbone"},
        "lm_head.weight": {"backbone"},
        "model.norm.weight": {"backbone"},
        "model.layers.0.input_layernorm.weight": {"backbone"},
        "model.layers.0.self_attn.q_proj.weight": {"backbone", "attention"},
        "model.layers.0.mlp.gate_proj.weight": {"backbone"},
        "model.layers.1.self_attn.router.weight": {"routers"},
        "model.layers.1.self_attn.experts.q_proj": {"attention"},
        "model.layers.1.self_attn.experts.o_proj": {"attention"},
        "model.layers.1.self_attn.k_proj.weight": {"backbone", "attention"},  # shared K: no expert's
        "model.layers.1.post_attention_layernorm.weight": {"backbone"},
        "model.layers.1.block_sparse_moe.gate.weight": {"routers"},
        "model.layers.1.block_sparse_moe.experts.w1": {"experts"},
    }
    for name, groups in expect.items():
        assert got[name] == groups, name
    lora = MoELabForCausalLM(
        ModelConfig(
            **TINY_MODEL, model_type="moelab", moe=MoEConfig(num_experts=3, moe_layers=[0], lora_rank=2)
        )
    )
    names = {n: groups_of(n) for n, _ in lora.named_parameters()}
    assert names["model.layers.0.block_sparse_moe.experts.lora_a_w1"] == {"experts"}
    # The dense FFN under UpIT's LoRA experts is the backbone: freeze backbone = train the deltas only.
    assert names["model.layers.0.block_sparse_moe.shared_mlp.down_proj.weight"] == {"backbone"}


def test_freeze_errors_are_one_line():
    model = MoELabForCausalLM(ModelConfig(**TINY_MODEL))
    with pytest.raises(ConfigError, match="^freeze: backbone leaves no parameter of this model to train$"):
        apply_freeze(model, ["backbone"])
    with pytest.raises(ConfigError, match=r"freeze\[0\]: expected one of 'backbone'"):
        _config(Path("."), "x", "", freeze=["expert"])


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_model(ckpt).state_dict()


@pytest.mark.parametrize("freeze", [["backbone", "routers"], ["attention", "experts"]])
def test_frozen_tensors_stay_bit_identical(tmp_path, freeze):
    init = _init(tmp_path, BAM_SKV)
    res = train(_config(tmp_path, "f", init, freeze=freeze), quiet=True)
    before, after = _weights(Path(init)), _weights(res.checkpoint)
    frozen = {n for n in before if groups_of(n) & set(freeze)}
    assert frozen and len(frozen) < len(before)
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (name in frozen), f"{name}: {'changed' if not same else 'not trained'}"
    run = tmp_path / "runs" / "f"
    info = json.loads((run / "run.json").read_text())
    model = MoELabForCausalLM(ModelConfig(**TINY_MODEL, model_type="moelab", moe=BAM_SKV))
    n_frozen = sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    assert info["config"]["freeze"] == freeze
    assert info["freeze"] == {
        "groups": sorted(freeze, key=["backbone", "experts", "attention", "routers"].index),
        "frozen_params": n_frozen,
        "trainable_params": model.num_parameters() - n_frozen,
    }
    # Frozen parameters are not in the optimizer: no state for them.
    opt = torch.load(res.checkpoint / "optimizer.pt", weights_only=True)
    assert sum(len(g["params"]) for g in opt["param_groups"]) == len(before) - len(frozen)


def test_frozen_run_resumes_to_the_same_weights(tmp_path):
    init = _init(tmp_path, BAM_SKV)
    ref = train(_config(tmp_path, "ref", init, freeze=["backbone"]), quiet=True)
    run = tmp_path / "runs" / "cut"
    train(_config(tmp_path, "cut", init, freeze=["backbone"]), quiet=True)
    # As if killed after step 3: the final checkpoint lost, the run still marked running.
    shutil.rmtree(run / "checkpoints" / "step-000006")
    (run / "checkpoints" / "latest").write_text("step-000003\n")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    train(_config(tmp_path, "cut", init, freeze=["backbone"]), quiet=True)
    a, b = _weights(ref.checkpoint), _weights(latest_checkpoint(run / "checkpoints"))
    assert all(torch.equal(a[n], b[n]) for n in a)


# ---- MoE options for a training run ---------------------------------------------------------------------


def test_moe_run_changes_capacity_and_jitter_and_records_alpha(tmp_path):
    """A Mixtral trained with a capacity becomes model_type moelab; the α it trained with is in
    config.json's moelab record and, for a Mixtral, mapped to router_aux_loss_coef (export keeps it)."""
    import transformers

    from moelab.export.hf_export import export_hf
    from moelab.models.aux_losses import mixtral_aux_loss_coef

    mixtral = MoEConfig(num_experts=4, top_k=1, moe_layers=[0, 1])
    init = tmp_path / "mixtral"
    init.mkdir()
    torch.manual_seed(0)
    save_model(MoELabForCausalLM(ModelConfig(**TINY_MODEL, model_type="mixtral", moe=mixtral)), init)
    lb = {"ffn": 0.03, "attn": 0.0}
    res = train(
        _config(tmp_path, "plain", str(init), steps=2, load_balancing=lb, router_jitter_noise=0.1), quiet=True
    )
    cfg = json.loads((res.checkpoint / "config.json").read_text())
    assert cfg["model_type"] == "mixtral" and cfg["router_jitter_noise"] == 0.1
    assert cfg["moelab"]["load_balancing"] == lb
    assert (
        cfg["router_aux_loss_coef"] == pytest.approx(mixtral_aux_loss_coef(0.03, 1, 2)) == pytest.approx(0.06)
    )
    out = tmp_path / "hf"
    out.mkdir()
    assert export_hf(res.checkpoint, out) == "mixtral"
    hf_cfg = transformers.AutoConfig.from_pretrained(out)
    assert hf_cfg.router_aux_loss_coef == pytest.approx(0.06) and hf_cfg.router_jitter_noise == 0.1

    res = train(_config(tmp_path, "capped", str(init), steps=2, capacity_factor=0.5), quiet=True)
    cfg = json.loads((res.checkpoint / "config.json").read_text())
    assert cfg["model_type"] == "moelab" and cfg["moe"]["capacity_factor"] == 0.5
    assert (
        json.loads((tmp_path / "runs" / "capped" / "run.json").read_text())["config"]["capacity_factor"]
        == 0.5
    )


def test_capacity_on_a_dense_run_is_refused(tmp_path):
    cfg = _config(tmp_path, "d", "", stage="dense", model=TINY_MODEL, capacity_factor=1.0)
    with pytest.raises(ConfigError, match="^capacity_factor: the model has no MoE layers"):
        train(cfg, quiet=True)


def test_experiment_stages_carry_the_options(tmp_path):
    from moelab.train import jsoncfg
    from moelab.train.experiment import ExperimentConfig
    from moelab.train.pipeline import Pipeline

    exp = jsoncfg.from_dict(
        ExperimentConfig,
        {
            "name": "e",
            "out": str(tmp_path / "runs"),
            "device": "cpu",
            "threads": 1,
            "data": TINY_DATA,
            "defaults": {
                "steps": 2,
                "batch_size": 4,
                "log_every": 1,
                "eval_every": 2,
                "ckpt_every": 2,
                "eval_batches": 1,
            },
            "stages": [
                {"kind": "dense", "model": {**TINY_MODEL, "num_hidden_layers": 4}},
                {
                    "kind": "upcycle",
                    "methods": ["sparse"],
                    "num_experts": 4,
                    "capacity_factor": 2.0,
                    "router_jitter_noise": 0.05,
                },
                {"kind": "moe", "capacity_factor": 1.5, "freeze": ["backbone"]},
            ],
        },
    )
    res = Pipeline(exp, quiet=True).run()
    assert res.status == "done", res.failures
    up = json.loads((res.checkpoints["upcycle-sparse"] / "config.json").read_text())["moe"]
    assert (up["moe_layers"], up["capacity_factor"], up["router_jitter_noise"]) == ([1, 3], 2.0, 0.05)
    moe = json.loads((res.checkpoints["sparse"] / "config.json").read_text())["moe"]
    assert (moe["capacity_factor"], moe["router_jitter_noise"]) == (1.5, 0.05)
    info = json.loads((tmp_path / "runs" / "e-moe-sparse" / "run.json").read_text())
    assert info["freeze"]["groups"] == ["backbone"] and info["freeze"]["frozen_params"] > 0
    assert json.loads((tmp_path / "runs" / "e-seed" / "run.json").read_text())["freeze"]["frozen_params"] == 0
