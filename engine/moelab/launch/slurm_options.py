"""The resources a Slurm job asks for: from the config's optional "slurm" object, overridden by CLI flags.

Values end up on `#SBATCH` lines, which Slurm parses itself (not a shell), so they are validated to a
plain character set here: a newline in a partition name must not become a second directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from moelab.errors import ConfigError

_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{1,2}){0,2}$")  # Slurm's forms: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_NAME = re.compile(r"^[A-Za-z0-9_.,+=@-]+$")  # partition / account names (comma lists allowed)
KEYS = ("nodes", "gpus_per_node", "procs_per_node", "time", "partition", "account", "cpus_per_task")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources for `moelab slurm script|submit` (flags of the same names override them)."""

    nodes: int = field(default=1, metadata=_help("nodes; one torchrun per node"))
    gpus_per_node: int = field(default=0, metadata=_help("GPUs per node, one training process each; 0 = CPU"))
    procs_per_node: int | None = field(
        default=None,
        metadata=_help("training processes per node (torchrun workers); default one per GPU, or 1 on CPU"),
    )
    time: str | None = field(default=None, metadata=_help("time limit, HH:MM:SS or D-HH:MM:SS"))
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int | None = field(default=None, metadata=_help("CPUs per node (one Slurm task per node)"))

    @property
    def workers_per_node(self) -> int:
        """torchrun workers per node: as asked, else one per GPU, or one CPU worker without GPUs."""
        return self.procs_per_node or max(self.gpus_per_node, 1)

    @property
    def distributed(self) -> bool:
        """Whether the job needs torchrun (more than one process in all)."""
        return self.nodes * self.workers_per_node > 1

    def merged(self, overrides: dict[str, Any]) -> SlurmOptions:
        """These options with every non-None value of `overrides` (the CLI flags) on top."""
        given = {k: v for k, v in overrides.items() if k in KEYS and v is not None}
        return validate(replace(self, **given), "command line")


def from_config(config: dict[str, Any], where: str) -> SlurmOptions:
    """The config's optional "slurm" object; `where` names the file in error messages."""
    raw = config.get("slurm")
    if raw is None:
        return SlurmOptions()
    if not isinstance(raw, dict):
        raise ConfigError(f'{where}: "slurm" must be an object with {", ".join(KEYS)}')
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: slurm.{unknown[0]}: unknown key (expected one of {', '.join(KEYS)})")
    return validate(SlurmOptions(**raw), where)


def validate(opts: SlurmOptions, where: str) -> SlurmOptions:
    """`where` is the config file, or "command line" (then errors name the --flag)."""

    def label(name: str) -> str:
        return f"--{name.replace('_', '-')}" if where == "command line" else f"{where}: slurm.{name}"

    for name in ("nodes", "gpus_per_node", "procs_per_node", "cpus_per_task"):
        value = getattr(opts, name)
        if value is None:
            continue
        minimum = 0 if name == "gpus_per_node" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{label(name)} {value!r}: expected an integer >= {minimum}")
    if opts.procs_per_node and opts.gpus_per_node and opts.procs_per_node > opts.gpus_per_node:
        # Each worker takes the GPU of its local rank: more workers than GPUs would fail on the node.
        raise ConfigError(
            f"{label('procs_per_node')} {opts.procs_per_node}: more than the {opts.gpus_per_node} GPUs "
            "per node (one process per GPU)"
        )
    if opts.time is not None and (not isinstance(opts.time, str) or not _TIME.match(opts.time)):
        raise ConfigError(f"{label('time')} {opts.time!r}: expected HH:MM:SS (or D-HH:MM:SS, MM)")
    for name in ("partition", "account"):
        value = getattr(opts, name)
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            raise ConfigError(f"{label(name)} {value!r}: expected a Slurm name (letters, digits, _ . , - +)")
    return opts


def as_dict(opts: SlurmOptions) -> dict[str, Any]:
    return {f.name: getattr(opts, f.name) for f in fields(opts)}
