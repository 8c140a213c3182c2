"""`--format hf`: a plain Hugging Face directory (config.json + safetensors + tokenizer files).

A `moelab` checkpoint that Mixtral can express exactly is written as model_type mixtral, so
transformers and the serving stacks load it; the rest keep model_type moelab. Expert capacity is
one thing Mixtral cannot express (transformers' Mixtral is dropless): such a model stays moelab.
A Mixtral gets the router jitter as `router_jitter_noise` and, when the checkpoint records the α
it trained with, `router_aux_loss_coef` = α·L/k (models/aux_losses.py: mixtral_aux_loss_coef).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from moelab.io.checkpoint import load_model, read_config_dict, save_model
from moelab.io.seed_files import carry_seed_files


def export_hf(ckpt: Path, out: Path) -> str:
    """Writes into the existing directory `out`; returns the model_type written."""
    model = load_model(ckpt)
    cfg = model.config
    native = cfg.native_moe_type()
    if cfg.model_type == "moelab" and native:
        model.config = dataclasses.replace(cfg, model_type=native)
    meta = read_config_dict(ckpt).get("moelab")
    save_model(model, out, moelab_meta=meta if isinstance(meta, dict) else None)
    carry_seed_files(Path(ckpt), Path(out))
    return model.config.model_type
