"""Tokenizers, and the one rule that says which tokenizer a checkpoint uses (training, evaluation,
router pre-optimization, export and `moelab inspect` all ask `detect`).

The rule: a checkpoint with `tokenizer.json` uses that Hugging Face tokenizer (read with the
`tokenizers` library), even when it also carries the engine's byte-level marker
`moelab_tokenizer.json`, because transformers, lm-eval and every serving stack read
tokenizer.json: the engine must encode text as they will. Without tokenizer.json the marker, or a
vocabulary of exactly 256, means byte-level (ids = UTF-8 bytes, the engine's tiny models). Anything
else has no tokenizer we could run: an error, not a byte-level guess that would train on nonsense.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from moelab.errors import CheckpointError, ConfigError
from moelab.io.seed_files import TOKENIZER_FILES, carry_seed_files

HF_FILE = "tokenizer.json"
BYTE_MARKER = "moelab_tokenizer.json"
BYTE_VOCAB = 256
_BYTE_KINDS = ("bytes", "byte", "byte-level")


@dataclass
class TokenizerInfo:
    kind: Literal["byte-level", "hf"]
    file: str  # the file that defines it, inside the checkpoint directory
    vocab_size: int  # the model's

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "vocab_size": self.vocab_size}


def detect(ckpt: Path | None, model_vocab: int) -> TokenizerInfo:
    """Which tokenizer checkpoint `ckpt` uses (None: a model trained from scratch)."""
    if ckpt is not None:
        ckpt = Path(ckpt)
        if (ckpt / HF_FILE).is_file():
            return TokenizerInfo("hf", HF_FILE, model_vocab)
        marker = ckpt / BYTE_MARKER
        if marker.is_file():
            kind = _marker_kind(marker)
            if kind not in _BYTE_KINDS:
                raise CheckpointError(
                    f"{marker}: tokenizer kind {kind!r} is not byte-level and there is no {HF_FILE}"
                )
            return TokenizerInfo("byte-level", BYTE_MARKER, model_vocab)
    if model_vocab == BYTE_VOCAB:
        return TokenizerInfo("byte-level", BYTE_MARKER, model_vocab)
    if ckpt is None:
        raise ConfigError(
            f"model.vocab_size {model_vocab}: a model trained from scratch reads bytes, so its "
            f"vocab_size must be {BYTE_VOCAB} (or set init to a checkpoint with a {HF_FILE})"
        )
    raise CheckpointError(
        f"{ckpt}: no {HF_FILE} (and vocab_size {model_vocab} is not the byte-level {BYTE_VOCAB}): "
        f"copy the model's {HF_FILE} into the checkpoint directory"
    )


def _marker_kind(path: Path) -> str:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return str(d.get("kind") or d.get("type") or "byte-level")


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def tokens(self, text: str) -> tuple[list[int], list[str]]:
        """Ids and the text of each token (for display)."""
        ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, ckpt: Path) -> None:
        """Writes the files that let a reader of `ckpt` re-create this tokenizer."""


class ByteTokenizer:
    """UTF-8 bytes are the tokens (vocab 256). Documents are separated by a NUL byte, which never
    occurs in text, so the model can learn where a document ends."""

    vocab_size = BYTE_VOCAB
    eos_id: int | None = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def tokens(self, text: str) -> tuple[list[int], list[str]]:
        data = text.encode("utf-8")
        return list(data), [bytes([b]).decode("latin-1") for b in data]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def save(self, ckpt: Path) -> None:
        (Path(ckpt) / BYTE_MARKER).write_text(
            json.dumps({"type": "bytes", "vocab_size": 256, "eos_id": 0}) + "\n"
        )


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
        try:
            self._tok = _Tok.from_file(str(self.ckpt / HF_FILE))
        except Exception as e:  # the Rust library raises its own exception type
            raise CheckpointError(f"{self.ckpt / HF_FILE}: not a readable tokenizer ({e})") from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = eos_id

    def encode(self, text: str) -> list[int]:
        # No special tokens: documents are joined with the EOS id by the packer.
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> tuple[list[int], list[str]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.ids), list(enc.tokens)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def save(self, ckpt: Path) -> None:
        carry_seed_files(self.ckpt, ckpt, tuple(n for n in TOKENIZER_FILES if n != BYTE_MARKER))


def load_tokenizer(
    ckpt: Path | None, vocab_size: int, eos_token_id: int | list[int] | None = None
) -> Tokenizer:
    """The tokenizer of checkpoint `ckpt` (None: a model trained from scratch, which uses bytes)."""
    info = detect(ckpt, vocab_size)
    if info.kind == "byte-level":
        if vocab_size < BYTE_VOCAB:
            raise ConfigError(
                f"{ckpt}: byte-level tokenizer but the model's vocab_size is {vocab_size} < {BYTE_VOCAB}"
            )
        return ByteTokenizer()
    assert ckpt is not None
    eos = eos_token_id[0] if isinstance(eos_token_id, list) and eos_token_id else eos_token_id
    tok = HFTokenizer(Path(ckpt), eos if isinstance(eos, int) else None)
    if tok.vocab_size > vocab_size:
        raise ConfigError(
            f"{Path(ckpt) / HF_FILE}: tokenizer has {tok.vocab_size} tokens but the model's "
            f"vocab_size is {vocab_size}"
        )
    return tok
