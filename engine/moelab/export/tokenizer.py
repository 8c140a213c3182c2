"""Copying a checkpoint's tokenizer beside an ONNX export (which tokenizer it is: data/tokenizer.py)."""

from __future__ import annotations

import json
from pathlib import Path

from moelab.data.tokenizer import BYTE_MARKER, HF_FILE, TokenizerInfo
from moelab.io.seed_files import carry_seed_files

# Files the JS tokenizer library reads besides tokenizer.json (special tokens, added-token flags).
HF_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json")


def copy_beside(ckpt: Path, info: TokenizerInfo, out: Path) -> None:
    """Puts the tokenizer file(s) into the export directory `out`."""
    ckpt, out = Path(ckpt), Path(out)
    if info.kind == "hf":
        carry_seed_files(ckpt, out, (HF_FILE, *HF_EXTRAS), dirs=())
        return
    if not carry_seed_files(ckpt, out, (BYTE_MARKER,), dirs=()):
        (out / BYTE_MARKER).write_text(
            json.dumps({"kind": "byte-level", "vocab_size": info.vocab_size}) + "\n"
        )
