"""routing.json: what an ONNX export computes, for the routing inspector (and any other reader).

{
  "format": "moelab-routing", "version": 1,
  "model": "model.onnx", "model_type": "moelab", "method": "bam-ekv",
  "source_checkpoint": "/abs/path", "max_context": 2048, "vocab_size": 256, "num_layers": 4,
  "input": {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
  "outputs": [{"name": "router_probs.L0.attn", "shape": ["batch", "seq", 4]}, ...],
                                   # a dense model (no routers): [{"name": "logits", ...}]
  "routers": [{"layer": 0, "kind": "attn", "output": "router_probs.L0.attn",
               "num_experts": 4, "top_k": 0}, ...],        # top_k 0 = soft mixture
  "router_probs": "softmax over experts of the router logits, before top-k; [batch, seq, experts]",
  "tokenizer": {"kind": "byte-level" | "hf", "file": "moelab_tokenizer.json" | "tokenizer.json",
                "vocab_size": 256},
  "opset": 23, "exporter": "torch 2.13.0 dynamo", "created": "2026-..Z"
}
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch

from moelab.data.tokenizer import TokenizerInfo
from moelab.errors import CheckpointError
from moelab.export.graph import LOGITS, RouterSpec
from moelab.export.onnx_export import INPUT, OPSET
from moelab.io.json_file import read_json
from moelab.models.config import ModelConfig

FORMAT = "moelab-routing"
VERSION = 1
MANIFEST = "routing.json"
MODEL_FILE = "model.onnx"
PROBS_DOC = "softmax over experts of the router logits, before top-k; [batch, seq, experts]"


def build(
    cfg: ModelConfig, routers: list[RouterSpec], tok: TokenizerInfo, source: Path, method: str = ""
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": MODEL_FILE,
        "model_type": cfg.model_type,
        "method": method or (cfg.moe.method if cfg.moe else "") or ("dense" if cfg.moe is None else ""),
        "source_checkpoint": str(Path(source).resolve()),
        "max_context": cfg.max_position_embeddings,
        "vocab_size": cfg.vocab_size,
        "num_layers": cfg.num_hidden_layers,
        "input": {"name": INPUT, "dtype": "int64", "shape": ["batch", "seq"]},
        "outputs": [{"name": r.output, "shape": ["batch", "seq", r.num_experts]} for r in routers]
        or [{"name": LOGITS, "shape": ["batch", "seq", cfg.vocab_size]}],
        "routers": [
            {
                "layer": r.layer,
                "kind": r.kind,
                "output": r.output,
                "num_experts": r.num_experts,
                "top_k": r.top_k,
            }
            for r in routers
        ],
        "router_probs": PROBS_DOC,
        "tokenizer": tok.to_dict(),
        "opset": OPSET,
        "exporter": f"torch {torch.__version__} dynamo",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write(out: Path, manifest: dict[str, Any]) -> None:
    (Path(out) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def check_export(export_dir: Path) -> dict[str, Any]:
    """Reads routing.json and checks that model.onnx and the tokenizer beside it match it; one
    CheckpointError naming the file at fault otherwise. Returns the manifest."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    m = read_json(path, CheckpointError, "missing (not an ONNX export of moelab export?)")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise CheckpointError(f"{path}: version {m.get('version')!r} is not supported (expected {VERSION})")
    tok = m.get("tokenizer") or {}
    tok_file = export_dir / str(tok.get("file", ""))
    if not tok.get("file") or not tok_file.is_file():
        raise CheckpointError(f"{tok_file}: tokenizer file missing (re-run moelab export)")
    model_path = export_dir / str(m.get("model", MODEL_FILE))
    _check_onnx(model_path, [o["name"] for o in m.get("outputs", [])])
    return m


def _check_onnx(path: Path, expected_outputs: list[str]) -> None:
    import onnx  # only needed to check; the export itself goes through torch.onnx

    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError types
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    names = [o.name for o in proto.graph.output]
    if names != expected_outputs:
        missing = [n for n in expected_outputs if n not in names]
        raise CheckpointError(
            f"{path}: outputs do not match {MANIFEST} (missing {missing[:3]}, has {names[:4]}...)"
            if missing
            else f"{path}: outputs {names} do not match {MANIFEST}"
        )
