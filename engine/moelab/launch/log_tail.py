"""Print the end of a job's log, and with --follow keep printing until the job ends (like `tail -f`)."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

POLL_S = 0.5
STATE_EVERY_S = 3.0  # asking slurmctld is dearer than stat-ing a file


def last_lines(path: Path, n: int) -> bytes:
    if n <= 0:
        return path.read_bytes()
    with path.open("rb") as f:
        return b"".join(deque(f, maxlen=n))


def tail(
    path: Path, lines: int, follow: bool, active: Callable[[], bool], out: BinaryIO | None = None
) -> int:
    """`active()` says whether the job may still write; returns the exit status for the CLI."""
    out = out or sys.stdout.buffer
    if not follow:
        if not path.exists():
            print(f"moelab: {path}: no log yet (the job has not started)", file=sys.stderr)
            return 1
        out.write(last_lines(path, lines))
        out.flush()
        return 0
    announced = False
    while not path.exists():
        if not active():
            print(f"moelab: {path}: the job ended without writing a log", file=sys.stderr)
            return 1
        if not announced:
            print(f"moelab: waiting for {path} (the job is queued)", file=sys.stderr)
            announced = True
        time.sleep(STATE_EVERY_S)
    out.write(last_lines(path, lines))
    out.flush()
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        last_check = time.monotonic()
        while True:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if time.monotonic() - last_check >= STATE_EVERY_S:
                last_check = time.monotonic()
                if not active():
                    out.write(f.read())  # what was written between the last read and the job's end
                    out.flush()
                    return 0
            time.sleep(POLL_S)
