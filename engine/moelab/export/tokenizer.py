"""Which tokenizer a checkpoint uses, and copying it beside an export.

A checkpoint with `tokenizer.json` uses that Hugging Face tokenizer. The engine's own models have
none: they are byte-level (ids = UTF-8 bytes, vocab 256), optionally marked by
`moelab_tokenizer.json`. Anything else has no tokenizer we could run, which is an error rather
than a silent byte-level guess that would give meaningless routing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moelab.errors import CheckpointError

HF_FILE = "tokenizer.json"
BYTE_MARKER = "moelab_tokenizer.json"
BYTE_VOCAB = 256
# Files the JS tokenizer library reads besides tokenizer.json (special tokens, added-token flags).
HF_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TokenizerInfo:
    kind: str  # "byte-level" | "hf"
    file: str  # file name inside the export directory
    vocab_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "vocab_size": self.vocab_size}


def detect(ckpt: Path, model_vocab: int) -> TokenizerInfo:
    ckpt = Path(ckpt)
    hf = ckpt / HF_FILE
    if hf.is_file():
        try:
            json.loads(hf.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{hf}: not a readable tokenizer.json ({e})") from None
        return TokenizerInfo("hf", HF_FILE, model_vocab)
    marker = ckpt / BYTE_MARKER
    if marker.is_file():
        kind = _marker_kind(marker)
        if kind not in ("byte-level", "bytes", "byte"):
            raise CheckpointError(f"{marker}: tokenizer kind {kind!r} is not byte-level and there is no {HF_FILE}")
        return TokenizerInfo("byte-level", BYTE_MARKER, model_vocab)
    if model_vocab == BYTE_VOCAB:
        return TokenizerInfo("byte-level", BYTE_MARKER, model_vocab)
    raise CheckpointError(
        f"{ckpt}: no {HF_FILE} (and vocab_size {model_vocab} is not the byte-level {BYTE_VOCAB}): "
        f"copy the model's tokenizer.json into the checkpoint directory"
    )


def copy_beside(ckpt: Path, info: TokenizerInfo, out: Path) -> None:
    """Puts the tokenizer file(s) into the export directory `out`."""
    ckpt, out = Path(ckpt), Path(out)
    if info.kind == "hf":
        shutil.copyfile(ckpt / HF_FILE, out / HF_FILE)
        for extra in HF_EXTRAS:
            if (ckpt / extra).is_file():
                shutil.copyfile(ckpt / extra, out / extra)
        return
    src = ckpt / BYTE_MARKER
    if src.is_file():
        shutil.copyfile(src, out / BYTE_MARKER)
    else:
        (out / BYTE_MARKER).write_text(json.dumps({"kind": "byte-level", "vocab_size": info.vocab_size}) + "\n")


def _marker_kind(path: Path) -> str:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return str(d.get("kind") or d.get("type") or "byte-level")
