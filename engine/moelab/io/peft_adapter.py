"""PEFT LoRA adapter directories (adapter_config.json + adapter_model.safetensors, as `peft`'s
`save_pretrained` writes them), read as UpIT experts.

Only what the engine's LoRA experts can express is accepted: plain LoRA (no DoRA, no biases, no
per-module ranks or alphas, no extra trained modules) on the FFN projections gate_proj, up_proj
and down_proj of decoder layers. PEFT's Linear LoRA computes W·x + s·B·(A·x) with A = lora_A
[r, in], B = lora_B [out, r] and s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), so
the dense weight the adapter stands for is W + s·B·A. Anything else is refused with one line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moelab.errors import ConfigError
from moelab.io.json_file import read_json
from moelab.io.tensor_io import TensorLoc, locate_file

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_FFN_MODULE = re.compile(r"^model\.layers\.(?P<layer>\d+)\.mlp\.(?P<proj>gate_proj|up_proj|down_proj)$")
# adapter_config.json fields whose set, non-default value changes what the adapter computes in a
# way the engine's LoRA experts cannot: (the accepted value, what is refused).
_UNSUPPORTED = {
    "use_dora": (False, "DoRA"),
    "bias": ("none", "trained biases"),
    "lora_bias": (False, "a LoRA bias"),
    "fan_in_fan_out": (False, "fan_in_fan_out (Conv1D layers)"),
    "modules_to_save": (None, "fully trained modules (modules_to_save)"),
    "layer_replication": (None, "layer replication"),
    "trainable_token_indices": (None, "trainable tokens"),
    "target_parameters": (None, "LoRA on parameters (target_parameters)"),
    "use_qalora": (False, "QALoRA"),
}


@dataclass
class LoRAAdapter:
    """One adapter: rank, scale and where each adapted FFN weight's factors lie."""

    path: Path
    rank: int
    scale: float  # s in W + s·B·A
    # dense weight name (model.layers.{i}.mlp.{proj}.weight) -> (A [r, in], B [out, r])
    factors: dict[str, tuple[TensorLoc, TensorLoc]] = field(default_factory=dict)
    base_model: str = ""  # base_model_name_or_path, for the record only

    def layers(self) -> set[int]:
        return {int(n.split(".")[2]) for n in self.factors}


def is_adapter_dir(path: Path) -> bool:
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and not (path / "config.json").is_file()


def _config(path: Path) -> dict[str, Any]:
    cfg = read_json(path / CONFIG_NAME, ConfigError, "missing (not a PEFT adapter directory?)")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path / CONFIG_NAME}: not a JSON object")
    return cfg


def open_adapter(path: Path) -> LoRAAdapter:
    """Reads and validates one adapter directory (headers only; the factors stay on disk)."""
    path = Path(path)
    cfg = _config(path)
    where = f"{path}: PEFT adapter"
    if cfg.get("peft_type") != "LORA":
        raise ConfigError(f"{where} of type {cfg.get('peft_type')!r}: only LoRA adapters can be UpIT experts")
    for key, (default, what) in _UNSUPPORTED.items():
        if (value := cfg.get(key)) and value != default:
            raise ConfigError(
                f"{where} uses {what} ({key}={cfg.get(key)!r}); the engine's LoRA experts cannot express it"
            )
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ConfigError(
            f"{where} has per-module ranks or alphas (rank_pattern/alpha_pattern); "
            "the engine's LoRA experts share one rank and scale"
        )
    rank, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float):
        raise ConfigError(
            f"{where}: r must be a positive integer and lora_alpha a number (got {rank!r}, {alpha!r})"
        )
    scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(
            f"{where}: {WEIGHTS_NAME} is missing (adapters saved as .bin are not read; "
            "save with safe_serialization=True)"
        )
    pairs: dict[str, dict[str, TensorLoc]] = {}
    for key, loc in locate_file(weights).items():
        m = _KEY.match(key)
        if not m:
            raise ConfigError(
                f"{weights}: tensor {key!r} is not a LoRA factor of a linear layer; "
                "the engine's LoRA experts cannot express it"
            )
        ffn = _FFN_MODULE.match(m["module"])
        if not ffn:
            raise ConfigError(
                f"{where} adapts {m['module']}: UpIT's LoRA experts are deltas of the FFN "
                f"projections ({', '.join(FFN_PROJECTIONS)}) only"
            )
        pairs.setdefault(f"{m['module']}.weight", {})[m["ab"]] = loc
    if not pairs:
        raise ConfigError(f"{weights}: holds no LoRA factors")
    factors = {}
    for name, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ConfigError(
                f"{weights}: {name.removesuffix('.weight')} has lora_{next(iter(ab))} but not its pair"
            )
        a, b = ab["A"], ab["B"]
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ConfigError(
                f"{weights}: {name.removesuffix('.weight')} has factors of shapes {list(a.shape)} and "
                f"{list(b.shape)}, not rank r={rank} as adapter_config.json says (different ranks)"
            )
        factors[name] = (a, b)
    return LoRAAdapter(path, rank, float(scale), factors, str(cfg.get("base_model_name_or_path") or ""))
