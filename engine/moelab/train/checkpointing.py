"""Training checkpoints: checkpoints/step-000100/ = config.json + model.safetensors (a loadable
model directory) + optimizer.pt + trainer.pt (step, tokens, elapsed time, RNG states, and the
saturation probe's routing history).

A checkpoint directory appears whole or not at all (written to a temp dir, then renamed), and
`checkpoints/latest` names the newest complete one; it is rewritten atomically only after the
rename, so a reader following `latest` never sees a partial checkpoint. An asynchronous DCP
checkpoint (train config `async_checkpoint`) is the same two halves apart in time: begin_checkpoint
writes the temp dir's small files while the shards are still being written in the background, and
commit_checkpoint renames it and rewrites `latest` only after every rank's shards are on disk; a
process killed in between leaves `latest` on the previous checkpoint and a temp dir the next prune
removes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moelab.data.tokenizer import Tokenizer
from moelab.errors import CheckpointError
from moelab.io.atomic import begin_dir, commit_dir, discard_dir, write_text_atomic
from moelab.io.checkpoint import save_model, write_config
from moelab.io.seed_files import carry_seed_files
from moelab.models.model import MoELabForCausalLM

_NAME = re.compile(r"^step-(\d{6,})$")


def ckpt_name(step: int) -> str:
    return f"step-{step:06d}"


@dataclass
class TrainerState:
    step: int  # optimizer steps completed
    tokens: int  # training tokens consumed
    elapsed: float  # training wall time so far, seconds (continues across resumes)
    # Training FLOPs executed so far (models/flops.py, forward + backward); None when a checkpoint
    # from before the count was loaded: the trainer then derives it from `tokens`.
    flops: float | None = 0.0
    probe: dict[str, Any] = field(default_factory=dict)  # train/saturation.py's per-step top-k history


def save_checkpoint(
    ckpt_root: Path,
    model: MoELabForCausalLM,
    weights: dict[str, torch.Tensor] | Callable[[Path], None],
    optimizer_state: dict[str, Any] | None,
    state: TrainerState,
    tok: Tokenizer,
    meta: dict[str, Any],
    keep_last: int,
    source: Path | None = None,
) -> Path:
    """`weights` and `optimizer_state` are the full (unsharded) state dicts: `model` gives the config only.
    Or `weights` writes the model and optimizer state into the checkpoint folder it is given (each
    rank its DCP shards: launch/dcp_state.py), and `optimizer_state` is None.
    `source` is the checkpoint the run started from: its tokenizer and generation files are carried."""
    tmp = begin_checkpoint(ckpt_root, model, weights, optimizer_state, state, tok, meta, source)
    return commit_checkpoint(ckpt_root, state.step, tmp, keep_last)


def begin_checkpoint(
    ckpt_root: Path,
    model: MoELabForCausalLM,
    weights: dict[str, torch.Tensor] | Callable[[Path], None],
    optimizer_state: dict[str, Any] | None,
    state: TrainerState,
    tok: Tokenizer,
    meta: dict[str, Any],
    source: Path | None = None,
) -> Path:
    """save_checkpoint's first half: writes the checkpoint into a temporary folder beside its place and
    returns the folder. An asynchronous `weights` may still be writing into it when this returns;
    commit_checkpoint, once it has finished, publishes the folder."""
    target = Path(ckpt_root) / ckpt_name(state.step)
    tmp = begin_dir(target, overwrite=True)
    try:
        if callable(weights):
            write_config(tmp, model.config, meta)
            weights(tmp)
        else:
            save_model(model, tmp, moelab_meta=meta, state=weights)
        if source is not None:
            carry_seed_files(source, tmp)
        tok.save(tmp)
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(
            {
                "step": state.step,
                "tokens": state.tokens,
                "elapsed": state.elapsed,
                "flops": state.flops,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state(),
                "probe": state.probe,
            },
            tmp / "trainer.pt",
        )
        # The same facts, readable without torch (the extension, humans).
        (tmp / "trainer_state.json").write_text(
            json.dumps(
                {
                    "step": state.step,
                    "tokens": state.tokens,
                    "elapsed": state.elapsed,
                    "flops": state.flops,
                    "data_position": state.step,
                }
            )
            + "\n"
        )
    except BaseException as e:
        discard_dir(tmp, target, e)
    return tmp


def commit_checkpoint(ckpt_root: Path, step: int, tmp: Path, keep_last: int) -> Path:
    """save_checkpoint's second half: renames the finished temporary folder `tmp` into place as step
    `step`'s checkpoint, then points `latest` at it and prunes."""
    name = ckpt_name(step)
    target = Path(ckpt_root) / name
    commit_dir(tmp, target)
    write_text_atomic(Path(ckpt_root) / "latest", name + "\n")
    _prune(Path(ckpt_root), keep_last)
    return target


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint `latest` names, if it is complete; else None."""
    try:
        name = (Path(ckpt_root) / "latest").read_text().strip()
    except OSError:
        return None
    path = Path(ckpt_root) / name
    if not _NAME.match(name) or not (path / "trainer.pt").exists():
        return None
    return path


OptimizerLoader = Callable[[Callable[[], dict[str, Any]]], None]


def load_trainer_state(
    ckpt: Path, optimizer: torch.optim.Optimizer | None, load_optimizer: OptimizerLoader | None = None
) -> TrainerState:
    """Restores the RNGs and returns the counters. The optimizer state goes to `optimizer`, or through
    `load_optimizer(read)` when it must be sharded (FSDP), which calls `read()` where it needs the dict."""

    def read() -> dict[str, Any]:
        return torch.load(ckpt / "optimizer.pt", weights_only=True)

    try:
        st = torch.load(ckpt / "trainer.pt", weights_only=False)
        if load_optimizer is not None:
            load_optimizer(read)
        elif optimizer is not None:
            optimizer.load_state_dict(read())
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt}: cannot restore the trainer state ({e})") from None
    torch.set_rng_state(st["torch_rng"])
    if st.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda_rng"])
    random.setstate(st["python_rng"])
    np.random.set_state(st["numpy_rng"])
    flops = st.get("flops")
    return TrainerState(
        step=int(st["step"]),
        tokens=int(st["tokens"]),
        elapsed=float(st["elapsed"]),
        flops=None if flops is None else float(flops),
        probe=st.get("probe") or {},
    )  # checkpoints from before the probe have none


def _prune(root: Path, keep_last: int) -> None:
    """Deletes all but the newest `keep_last` checkpoints, and the temp folders of writers that were
    killed (.step-*.tmp-*, .step-*.old-*). A checkpoint is renamed to a hidden name before it is
    deleted, so a reader listing step-* folders never finds a half-deleted one."""
    ckpts = sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))
    for old in ckpts[: max(0, len(ckpts) - keep_last)]:
        hidden = old.with_name(f".{old.name}.del-{os.getpid()}")
        try:
            old.rename(hidden)
        except OSError:
            continue
        shutil.rmtree(hidden, ignore_errors=True)
    # One writer per run directory, which commits a pending asynchronous checkpoint before it begins
    # or commits another (so none is being written now): any other hidden step folder, or temp file
    # of `latest` (a writer killed between its mkstemp and its rename), is a leftover.
    for left in root.iterdir():
        if left.name.startswith(".step-") and left.is_dir():
            shutil.rmtree(left, ignore_errors=True)
        elif left.name.startswith(".latest.") and left.is_file():
            left.unlink(missing_ok=True)
