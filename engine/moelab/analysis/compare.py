"""`--compare A B`: which tensors differ between two checkpoints of one architecture, and by how much.

Streams both checkpoints in row chunks; refuses (one line naming the first mismatching tensor)
when the tensor names or shapes differ, since a tensor-by-tensor difference means nothing then.
Dtypes may differ (a bf16 export against its fp32 source): values are compared in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moelab.analysis.report import VERSION
from moelab.analysis.source import ChunkReader, rows_per_chunk
from moelab.analysis.structure import first_mismatch
from moelab.errors import MoELabError


def compare_checkpoints(
    a: Path, b: Path, chunk_bytes: int = 64 * 1024**2, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    with ChunkReader(Path(a)) as ra, ChunkReader(Path(b)) as rb:
        sa, sb = ra.shapes(), rb.shapes()
        mm = first_mismatch(sa, sb, str(a), str(b))
        if mm:
            raise MoELabError(f"cannot compare, architectures differ: {mm}")
        names = sorted(sa)
        changed = []
        every = max(1, len(names) // 20)  # about 20 progress lines whatever the model size
        for i, name in enumerate(names):
            if progress and (i % every == 0 or i == len(names) - 1):
                progress(f"compare: [{i + 1}/{len(names)}] {name}")
            ea = ra.entry(name)
            diff2 = ref2 = 0.0
            step = rows_per_chunk(ea.cols, 8, chunk_bytes)  # two chunks, difference, temporaries, slack
            for r0 in range(0, ea.rows, step):
                xa = ra.rows(name, r0, r0 + step, any_dtype=True)
                xb = rb.rows(name, r0, r0 + step, any_dtype=True)
                diff2 += float((xa - xb).square().sum())
                ref2 += float(xa.square().sum())
            if diff2 == 0.0:
                continue  # equal values (possibly in another dtype): the weights did not change
            changed.append(
                {
                    "name": name,
                    "shape": sa[name][0],
                    "dtype_a": sa[name][1],
                    "dtype_b": sb[name][1],
                    "norm_a": math.sqrt(ref2),
                    "abs_change": math.sqrt(diff2),
                    # None: undefined (all-zero A) or not a number (NaN/inf in a tensor); both sort first.
                    "rel_change": math.sqrt(diff2 / ref2)
                    if ref2 > 0 and math.isfinite(diff2 / ref2)
                    else None,
                }
            )
    # Largest relative change first; a change from an all-zero tensor (undefined, infinite) leads.
    changed.sort(key=_order)
    return {
        "version": VERSION,
        "mode": "compare",
        "a": str(a),
        "b": str(b),
        "num_tensors": len(names),
        "num_changed": len(changed),
        "tensors": changed,
    }


def _order(t: dict[str, Any]) -> tuple[bool, float, float, str]:
    rel, ab = t["rel_change"], t["abs_change"]
    return (rel is not None, -(rel or 0.0), -ab if math.isfinite(ab) else -math.inf, t["name"])
