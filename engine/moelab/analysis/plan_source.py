"""What `moelab plan` plans for: the model config and the run's settings, from a checkpoint directory's
config.json (a directory holding only config.json will do), a model config.json, or a train config.

No weight is read. A train config gives its model (from `init`'s config.json, or its `model`, or
the default seed) and its defaults: sequence length, micro-batch per rank (its batch_size is the
global batch, split over the ranks), compute dtype, activation checkpointing and gradient accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moelab.errors import ConfigError
from moelab.io.checkpoint import load_config
from moelab.io.json_file import read_json
from moelab.models.config import ModelConfig


@dataclass
class PlanSource:
    model: ModelConfig
    what: str  # the file the model config came from, for the report
    defaults: dict[str, Any] = field(default_factory=dict)  # Setup fields the source decides


def from_checkpoint(ckpt: Path) -> PlanSource:
    return PlanSource(load_config(ckpt), str(Path(ckpt) / "config.json"))


def from_config_file(path: Path, gpus: int) -> PlanSource:
    """A model config.json (it has a model_type) or a train config (anything else)."""
    raw = read_json(path, ConfigError, "missing")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a JSON object")
    if "model_type" in raw:
        return PlanSource(ModelConfig.from_hf_dict(raw, source=str(path)), str(path))
    from moelab.train.config import default_seed_model, load_train_config

    cfg = load_train_config(path)
    if cfg.batch_size % gpus:
        raise ConfigError(f"{path}: batch_size {cfg.batch_size} does not split over --gpus {gpus}")
    defaults: dict[str, Any] = {
        "seq": cfg.data.seq_len,
        "batch": cfg.batch_size // gpus,
        "activation_checkpointing": cfg.activation_checkpointing,
        "grad_accum": cfg.grad_accum,
        # auto computes in bf16 on CUDA, which is what a plan for GPUs is for.
        "dtype": "fp32" if cfg.mixed_precision == "fp32" else "bf16",
    }
    if cfg.init:
        return PlanSource(load_config(Path(cfg.init)), str(Path(cfg.init) / "config.json"), defaults)
    return PlanSource(cfg.model or default_seed_model(), f"{path} (model)", defaults)
