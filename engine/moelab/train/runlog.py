"""metrics.jsonl and routing.jsonl: append-only JSON lines, flushed per line.

metrics.jsonl (ARCHITECTURE.md §4) holds one record per logged step and split:
  {"step", "tokens", "time", "flops", "split": "train"|"eval", "loss", ...}
"flops" is the cumulative training compute at that step: FLOPs executed forward and backward
(models/flops.py; backward = 2× forward), continuing across resumes; eval records repeat it.

routing.jsonl (ARCHITECTURE.md §4) holds, per logged step, MoE layer and router kind:
  {"step", "layer", "router": "ffn"|"attn", "load": [...], "prob": [...], "by_domain": {...},
   "coact": [[P(b | a) for b] for a]}
"coact" (expert co-activation, on the same tokens as "load") is there only for top-k routers with at
most MAX_COACT_EXPERTS (64) experts: row a, column b is the share of the tokens routed to a that are
also routed to b; the diagonal is 1, or 0 for an expert never picked. When a run is done, one more
record per logged step and top-k router is appended, without "load":
  {"step", "layer", "router", "saturation": share of the probe tokens' top-k experts at that step
   that are in their top-k at the final step (OLMoE §5.3), in [0, 1]}
Readers merge it into the record of the same step, layer and router (train/saturation.py).

Readers (the extension, `moelab eval`, resume) may see a file while it is being written, so
`read_jsonl` accepts a partial last line and skips lines it cannot parse, counting them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from moelab.io.atomic import write_text_atomic


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(records, bad_count). A missing file reads as no records. A last line without its newline
    is a write in progress: parsed if complete JSON, otherwise ignored without counting it bad."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records: list[dict[str, Any]] = []
    bad = 0
    for raw in lines:
        if not raw.strip():
            continue
        rec = _parse(raw)
        if rec is None:
            bad += 1
        else:
            records.append(rec)
    if tail.strip():
        rec = _parse(tail)
        if rec is not None:
            records.append(rec)
    return records, bad


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _clean(v: Any) -> Any:
    # JSON has no NaN/Infinity; the extension's JSON.parse would reject the whole line.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


class JsonlWriter:
    """Appends one JSON object per line and flushes it, so a tail -f (or the extension) sees it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(_clean(rec), separators=(",", ":")) + "\n")
        self._f.flush()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def truncate_after(path: Path, step: int, keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> None:
    """Keep only records with "step" <= `step` that `keep` accepts (and drop unparsable lines): on
    resume from the checkpoint of `step`, the curve continues without duplicates."""
    path = Path(path)
    if not path.exists():
        return
    records, _ = read_jsonl(path)
    kept = [r for r in records if isinstance(r.get("step"), int | float) and r["step"] <= step and keep(r)]
    write_text_atomic(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept))
