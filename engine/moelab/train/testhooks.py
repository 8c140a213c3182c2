"""Test-only faults a training run can be made to show: a NaN loss at a given step, a pause
after every step that leaves a test time to signal or kill the process mid-run, and a crash right
after a given step's checkpoint.

Not part of the public config or its JSON Schema: nothing a user should set. The engine's tests
run `moelab train` in subprocesses (to kill them and send them signals), so the hooks come in
through the environment, as JSON: MOELAB_TEST_HOOKS='{"nan_at_step": 3, "step_delay": 0.2}'.
Unset, every hook is off.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import torch

from moelab.errors import ConfigError
from moelab.train import jsoncfg

ENV = "MOELAB_TEST_HOOKS"


@dataclass(frozen=True)
class Hooks:
    nan_at_step: int = 0  # the loss of this step (1-based) becomes NaN; 0 = never
    step_delay: float = 0.0  # seconds to sleep after every step
    crash_after_step: int = 0  # the process dies (as if killed) once this step's checkpoint is written

    def poison(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """`loss`, made NaN at step `nan_at_step` (1-based)."""
        return loss * float("nan") if self.nan_at_step and step == self.nan_at_step else loss

    def pause(self) -> None:
        if self.step_delay:
            time.sleep(self.step_delay)

    def crash(self, step: int) -> None:
        """A hard exit, no cleanup and no final status: what kill -9 leaves (a resume must cope)."""
        if self.crash_after_step and step == self.crash_after_step:
            os._exit(137)


def from_env() -> Hooks:
    raw = os.environ.get(ENV, "")
    if not raw:
        return Hooks()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{ENV}: not JSON ({e})") from None
    return jsoncfg.from_dict(Hooks, data, ENV)


def env(**hooks: object) -> dict[str, str]:
    """The environment variable that turns `hooks` on in a child process: {ENV: JSON}."""
    return {ENV: json.dumps(hooks)}
