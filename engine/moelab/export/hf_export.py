"""`--format hf`: a plain Hugging Face directory (config.json + safetensors + tokenizer files).

A `moelab` checkpoint that Mixtral can express exactly is written as model_type mixtral, so
transformers and the serving stacks load it; the rest keep model_type moelab. Expert capacity is
one thing Mixtral cannot express (transformers' Mixtral is dropless): such a model stays moelab.
A Mixtral gets the router jitter as `router_jitter_noise` and, when the checkpoint records the α
it trained with, `router_aux_loss_coef` = α·L/k (models/aux_losses.py: mixtral_aux_loss_coef).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import torch

from moelab.io import dcp_file
from moelab.io.checkpoint import load_config, load_model, read_config_dict, save_tensors
from moelab.io.seed_files import carry_seed_files
from moelab.models.config import ModelConfig


def export_hf(ckpt: Path, out: Path) -> str:
    """Writes into the existing directory `out`; returns the model_type written."""
    ckpt = Path(ckpt)
    tensors: Iterable[tuple[str, torch.Tensor]]
    if dcp_file.is_dcp(ckpt):
        # A sharded training checkpoint is streamed tensor by tensor, never whole in memory: a
        # 30B MoE is exported on a machine that cannot hold it.
        cfg, tensors = load_config(ckpt), dcp_file.iter_model_tensors(ckpt)
    else:
        model = load_model(ckpt)
        cfg, tensors = model.config, model.state_dict().items()
    cfg = _output_config(cfg)
    meta = read_config_dict(ckpt).get("moelab")
    save_tensors(cfg, tensors, Path(out), meta if isinstance(meta, dict) else None)
    carry_seed_files(ckpt, Path(out))
    return cfg.model_type


def _output_config(cfg: ModelConfig) -> ModelConfig:
    """The model_type written: a native MoE type where it computes the same (models/config.py)."""
    native = cfg.native_moe_type()
    return dataclasses.replace(cfg, model_type=native) if cfg.model_type == "moelab" and native else cfg
