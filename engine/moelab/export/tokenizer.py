"""Copying a checkpoint's tokenizer beside an ONNX export (which tokenizer it is: data/tokenizer.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from moelab.data.tokenizer import BYTE_MARKER, HF_FILE, TokenizerInfo

# Files the JS tokenizer library reads besides tokenizer.json (special tokens, added-token flags).
HF_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json")


def copy_beside(ckpt: Path, info: TokenizerInfo, out: Path) -> None:
    """Puts the tokenizer file(s) into the export directory `out`."""
    ckpt, out = Path(ckpt), Path(out)
    if info.kind == "hf":
        for name in (HF_FILE, *HF_EXTRAS):
            if (ckpt / name).is_file():
                shutil.copyfile(ckpt / name, out / name)
        return
    src = ckpt / BYTE_MARKER
    if src.is_file():
        shutil.copyfile(src, out / BYTE_MARKER)
    else:
        (out / BYTE_MARKER).write_text(json.dumps({"kind": "byte-level", "vocab_size": info.vocab_size}) + "\n")
