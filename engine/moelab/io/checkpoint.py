"""Checkpoint directories in Hugging Face layout: config.json + safetensors (single or sharded)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from moelab.errors import CheckpointError, MoELabError
from moelab.io import dcp_file, layout
from moelab.io.fused import split_fused
from moelab.io.json_file import read_json
from moelab.io.safetensors_file import INDEX_NAME, SINGLE_NAME, TensorReader
from moelab.models.aux_losses import mixtral_aux_loss_coef
from moelab.models.config import ModelConfig
from moelab.models.model import MoELabForCausalLM, meta_model
from moelab.models.rope import RotaryEmbedding
from moelab.remote_code.bundle import write_remote_code

DEFAULT_SHARD_BYTES = 2 * 1024**3


def read_config_dict(ckpt: Path) -> dict[str, Any]:
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: no such directory")
    path = ckpt / "config.json"
    d = read_json(path, CheckpointError, "missing (not a Hugging Face checkpoint directory?)")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return d


def load_config(ckpt: Path) -> ModelConfig:
    return ModelConfig.from_hf_dict(read_config_dict(ckpt), source=str(Path(ckpt) / "config.json"))


def load_model(
    ckpt: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> MoELabForCausalLM:
    """Any checkpoint MoE Lab reads or writes: a dense family (config.FAMILIES), Mixtral, or model_type moelab."""
    ckpt = Path(ckpt)
    cfg = load_config(ckpt)
    if dcp_file.is_dcp(ckpt):  # written by FSDP training: stacked engine names, nothing fused
        return model_from_tensors(cfg, dict(dcp_file.iter_model_tensors(ckpt)), str(ckpt), dtype, device)
    with TensorReader(ckpt) as reader:
        tensors = split_fused(dict(reader.items()), cfg, ckpt)
    return model_from_tensors(cfg, tensors, str(ckpt), dtype, device)


def model_from_tensors(
    cfg: ModelConfig,
    tensors: dict[str, torch.Tensor],
    where: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MoELabForCausalLM:
    """The model `cfg` describes with weights {disk name: tensor} (a checkpoint's, or computed ones;
    fused projections already split); `where` names them in errors."""
    model = meta_model(cfg)
    state = layout.from_disk(tensors)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = model.state_dict()
    missing = [
        k for k in expected if k not in state and not (cfg.tie_word_embeddings and k == "lm_head.weight")
    ]
    if missing:
        raise CheckpointError(
            f"{where}: tensor {_disk_hint(missing[0])!r} is missing ({len(missing)} missing)"
        )
    for k, t in state.items():
        if k in expected and tuple(t.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{where}: tensor {k!r} has shape {list(t.shape)}, config.json implies {list(expected[k].shape)}"
            )
    # A tensor the model has no place for means config.json describes another architecture:
    # dropping it silently would compute something else (old checkpoints' rotary buffers aside).
    unused = [k for k in state if k not in expected and not k.endswith("rotary_emb.inv_freq")]
    if unused:
        raise CheckpointError(
            f"{where}: tensor {unused[0]!r} is not part of the model config.json describes ({len(unused)} unused)"
        )
    state = {k: v for k, v in state.items() if k in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    compute_rotary_frequencies(model, torch.device("cpu"))
    return model.to(device=device, dtype=dtype).eval()


def compute_rotary_frequencies(model: MoELabForCausalLM, device: torch.device) -> None:
    """Non-persistent buffers (rotary frequencies) are in no checkpoint: a model built on meta gets
    them computed for real, on `device`."""
    for m in model.modules():
        if isinstance(m, RotaryEmbedding):
            m.inv_freq = m.frequencies().to(device)


def _disk_hint(internal: str) -> str:
    try:
        return layout.disk_name_of(internal, 0)
    except KeyError:
        return internal


class ShardedWriter:
    """Writes tensors into shards of at most `max_shard_bytes` as they arrive, so peak memory is one
    shard; `close()` names the shards `model-0000i-of-0000n.safetensors` and writes the index
    (or a single `model.safetensors`)."""

    def __init__(
        self, out: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None
    ) -> None:
        self.out = Path(out)
        self.max = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max:
            self._flush()
        self._pending[name] = tensor.detach().contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def add_all(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in tensors:
            self.add(name, t)

    def _flush(self) -> None:
        path = self.out / f"shard-{len(self._shards):05d}.tmp"
        save_file(self._pending, str(path), metadata=self.metadata)
        self._shards.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> None:
        if self._pending or not self._shards:
            self._flush()
        n = len(self._shards)
        if n == 1:
            self._shards[0][0].rename(self.out / SINGLE_NAME)
            return
        weight_map = {}
        for i, (path, names) in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            path.rename(self.out / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.out / INDEX_NAME).write_text(json.dumps(index, indent=2))


def write_config(out: Path, cfg: ModelConfig, moelab_meta: dict[str, Any] | None = None) -> None:
    d = cfg.to_hf_dict()
    if moelab_meta:
        d["moelab"] = moelab_meta
    lb = (moelab_meta or {}).get("load_balancing")
    alpha = lb.get("ffn") if isinstance(lb, dict) else None
    if cfg.model_type in ("mixtral", "qwen3_moe") and cfg.moe is not None and isinstance(alpha, int | float):
        # The α this MoE trained with, as the coefficient that balances as strongly in transformers.
        d["router_aux_loss_coef"] = mixtral_aux_loss_coef(
            float(alpha), cfg.moe.top_k, len(cfg.moe.moe_layers)
        )
    (Path(out) / "config.json").write_text(json.dumps(d, indent=2) + "\n")
    if cfg.model_type == "moelab":
        write_remote_code(out)


def save_model(
    model: MoELabForCausalLM,
    out: Path,
    moelab_meta: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Writes config.json and the weights into an existing directory `out` (callers make it atomic).
    `state` replaces `model.state_dict()` where the model's own is sharded (FSDP gathers it first)."""
    state = model.state_dict() if state is None else state
    save_tensors(model.config, state.items(), out, moelab_meta, max_shard_bytes)


def save_tensors(
    cfg: ModelConfig,
    state: Iterable[tuple[str, torch.Tensor]],
    out: Path,
    moelab_meta: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> None:
    """save_model's writer over (engine name, tensor) pairs as they come: a checkpoint read one
    tensor at a time (io/dcp_file.py) is written without ever being whole in memory."""
    out = Path(out)
    if not out.is_dir():
        raise MoELabError(f"{out}: not a directory")
    writer = ShardedWriter(out, max_shard_bytes)
    native = cfg.model_type
    for k, v in state:
        if cfg.tie_word_embeddings and k == "lm_head.weight":
            continue
        for name, t in layout.to_disk({k: v.detach().cpu()}).items():
            writer.add(layout.native_name(name, native), t)
    writer.close()
    write_config(out, cfg, moelab_meta)
