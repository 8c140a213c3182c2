"""A one-line progress bar on stderr: step, loss, tokens/s, ETA. No dependency.

On a terminal the line is redrawn with a carriage return; when stderr is a file or a pipe (CI,
logs) it prints a plain line every 10% instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, label: str, total: int, start: int = 0, stream: TextIO | None = None) -> None:
        self.label, self.total, self.start = label, max(1, total), start
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_decile = start * 10 // self.total
        self._width = 0
        self._drawn = 0.0

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        done = step - self.start
        rate = done / max(1e-9, time.monotonic() - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        line = (
            f"[{self.label}] step {step}/{self.total} {100 * step // self.total:3d}% | loss {loss:.4f} | "
            f"{tokens_per_s / 1000:.1f}k tok/s | ETA {_hms(eta)}"
        )
        if self.tty:
            now = time.monotonic()
            if now - self._drawn < 0.1 and step != self.total:
                return  # at most ten redraws a second: tiny models take hundreds of steps a second
            self._drawn = now
            pad = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + pad)
            self._width = len(line)
            self.stream.flush()
        else:
            decile = step * 10 // self.total
            if decile > self._last_decile or step == self.total:
                self._last_decile = decile
                print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line of its own (eval results, checkpoints) without breaking the bar."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
