"""Tokenizers: raw bytes for the engine's tiny models, the checkpoint's own tokenizer.json for
Hugging Face seeds.

A checkpoint says which one it uses: the engine's tiny checkpoints carry `moelab_tokenizer.json`
({"type": "bytes"}) so other tools (the extension's routing inspector) know how to encode text;
Hugging Face checkpoints ship `tokenizer.json`, read with the `tokenizers` library.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

from moelab.errors import ConfigError

MOELAB_TOKENIZER = "moelab_tokenizer.json"
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, ckpt: Path) -> None:
        """Writes the files that let a reader of `ckpt` re-create this tokenizer."""


class ByteTokenizer:
    """UTF-8 bytes are the tokens (vocab 256). Documents are separated by a NUL byte, which never
    occurs in text, so the model can learn where a document ends."""

    vocab_size = 256
    eos_id: int | None = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def save(self, ckpt: Path) -> None:
        (Path(ckpt) / MOELAB_TOKENIZER).write_text(json.dumps({"type": "bytes", "vocab_size": 256, "eos_id": 0}) + "\n")


class HFTokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json) via the `tokenizers` library."""

    def __init__(self, ckpt: Path, eos_id: int | None = None) -> None:
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise ConfigError(
                f"{ckpt}: has a tokenizer.json but the `tokenizers` package is not installed "
                "(pip install 'moelab[hf]')"
            ) from None
        self.ckpt = Path(ckpt)
        self._tok = _Tok.from_file(str(self.ckpt / "tokenizer.json"))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = eos_id

    def encode(self, text: str) -> list[int]:
        # No special tokens: documents are joined with the EOS id by the packer.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def save(self, ckpt: Path) -> None:
        for name in HF_TOKENIZER_FILES:
            src = self.ckpt / name
            if src.exists() and src.resolve() != (Path(ckpt) / name).resolve():
                shutil.copyfile(src, Path(ckpt) / name)


def load_tokenizer(ckpt: Path | None, vocab_size: int, eos_token_id: int | list[int] | None = None) -> Tokenizer:
    """The tokenizer of checkpoint `ckpt` (None: a model trained from scratch, which uses bytes)."""
    if ckpt is not None:
        ckpt = Path(ckpt)
        marker = ckpt / MOELAB_TOKENIZER
        if marker.exists():
            try:
                kind = json.loads(marker.read_text()).get("type")
            except (OSError, ValueError, AttributeError) as e:
                raise ConfigError(f"{marker}: invalid ({e})") from None
            if kind != "bytes":
                raise ConfigError(f"{marker}: unknown tokenizer type {kind!r} (expected 'bytes')")
            return _checked(ByteTokenizer(), vocab_size, marker)
        if (ckpt / "tokenizer.json").exists():
            eos = eos_token_id[0] if isinstance(eos_token_id, list) and eos_token_id else eos_token_id
            return _checked(HFTokenizer(ckpt, eos if isinstance(eos, int) else None), vocab_size, ckpt / "tokenizer.json")
    if vocab_size == 256:
        return ByteTokenizer()
    where = f"{ckpt}: " if ckpt is not None else ""
    raise ConfigError(
        f"{where}no tokenizer found (expected {MOELAB_TOKENIZER} or tokenizer.json) and vocab_size "
        f"{vocab_size} is not the byte vocabulary (256)"
    )


def _checked(tok: Tokenizer, vocab_size: int, source: Path) -> Tokenizer:
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"{source}: tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {vocab_size}")
    return tok
