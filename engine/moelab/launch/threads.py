"""torch's CPU threads for a training run: how many, and an OpenMP wait that does not spin.

On a busy machine, threads that outnumber the idle CPUs and spin while they wait (OpenMP's default
between parallel regions) fight the other work for the cores: beside one CPU-bound process on two
cores, the demo's training fell from about 9k to 0.3-0.5k tokens/s with two spinning threads, and ran
at 3.1-3.4k with one thread that sleeps when idle. So, unless the user chose (a config's `threads`, or
OMP_NUM_THREADS, which torchrun sets to 1 per rank): as many threads as the model's matmuls can use,
and no more than the CPUs other work leaves idle; and OpenMP's idle workers sleep
(OMP_WAIT_POLICY=PASSIVE, read once when torch loads OpenMP: the CLI sets it before importing torch).

Nothing here imports torch: the CLI calls `quiet_wait_policy` first thing, the trainer applies the choice.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Work one thread should get from a matmul before a second thread pays for its fork, join and cache
# traffic: ~33 MFLOP, a millisecond or more of one core. Below it, more threads do not help.
MIN_GEMM_FLOPS_PER_THREAD = 2**25
# The `threads` field of train configs and experiments.
THREADS_HELP = (
    "torch CPU threads; 0 = OMP_NUM_THREADS when set, else chosen from the model's size and the idle CPUs"
)


@dataclass(frozen=True)
class Machine:
    cpus: int  # the cores this process may use (affinity, a cgroup quota; hyperthreads count once)
    busy: float  # how many of them other work keeps busy (the load, scaled to our share of the host)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quiet_wait_policy(environ: MutableMapping[str, str] = os.environ) -> None:
    """Idle OpenMP workers sleep instead of spinning against other work, unless the user chose a policy.
    Only effective before torch (and its OpenMP) is loaded."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def gemm_flops(hidden_size: int, tokens: int) -> float:
    """FLOPs of the model's typical matmul: a hidden × hidden projection of one micro-batch's tokens."""
    return 2.0 * tokens * hidden_size * hidden_size


def choose_threads(requested: int, env_threads: str | None, gemm: float, machine: Machine) -> ThreadChoice:
    """The intra-op thread count and why: `requested` (a config's `threads`, 0 = choose) first, then
    OMP_NUM_THREADS, else min(what the model's matmuls can use, the CPUs idle)."""
    if requested > 0:
        return ThreadChoice(requested, f"threads={requested} in the config")
    env_n = _leading_int(env_threads)
    if env_n is not None and env_n > 0:
        return ThreadChoice(env_n, f"OMP_NUM_THREADS={env_threads}")
    useful = max(1, int(gemm // MIN_GEMM_FLOPS_PER_THREAD))
    idle = max(1, machine.cpus - round(machine.busy))
    mflop = f"{gemm / 1e6:.3g} MFLOP"
    load = f"{idle} of {machine.cpus} CPUs idle (load {machine.busy:.1f})"
    if useful <= idle:
        if useful == 1:
            return ThreadChoice(1, f"the model's matmuls ({mflop}) are too small for more threads to help")
        return ThreadChoice(useful, f"as many as the model's matmuls ({mflop}) can use; {load}")
    return ThreadChoice(idle, f"{load}; the model's matmuls ({mflop}) could use {useful}")


@functools.cache
def measure_machine() -> Machine:
    """Once per process: a pipeline's later stages must not count the load of its own earlier ones."""
    allowed = _affinity_cpus()
    cpus = min(_physical_cores(allowed) or len(allowed), _cgroup_cpus() or 1 << 30)
    host = os.cpu_count() or cpus
    return Machine(cpus=cpus, busy=_host_busy() * cpus / host)


def _leading_int(value: str | None) -> int | None:
    """OMP_NUM_THREADS is a number or a nested list ("4,2"): its first level."""
    try:
        return int((value or "").split(",")[0])
    except ValueError:
        return None


def _affinity_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _physical_cores(cpus: set[int]) -> int | None:
    """The cores under `cpus` (Linux sysfs): two hyperthreads of one core share its matmul units, so a
    second thread there does not help (torch's own default is the physical core count too)."""
    cores: set[tuple[str, str]] = set()
    for n in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{n}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return None
    return len(cores) or None


def _cgroup_cpus() -> int | None:
    """A container's CPU quota (cgroup v2 cpu.max: "<quota> <period>" or "max <period>"), rounded up."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def _host_busy() -> float:
    """The host's busy CPUs: the larger of the 1-minute load average and the processes runnable right now
    besides this one (/proc/loadavg's 4th field counts them; the average lags a load that just began)."""
    getloadavg = getattr(os, "getloadavg", None)  # none on Windows
    try:
        average = getloadavg()[0] if getloadavg else 0.0
    except OSError:
        average = 0.0
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        running = 0
    return max(average, float(running))
