"""Optional metric sinks beside metrics.jsonl: TensorBoard event files and Weights & Biases.

`loggers` in the train config or experiment picks them (default: none). Each metrics.jsonl record
becomes scalars named <split>/<key> at the record's global step: train/loss, train/lr, eval/loss,
eval/ppl, ..., and <split>/domain/<domain> for its per-domain losses (eval/domain/code).

Where they write, inside the run directory (ARCHITECTURE.md §4):
  tensorboard/   event files (torch.utils.tensorboard's SummaryWriter, which needs `tensorboard`).
                 A resumed run writes a new file that purges the steps after its checkpoint, so
                 TensorBoard shows each step once, as metrics.jsonl does.
  wandb/         the W&B run (id = the run id, resume="allow": a resumed run continues the same W&B
                 run). Offline or online as W&B's own settings say (WANDB_MODE, WANDB_PROJECT, ...).

The packages are imported only when asked for; a missing one is a one-line ConfigError naming the
pip install to do. Under torchrun only rank 0 opens them (the trainer's `main_only`).
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from moelab.errors import ConfigError
from moelab.train.runlog import JsonlWriter

Logger = Literal["tensorboard", "wandb"]


class _Sink(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.jsonl record under their tracker names (null values left out)."""
    split = rec.get("split", "train")
    out: dict[str, float] = {}
    for key, value in rec.items():
        if key in ("step", "split") or isinstance(value, bool):
            continue
        if key == "domain" and isinstance(value, dict):
            out.update(
                {f"{split}/domain/{d}": float(v) for d, v in value.items() if isinstance(v, int | float)}
            )
        elif isinstance(value, int | float):
            out[f"{split}/{key}"] = float(value)
    return out


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"loggers: {package!r} needs the {package} package ({e}); "
            f"install it with: pip install 'moelab[trackers]' (or pip install {package})"
        ) from None


class TensorBoardSink:
    def __init__(self, run_path: Path, resume_step: int) -> None:
        writer_cls = _import("torch.utils.tensorboard", "tensorboard").SummaryWriter
        log_dir = run_path / "tensorboard"
        if resume_step == 0:  # a fresh start, as metrics.jsonl is deleted
            shutil.rmtree(log_dir, ignore_errors=True)
        # purge_step: TensorBoard's readers drop the earlier files' events from this step on.
        self.writer = writer_cls(str(log_dir), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(
        self, run_path: Path, run_id: str, config: dict[str, Any], experiment: str, stage: str
    ) -> None:
        wandb = _import("wandb", "wandb")
        # console="off": W&B must not wrap the process's stdout/stderr, which the extension reads.
        try:
            self.run = wandb.init(
                id=run_id,
                name=run_id,
                project=os.environ.get("WANDB_PROJECT", "moelab"),
                group=experiment or None,
                job_type=stage,
                dir=str(run_path),
                config=config,
                resume="allow",
                settings=wandb.Settings(console="off"),
            )
        except wandb.errors.Error as e:  # no API key, a bad WANDB_* setting, ...: W&B's message is the cause
            raise ConfigError(f"loggers: wandb could not start the run: {' '.join(str(e).split())}") from None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        # The same step twice (train, then eval) fills one W&B history row.
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        pass  # W&B's service writes the run's log as it goes

    def close(self) -> None:
        self.run.finish()


class MetricsLog:
    """metrics.jsonl plus the chosen trackers, behind metrics.jsonl's writer interface."""

    def __init__(self, path: Path, sinks: list[_Sink]) -> None:
        self.jsonl, self.sinks = JsonlWriter(path), sinks

    def write(self, rec: dict[str, Any]) -> None:
        self.jsonl.write(rec)
        if self.sinks:
            values = scalars(rec)
            for sink in self.sinks:
                sink.log(int(rec["step"]), values)

    def sync(self) -> None:
        self.jsonl.sync()
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        self.jsonl.close()
        for sink in self.sinks:
            sink.close()


def open_sinks(
    loggers: Sequence[str],
    run_path: Path,
    run_id: str,
    config: dict[str, Any],
    *,
    resume_step: int,
    experiment: str = "",
    stage: str = "",
) -> list[_Sink]:
    """The sinks `loggers` names, opened for the run directory `run_path` (closing any opened
    before a failure)."""
    sinks: list[_Sink] = []
    try:
        for name in dict.fromkeys(loggers):
            if name == "tensorboard":
                sinks.append(TensorBoardSink(run_path, resume_step))
            elif name == "wandb":
                sinks.append(WandbSink(run_path, run_id, config, experiment, stage))
            else:
                raise ConfigError(f"loggers: {name!r} is not a logger (tensorboard, wandb)")
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
