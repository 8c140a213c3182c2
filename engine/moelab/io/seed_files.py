"""The files of a checkpoint besides its weights and config that its users rely on: the tokenizer
in every format transformers reads or writes (with the chat template), the generation defaults, and
the engine's byte-level marker. Every output made from a checkpoint (an upcycled MoE, a training
checkpoint, an export) carries them over unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    # Slow-tokenizer and older formats (SentencePiece, BPE vocab + merges, WordPiece).
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "moelab_tokenizer.json",
)
SEED_FILES = (*TOKENIZER_FILES, "generation_config.json")
# transformers 5 saves the chat templates besides the default one as one .jinja file each here.
SEED_DIRS = ("additional_chat_templates",)


def carry_seed_files(
    src: Path, dst: Path, names: tuple[str, ...] = SEED_FILES, dirs: tuple[str, ...] = SEED_DIRS
) -> list[str]:
    """Copies those of `names` (files) and `dirs` that `src` has into the existing directory `dst`;
    returns what it copied."""
    src, dst = Path(src), Path(dst)
    copied = []
    for name in names:
        if (src / name).is_file() and (src / name).resolve() != (dst / name).resolve():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    for name in dirs:
        if (src / name).is_dir() and not (dst / name).exists():
            shutil.copytree(src / name, dst / name)
            copied.append(name)
    return copied
