"""What a Slurm job trains: the config file, its run directory and the engine command.

The trainer's config dataclass belongs to moelab.train; this module reads only the few keys it
needs from the JSON itself (run_id, out, slurm), with the trainer's rule that relative paths are
relative to the config file, so `moelab slurm` works before and independently of the trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moelab.errors import ConfigError
from moelab.io.json_file import read_json

EXPERIMENT_RECORDS = ".slurm"  # under `out`: experiments span many runs, their job is recorded apart


@dataclass(frozen=True)
class TrainTarget:
    config: Path  # absolute
    raw: dict[str, Any]
    run_id: str  # the run id, or an experiment's name
    run_dir: Path  # absolute: <config dir>/<out>/<run_id>, or <out>/.slurm/<name> for an experiment
    experiment: bool = False  # `moelab run`: a pipeline of stages, one process (see docs/REMOTE.md)

    @property
    def engine_args(self) -> list[str]:
        return ["run" if self.experiment else "train", str(self.config)]


def load(config: Path) -> TrainTarget:
    config = Path(config).expanduser().resolve()
    raw = read_json(config, ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: expected a JSON object (a train config or an experiment)")
    experiment = "stages" in raw
    key = "name" if experiment else "run_id"
    run_id = raw.get(key, "experiment" if experiment else None)
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id in (".", ".."):
        raise ConfigError(f"{config.name}: {key}: missing or not a plain directory name")
    out = raw.get("out", "runs")
    if not isinstance(out, str):
        raise ConfigError(f"{config.name}: out: expected a string")
    out_dir = Path(out).expanduser()
    out_dir = out_dir if out_dir.is_absolute() else config.parent / out_dir
    # normpath, not resolve: "../runs" collapses but a symlinked runs directory keeps its name.
    run_dir = Path(
        os.path.normpath(out_dir / EXPERIMENT_RECORDS / run_id if experiment else out_dir / run_id)
    )
    return TrainTarget(config=config, raw=raw, run_id=run_id, run_dir=run_dir, experiment=experiment)
