"""Where each domain's text comes from: the engine's synthetic generators, or the user's own data
(plain-text files, JSONL with a text field, or a Hugging Face `datasets` dataset on local disk).

One source per domain. User data is split into train and eval by position (the last
`eval_fraction` of its tokens is held out); synthetic domains draw the two splits from
independent generator streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moelab.data import synthetic
from moelab.errors import ConfigError

SourceKind = Literal["synthetic", "text", "jsonl", "hf"]


@dataclass
class DataSource:
    """One domain's text."""

    domain: str
    # synthetic: the engine's generator named `domain` (code, math, prose); text: a .txt file or a
    # directory of .txt files (one document per file; inside a file, blank lines separate
    # documents); jsonl: one JSON object a line; hf: a local `datasets` dataset (save_to_disk
    # directory, or a .json/.jsonl/.csv/.parquet/.txt file).
    kind: SourceKind = "synthetic"
    path: str = ""
    text_field: str = "text"  # jsonl and hf
    split: str = "train"  # hf: which split of a DatasetDict
    weight: float = 1.0  # share of this domain in a training mixture (normalised over sources)


def load_documents(src: DataSource, split: str, seed: int, n_chars: int) -> list[str]:
    """Synthetic sources only: the documents of one split (`n_chars` characters or more)."""
    if src.domain not in synthetic.GENERATORS:
        raise ConfigError(
            f"data source {src.domain!r}: no synthetic generator of that name "
            f"(expected one of {', '.join(synthetic.DOMAINS)}, or set kind and path for your own data)"
        )
    return synthetic.documents(src.domain, seed, n_chars, split=split)


def load_user_documents(src: DataSource) -> list[str]:
    """All documents of a user source (text, jsonl, hf); the caller splits them."""
    if not src.path:
        raise ConfigError(f"data source {src.domain!r}: kind {src.kind!r} needs a path")
    path = Path(src.path).expanduser()
    if not path.exists():
        raise ConfigError(f"data source {src.domain!r}: {path}: no such file or directory")
    if src.kind == "text":
        docs = _read_text(path)
    elif src.kind == "jsonl":
        docs = _read_jsonl(path, src.text_field)
    elif src.kind == "hf":
        docs = _read_hf(path, src)
    else:
        raise ConfigError(f"data source {src.domain!r}: unknown kind {src.kind!r}")
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError(f"data source {src.domain!r}: {path} holds no text")
    return docs


def _read_text(path: Path) -> list[str]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise ConfigError(f"{f}: cannot read ({e.strerror})") from None
        if path.is_dir():
            docs.append(text)
        else:
            docs.extend(p.strip("\n") + "\n" for p in text.split("\n\n") if p.strip())
    return docs


def _read_jsonl(path: Path, field: str) -> list[str]:
    docs: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
            raise ConfigError(f"{path}:{n}: expected an object with a string field {field!r}")
        docs.append(rec[field])
    return docs


_HF_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _read_hf(path: Path, src: DataSource) -> list[str]:
    try:
        import datasets  # optional: not a dependency of the engine
    except ImportError:
        raise ConfigError(
            f"data source {src.domain!r}: kind 'hf' needs the Hugging Face `datasets` package, which is "
            "not installed (pip install datasets), or use kind 'text' or 'jsonl'"
        ) from None
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if src.split not in ds:
                raise ConfigError(f"{path}: no split {src.split!r} (has {', '.join(ds)})")
            ds = ds[src.split]
    else:
        builder = _HF_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(
                f"{path}: kind 'hf' reads {', '.join(_HF_BUILDERS)} files or a save_to_disk directory"
            )
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    if src.text_field not in ds.column_names:
        raise ConfigError(f"{path}: no column {src.text_field!r} (has {', '.join(ds.column_names)})")
    return [str(t) for t in ds[src.text_field] if t]
