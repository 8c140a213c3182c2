"""Data parallelism under torchrun: process group, model wrapping, batch sharding, rank-0-only writes.

The trainer calls `setup()` once and then goes through the returned `Dist` for everything that
differs between one process and many. Outside torchrun (or with WORLD_SIZE=1) every method is a
no-op or the identity, so the single-process path runs exactly the same code.

Sharding keeps the global batch equal to the single-process batch: every rank builds the same
batch (batches are a pure function of the data seed and the step) and keeps rows rank::world.
DDP averages the gradients, and the per-rank mean losses are averaged for logging, so with equal
shards the optimizer sees what one process would see and the logged loss curve is the same one.

`parallel="fsdp"` shards the parameters, gradients and optimizer state over the ranks instead of
replicating them (launch/fsdp.py); the data sharding, and so the loss curve, is the same as DDP's.
`parallel="fsdp+ep"` is FSDP with expert parallelism: each rank holds a 1/W slice of every MoE
layer's FFN experts, whole, and tokens are sent to their experts by all-to-all
(launch/expert_parallel.py); the rest is sharded as under "fsdp". Same data sharding, same curve.
Checkpoints are gathered into the single-process format either way.

Known differences from one process, documented in docs/REMOTE.md: the load-balancing loss is
computed per rank on its shard (as Megatron and most MoE trainers do), and routing.jsonl
statistics come from rank 0's shard.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from moelab.errors import ConfigError

T = TypeVar("T")
FAILURE_STATUSES = ("failed", "diverged")
Parallel = Literal["ddp", "fsdp", "fsdp+ep"]


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallel: Parallel = "ddp"
    # FSDP's gathered-parameter dtype (bf16 with fp32 reduction), None for fp32: the run's mixed_precision.
    param_dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        """FSDP (with or without EP): parameters live in shards, so every forward pass is a collective
        all ranks must join."""
        return self.enabled and self.parallel in ("fsdp", "fsdp+ep")

    @property
    def expert_parallel(self) -> bool:
        return self.enabled and self.parallel == "fsdp+ep"

    @property
    def build_device(self) -> torch.device:
        """Where to build or load the full model: on the CPU under FSDP (a model that does not fit one
        GPU must not be put on one whole); `wrap` then moves each rank's shards to `device`."""
        return torch.device("cpu") if self.sharded else self.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- model and data ---------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to call for training forward passes. Checkpoints and eval keep using `model`."""
        # DDP's no_sync must cover the forward pass: that is where DDP decides whether the coming
        # backward all-reduces, so `no_sync` below wraps the forward only.
        # Under FSDP the model is sharded in place and is itself the module to call: build the
        # optimizer after `wrap`, over the sharded parameters.
        if not self.enabled:
            return model
        # MoE experts that get no token in a batch have no gradient: DDP and FSDP must be told to expect that.
        is_moe = getattr(getattr(model, "config", None), "moe", None) is not None
        if self.sharded:
            from torch.distributed.fsdp import FSDPModule

            from moelab.launch import fsdp

            if isinstance(model, FSDPModule):  # sharded before its weights existed (launch/sharded_init.py)
                return model
            ignored: set[torch.nn.Parameter] = set()
            if self.expert_parallel:
                from moelab.launch import expert_parallel

                ignored = expert_parallel.parallelize(model, self.device, self.param_dtype)
            sharded = fsdp.shard(model, self.device, self.param_dtype, ignored)
            if is_moe:
                sharded.set_reduce_scatter_unused_params(True)  # type: ignore[operator]
            return sharded
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=is_moe)

    def check_batch(self, batch_size: int) -> None:
        if self.enabled and batch_size % self.world_size:
            raise ConfigError(
                f"batch_size: {batch_size} is not divisible by the {self.world_size} data-parallel "
                f"processes (the global batch must split evenly to match a single-process run)"
            )

    def shard(self, batch: torch.Tensor, rows: list[str]) -> tuple[torch.Tensor, list[str]]:
        """This rank's rows of the global batch."""
        if not self.enabled:
            return batch, rows
        return batch[self.rank :: self.world_size], rows[self.rank :: self.world_size]

    def no_sync(self, wrapped: torch.nn.Module, last_micro: bool) -> AbstractContextManager[Any]:
        """Gradient accumulation: all-reduce only on the last micro-batch of a step."""
        # FSDP (no `no_sync`) reduce-scatters every micro-batch on purpose: deferring it would keep
        # the full unsharded gradients of the whole model on every rank, which is what FSDP avoids.
        from torch.nn.parallel import DistributedDataParallel

        if self.enabled and not last_micro and isinstance(wrapped, DistributedDataParallel):
            return wrapped.no_sync()
        return nullcontext()

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> torch.Tensor:
        """Clips to the global gradient norm and returns it (under FSDP, over all ranks' shards), as
        a tensor on the device: the trainer reads it to the host with the step's losses, in one sync."""
        if self.expert_parallel:  # the experts' gradients are on their own device mesh
            from moelab.launch import expert_parallel

            return expert_parallel.clip_grad_norm(model.parameters(), max_norm)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if self.sharded:
            from moelab.launch import fsdp

            norm = fsdp.full_norm(norm)
        return norm

    # ---- checkpoint state ------------------------------------------------------------------------

    def full_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The unsharded model and optimizer state dicts, as one process has them, for rank 0 to save.
        Under FSDP a collective (every rank calls it, before `on_main`) whose result only rank 0 gets."""
        if not self.sharded:
            return model.state_dict(), optimizer.state_dict()
        from moelab.launch import fsdp

        return fsdp.full_model_state(model), fsdp.full_optimizer_state(model, optimizer)

    def load_optimizer_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, read: Callable[[], dict[str, Any]]
    ) -> None:
        """Restores a saved `optimizer.state_dict()`; under FSDP rank 0 `read`s it and scatters the shards."""
        if not self.sharded:
            optimizer.load_state_dict(read())
            return
        from moelab.launch import fsdp

        fsdp.load_optimizer_state(model, optimizer, read() if self.is_main else None)

    # ---- collectives for logging and control -------------------------------------------------

    def mean(self, values: list[float]) -> list[float]:
        """Averages scalars over ranks (equal shards: the mean of means is the global mean)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: ranks must agree to stop at the same step."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather_lists(self, by_key: dict[str, list[float]]) -> dict[str, list[float]]:
        """Merges per-rank {key: [values]} (per-domain row losses) into the global one."""
        if not self.enabled:
            return by_key
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, by_key)
        merged: dict[str, list[float]] = {}
        for part in parts:
            for k, v in part.items():
                merged.setdefault(k, []).extend(v)
        return dict(sorted(merged.items()))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    # ---- rank-0-only side effects ------------------------------------------------------------

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Runs `fn` on rank 0 only (checkpoint saves), with barriers so that no rank runs ahead
        of a checkpoint or reads one before it is complete."""
        self.barrier()
        result = fn() if self.is_main else None
        self.barrier()
        return result

    def on_main_sharing(
        self, write: Callable[[Callable[[Any], None]], T], collective: Callable[[Any], None]
    ) -> T | None:
        """Runs `write(share)` on rank 0, where `share(x)` sends `x` (a checkpoint's temporary folder)
        to every rank and all ranks then run `collective(x)` together (each writes its shards there);
        barriers as in `on_main`."""
        self.barrier()
        if self.is_main:

            def share(x: Any) -> None:
                self._broadcast(x)
                collective(x)

            result = write(share)
        else:
            collective(self._broadcast(None))
            result = None
        self.barrier()
        return result

    def _broadcast(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_only(self, make: Callable[[], T]) -> T:
        """`make()` on rank 0; on other ranks an object whose every method does nothing (log writers)."""
        return make() if self.is_main else _Discard()  # type: ignore[return-value]

    def guard_run_dir(self, run_dir: T) -> T:
        """run.json is rank 0's, except that any rank records its own failure, with its rank: rank 0
        may be blocked in a collective waiting for the failed rank and never get to write it."""
        return run_dir if self.is_main else _WorkerRunDir(run_dir, self.rank)  # type: ignore[return-value]

    def _comm_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


class _Discard:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


class _WorkerRunDir:
    def __init__(self, run_dir: Any, rank: int) -> None:
        self._rd, self._rank = run_dir, rank

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rd, name)

    def save(self) -> None:
        pass

    def set_status(self, status: str, error: str | None = None) -> None:
        if status in FAILURE_STATUSES:
            self._rd.set_status(status, f"rank {self._rank}: {error}")


_current: Dist | None = None
_told_unsharded = False


def setup(device: torch.device, parallel: Parallel = "ddp") -> Dist:
    """Joins the torchrun process group (once per process) and returns this rank's view.
    `device` is what the config asked for; on CUDA each rank takes the GPU of its LOCAL_RANK."""
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if parallel != "ddp":
            _tell_unsharded(parallel)
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if _current is None:
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            timeout = timedelta(seconds=float(os.environ.get("MOELAB_DIST_TIMEOUT_S", "1800")))
            dist.init_process_group(backend=backend, timeout=timeout)
            atexit.register(_teardown)
        _current = Dist(rank=rank, world_size=world, local_rank=local_rank, device=device)
    # The process group outlives one run (a pipeline trains its stages in one process); the
    # parallelism is each run's own.
    _current.parallel = parallel
    return _current


def _tell_unsharded(parallel: Parallel) -> None:
    # A config written for a cluster still runs on a laptop: one note, not an error per stage.
    global _told_unsharded
    if not _told_unsharded:
        print(
            f"moelab: parallel={parallel} needs torchrun with several processes; training unsharded in this one",
            file=sys.stderr,
            flush=True,
        )
        _told_unsharded = True


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
