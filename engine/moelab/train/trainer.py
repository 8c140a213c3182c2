"""The training loop: one run directory, from scratch, from a checkpoint, or resumed from `latest`.

Determinism: every batch is a function of (data seed, step), the model has no dropout, and the
optimizer and RNG states are checkpointed, so on CPU a run killed with SIGKILL and resumed logs
exactly the losses an uninterrupted run logs.

Compute: every metrics record and run.json carry "flops", the training FLOPs executed so far
(models/flops.py: the matmuls and causal attention a step runs, forward + backward = 3× forward;
evaluation and the saturation probe are not training compute and are not counted). It continues
across resumes from the checkpoint's trainer state.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from moelab.data.mixture import MixtureSampler, build_domains
from moelab.data.packing import eval_windows
from moelab.data.tokenizer import Tokenizer, load_tokenizer
from moelab.errors import ConfigError, MoELabError
from moelab.io import dcp_file
from moelab.io.checkpoint import load_model, read_config_dict
from moelab.launch import dcp_state, distributed, threads
from moelab.launch.sharded_init import load_sharded
from moelab.models.aux_losses import load_balancing_loss, z_loss
from moelab.models.config import DENSE_TYPES
from moelab.models.flops import train_flops
from moelab.models.model import MoELabForCausalLM
from moelab.train import checkpointing as ck
from moelab.train import jsoncfg, levers, testhooks
from moelab.train.config import TrainConfig, default_seed_model
from moelab.train.evaluate import RoutingStats, evaluate, summary
from moelab.train.freeze import apply_freeze
from moelab.train.progress import Progress
from moelab.train.rundir import RunDir, read_run_json, write_json_atomic
from moelab.train.runlog import JsonlWriter, truncate_after
from moelab.train.saturation import SaturationProbe, is_saturation_record, probe_batch
from moelab.train.schedule import lr_at
from moelab.train.trackers import MetricsLog, open_sinks


class TrainingDiverged(MoELabError):
    """The loss became NaN or infinite; the run is marked `diverged` and its last good checkpoint kept."""


@dataclass
class TrainResult:
    status: Literal["done", "stopped"]
    checkpoint: Path | None  # the newest complete checkpoint
    step: int


def resolve_device(name: str) -> torch.device:
    """`auto` takes MOELAB_DEVICE when set (the extension's `moelab.device` setting), else CUDA
    where torch sees a GPU, else the CPU."""
    source = "device"
    if name == "auto" and os.environ.get("MOELAB_DEVICE", "auto") != "auto":
        name, source = os.environ["MOELAB_DEVICE"], "MOELAB_DEVICE"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source}: 'cuda' was asked for but torch sees no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{source}: 'mps' was asked for but torch sees no Apple GPU")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{source}: {name!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None


class _StopFlag:
    """SIGTERM / SIGINT / SIGHUP set a flag the loop checks after each step: it then checkpoints and
    stops. SIGHUP too, because closing the terminal of a task or an ssh session sends it."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_is_done(run_dir: Path) -> Path | None:
    """The final checkpoint of a finished run, or None."""
    info = read_run_json(run_dir)
    if info and info.get("status") == "done":
        return ck.latest_checkpoint(Path(run_dir) / "checkpoints")
    return None


def train(cfg: TrainConfig, quiet: bool = False) -> TrainResult:
    cfg.validate()
    run_path = Path(cfg.out) / cfg.run_id
    done = run_is_done(run_path)
    if done is not None:
        print(f"[{cfg.run_id}] already done ({done.name}); skipping", file=sys.stderr, flush=True)
        return TrainResult("done", done, int(done.name.split("-")[1]))
    trainer = Trainer(cfg, run_path, quiet)
    return trainer.run()


@dataclass
class _PendingSave:
    """An asynchronous DCP checkpoint being written: rank 0's temp folder (None on the other ranks),
    its step, the FLOPs to record with it, and this rank's write."""

    tmp: Path | None
    step: int
    flops: float | None
    written: Future[Any]


@dataclass
class _Measured:
    """What one optimizer step measured, on the host. Every step: the loss (mean over micro-batches
    and ranks), the auxiliary loss (summed over micro-batches, for the divergence check) and the
    gradient norm. A logged step also: the load-balancing and z-losses (means over routers,
    micro-batches and ranks; None without routers), the per-row losses by domain and the routing."""

    lr: float
    loss: float
    aux: float
    grad_norm: float
    logged: bool
    lb_loss: float | None = None
    z_loss: float | None = None
    by_domain: dict[str, list[float]] = field(default_factory=dict)
    routing: RoutingStats | None = None


class _StepLosses:
    """A step's losses, kept on the device while its micro-batches run and read to the host in one
    transfer after them. A read (`.item()`, `float()`, `.tolist()`) waits for the device to finish
    everything queued so far: one per router and micro-batch would stall a GPU many times a step.
    The load-balancing and z-losses and the per-row losses are kept on logged steps only."""

    def __init__(self, log_now: bool) -> None:
        self.log_now = log_now
        self.ce: list[torch.Tensor] = []
        self.aux: list[torch.Tensor] = []
        self.lb: list[torch.Tensor] = []
        self.z: list[torch.Tensor] = []
        self.row_loss: list[torch.Tensor] = []
        self.rows: list[list[str]] = []
        self.routing = RoutingStats() if log_now else None

    def add_router(self, lb: torch.Tensor, z: torch.Tensor) -> None:
        if self.log_now:
            self.lb.append(lb.detach())
            self.z.append(z.detach())

    def add_micro(self, ce: torch.Tensor, aux: torch.Tensor, tok_loss: torch.Tensor, rows: list[str]) -> None:
        self.ce.append(ce.detach())
        self.aux.append(aux.detach())
        if self.log_now:
            self.row_loss.append(tok_loss.detach().mean(dim=1))
            self.rows.append(rows)

    def read(self, grad_norm: torch.Tensor, lr: float, dist: distributed.Dist) -> _Measured:
        """The step's one host sync. Every step, not only logged ones: a NaN loss or gradient must
        be caught before `optimizer.step()` applies it, and the progress bar shows the loss."""
        n, k = len(self.ce), len(self.lb)
        # Every value is float32 or narrower, so the cast is exact; the sums below run in Python
        # in the order of the per-value reads they replace, so the logged numbers are unchanged.
        scalars = [*self.ce, *self.aux, grad_norm.to(self.ce[0].device), *self.lb, *self.z]
        values = iter(torch.cat([torch.stack([s.float() for s in scalars]), *self.row_loss]).tolist())
        ce, aux, norm = list(islice(values, n)), list(islice(values, n)), next(values)
        lb, z = list(islice(values, k)), list(islice(values, k))  # then the per-row losses
        means = dist.mean([sum(ce), sum(aux)] + ([sum(lb), sum(z)] if self.log_now else []))  # over ranks
        m = _Measured(lr, means[0] / n, means[1], norm, self.log_now, routing=self.routing)
        if self.log_now:
            if k:
                m.lb_loss, m.z_loss = means[2] / k, means[3] / k
            by_domain: dict[str, list[float]] = {}
            for rows in self.rows:
                for d in rows:
                    by_domain.setdefault(d, []).append(next(values))
            m.by_domain = dist.gather_lists(by_domain)
        return m


class _Clock:
    """Wall time: the run's total across resumes (`state.elapsed`), the token rate since the last
    logged step (metrics) and the token rate over this session (the progress bar)."""

    def __init__(self, state: ck.TrainerState) -> None:
        self._elapsed0, self._tokens0 = state.elapsed, state.tokens
        self._start = self._window = time.monotonic()
        self._window_tokens = 0

    def tick(self, state: ck.TrainerState, tokens: int) -> None:
        self._window_tokens += tokens
        state.elapsed = self._elapsed0 + (time.monotonic() - self._start)

    def window_rate(self) -> float:
        """Tokens per second since the last call (or the start), and a new window from now."""
        now = time.monotonic()
        rate = self._window_tokens / max(1e-9, now - self._window)
        self._window, self._window_tokens = now, 0
        return rate

    def session_rate(self, state: ck.TrainerState) -> float:
        return (state.tokens - self._tokens0) / max(1e-9, state.elapsed - self._elapsed0)


class Trainer:
    """One run directory's training: `run()` sets up, then loops over named steps (train step, log,
    eval, checkpoint) until the last step or a stop signal."""

    # Set by _setup(), the first thing _run() does.
    model: MoELabForCausalLM
    fwd: torch.nn.Module  # `model` wrapped for the training steps (DDP / FSDP)
    tok: Tokenizer
    meta: dict[str, Any]
    sampler: MixtureSampler
    eval_sets: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    state: ck.TrainerState
    tokens_per_step: int
    flops_per_step: float
    probe: SaturationProbe | None
    probe_inputs: torch.Tensor
    autocast: contextlib.AbstractContextManager[Any]
    metrics: MetricsLog
    routing_log: JsonlWriter
    progress: Progress | None
    last_ckpt: Path | None  # the newest complete checkpoint
    pending: _PendingSave | None = None  # an asynchronous checkpoint being written (async_checkpoint)
    ckpt_group: Any = None  # the async checkpoints' process group (torchrun), made at the first one
    clock: _Clock

    def __init__(self, cfg: TrainConfig, run_path: Path, quiet: bool) -> None:
        self.cfg, self.quiet = cfg, quiet
        self.dist = distributed.setup(resolve_device(cfg.device), cfg.parallel)  # a no-op outside torchrun
        self.dist.check_batch(cfg.batch_size)
        self.device = self.dist.device  # cuda:LOCAL_RANK under torchrun
        self.rd = self.dist.guard_run_dir(
            RunDir(
                run_path,
                cfg.run_id,
                cfg.stage,
                method=cfg.method,
                parents=cfg.parents,
                config=jsoncfg.to_dict(cfg),
                experiment=cfg.experiment,
                total_steps=cfg.steps,
            )
        )
        self.ckpt_root = run_path / "checkpoints"
        self.resume_from = ck.latest_checkpoint(self.ckpt_root)
        self.source: Path | None = None
        self.hooks = testhooks.from_env()  # off unless a test sets MOELAB_TEST_HOOKS

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        run = self.rd
        try:
            return self._run()
        except TrainingDiverged:
            raise
        except KeyboardInterrupt:
            run.set_status("stopped", "interrupted")
            raise
        except BaseException as e:
            run.set_status("failed", str(e) or type(e).__name__)
            raise

    def _run(self) -> TrainResult:
        self._setup()
        try:
            with _StopFlag() as stop:
                while self.state.step < self.cfg.steps:
                    measured = self._train_step()
                    self._log(measured)
                    self._maybe_eval()
                    self.hooks.pause()
                    stopping = self.dist.any(stop.signal is not None)  # all ranks stop at the same step
                    self._maybe_checkpoint(force=stopping)
                    self.hooks.crash(self.state.step)
                    if stopping:
                        return self._stopped(stop.signal)
        finally:
            self._close_logs()
        return self._finish()

    # ---- setup ----------------------------------------------------------------------------------

    def _build_model(self) -> tuple[MoELabForCausalLM, Tokenizer, dict[str, Any]]:
        cfg = self.cfg
        src = self.resume_from or (Path(cfg.init) if cfg.init else None)
        self.source = src  # its tokenizer and generation files go into every checkpoint
        self.dist.param_dtype = levers.compute_dtype(cfg.mixed_precision, self.device)
        if src is not None and self.dist.sharded:
            # Sharded before any weight exists; each rank reads its own rows (launch/sharded_init.py).
            model = load_sharded(src, self.device, shard=self.dist.wrap, prepare=self._prepare)
        elif src is not None:
            model = self._prepare(load_model(src, device=self.dist.build_device))
        else:
            model = self._prepare(self._new_model(self.dist.build_device))
        meta = dict(read_config_dict(src).get("moelab") or {}) if src is not None else {}
        tok = load_tokenizer(src, model.config.vocab_size, model.config.eos_token_id)
        meta.update({"run_id": cfg.run_id, "stage": cfg.stage})
        if model.config.moe is not None:
            # The α and β this MoE trained with: an export to Mixtral maps α to router_aux_loss_coef.
            meta.update(
                {"load_balancing": jsoncfg.to_dict(cfg.load_balancing), "z_loss": jsoncfg.to_dict(cfg.z_loss)}
            )
        if cfg.method:
            meta.setdefault("method", cfg.method)
        self._set_threads(model.config.hidden_size)
        return model.train(), tok, meta

    def _new_model(self, device: torch.device) -> MoELabForCausalLM:
        mcfg = self.cfg.model or default_seed_model()
        if mcfg.parallel_block and mcfg.model_type in DENSE_TYPES:
            mcfg.model_type = "moelab"  # only moelab's config.json records a parallel block
        if mcfg.moe is not None:
            mcfg.model_type = "moelab" if mcfg.model_type in DENSE_TYPES else mcfg.model_type
        torch.manual_seed(self.cfg.seed)
        return MoELabForCausalLM(mcfg).to(device)

    def _prepare(self, model: MoELabForCausalLM) -> MoELabForCausalLM:
        """What must be decided before the model is wrapped or sharded: MoE options, frozen parameters
        (DDP and FSDP must see which take no gradient), the memory and speed levers."""
        cfg = self.cfg
        if cfg.capacity_factor is not None or cfg.router_jitter_noise is not None:
            model.set_moe_options(cfg.capacity_factor, cfg.router_jitter_noise)
        self.rd.info["freeze"] = apply_freeze(model, cfg.freeze).to_dict()
        levers.apply(model, cfg.activation_checkpointing, cfg.compile)
        return model

    def _set_threads(self, hidden_size: int) -> None:
        """torch's CPU threads for this run (launch/threads.py), recorded in run.json and said once."""
        cfg = self.cfg
        choice = threads.choose_threads(
            cfg.threads,
            os.environ.get("OMP_NUM_THREADS"),
            threads.gemm_flops(hidden_size, cfg.batch_size * cfg.data.seq_len),
            threads.measure_machine(),
        )
        torch.set_num_threads(choice.threads)
        self.rd.info["threads"] = choice.to_dict()
        self._say(f"[{cfg.run_id}] {choice.threads} CPU thread{'s' * (choice.threads > 1)}: {choice.reason}")

    def _optimizer(self, model: MoELabForCausalLM) -> torch.optim.Optimizer:
        # Weight decay on matrices only (nanoGPT): norms' gains are not decayed.
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=self.device.type == "cuda"
        )

    def _setup(self) -> None:
        cfg, main = self.cfg, self.dist.is_main
        self.model, self.tok, self.meta = self._build_model()
        self.sampler, self.eval_sets = self._build_data()
        self.fwd = self.dist.wrap(self.model)  # DDP for training steps; `model` for eval and checkpoints
        self.optimizer = self._optimizer(self.model)  # after `wrap`: FSDP replaces the parameters with shards
        self.state = self._restore_or_start()
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.data.seq_len
        self.flops_per_step = train_flops(
            self.model.config, cfg.batch_size * cfg.grad_accum, cfg.data.seq_len
        )
        if self.state.flops is None:  # a checkpoint from before the count: every step so far cost the same
            self.state.flops = self.state.step * self.flops_per_step
        self.rd.info["flops_per_token"] = self.flops_per_step / self.tokens_per_step
        self.rd.info["flops"] = self.state.flops
        self.rd.set_status("running")
        if cfg.async_checkpoint and not (
            cfg.checkpoint_format == "dcp" or (cfg.checkpoint_format == "auto" and self.dist.sharded)
        ):
            self._say(
                f"[{cfg.run_id}] async_checkpoint: this run's checkpoints are safetensors, written "
                "synchronously (asynchronous writes need DCP: checkpoint_format dcp, or auto under FSDP)"
            )
        # Rank 0 keeps the probe's history, but under FSDP its forward pass needs every rank.
        moe = self.model.config.moe is not None
        self.probe = SaturationProbe(self.state.probe) if moe and (main or self.dist.sharded) else None
        self.probe_inputs = probe_batch(self.eval_sets)
        # Under FSDP its MixedPrecisionPolicy casts the gathered parameters; elsewhere autocast does.
        self.autocast = levers.autocast(None if self.dist.sharded else self.dist.param_dtype, self.device)
        self._open_logs()
        self.last_ckpt = self.resume_from
        self.clock = _Clock(self.state)

    def _build_data(self) -> tuple[MixtureSampler, dict[str, torch.Tensor]]:
        cfg = self.cfg
        domains = build_domains(cfg.data, self.tok)
        weights = {s.domain: s.weight for s in cfg.data.sources}
        if cfg.domains:
            weights = {d: (w if d in cfg.domains else 0.0) for d, w in weights.items()}
        sampler = MixtureSampler(
            {d: t.train for d, t in domains.items()}, weights, cfg.data.seq_len, cfg.batch_size, cfg.data.seed
        )
        eval_sets = {
            d: eval_windows(t.eval, cfg.data.seq_len, cfg.eval_batches * cfg.batch_size)
            for d, t in domains.items()
        }
        return sampler, eval_sets

    def _restore_or_start(self) -> ck.TrainerState:
        """The resumed checkpoint's trainer state (logs cut back to its step), or step 0 in a run
        directory cleared of an earlier attempt's logs and checkpoints. Only rank 0 writes the run
        directory."""
        main = self.dist.is_main
        if self.resume_from is not None:
            ckpt = self.resume_from
            load_optimizer: ck.OptimizerLoader = (
                (lambda _read: dcp_state.load_optimizer(ckpt, self.model, self.optimizer))
                if dcp_file.is_dcp(ckpt)
                else partial(self.dist.load_optimizer_state, self.model, self.optimizer)
            )
            state = ck.load_trainer_state(ckpt, self.optimizer, load_optimizer)
            if main:
                truncate_after(self.rd.file("metrics.jsonl"), state.step)
                # Saturation records are written at the end from the final routing: a run killed
                # after writing them redoes them, so they must not survive as duplicates.
                truncate_after(
                    self.rd.file("routing.jsonl"), state.step, keep=lambda r: not is_saturation_record(r)
                )
            self._say(f"[{self.cfg.run_id}] resuming from {self.resume_from.name}")
            return state
        if main:
            for name in ("metrics.jsonl", "routing.jsonl", "eval.json"):
                self.rd.file(name).unlink(missing_ok=True)
            for old in self.ckpt_root.glob("step-*"):
                shutil.rmtree(old, ignore_errors=True)
        return ck.TrainerState(step=0, tokens=0, elapsed=0.0, flops=0.0)

    def _open_logs(self) -> None:
        cfg, run = self.cfg, self.rd
        sinks = partial(
            open_sinks,
            cfg.loggers,
            run.path,
            cfg.run_id,
            jsoncfg.to_dict(cfg),
            resume_step=self.state.step,
            experiment=cfg.experiment,
            stage=cfg.stage,
        )
        self.metrics = self.dist.main_only(lambda: MetricsLog(run.file("metrics.jsonl"), sinks()))
        self.routing_log = self.dist.main_only(lambda: JsonlWriter(run.file("routing.jsonl")))
        show = not self.quiet and self.dist.is_main
        self.progress = Progress(cfg.run_id, cfg.steps, self.state.step) if show else None

    def _close_logs(self) -> None:
        self.metrics.close()
        self.routing_log.close()
        if self.progress:
            self.progress.close()

    # ---- one step -------------------------------------------------------------------------------

    def _train_step(self) -> _Measured:
        """One optimizer step over `grad_accum` micro-batches, then the step's counters advance."""
        cfg, state = self.cfg, self.state
        step = state.step  # 0-based index of the step being taken
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        log_now = (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps
        losses = _StepLosses(log_now)
        for micro in range(cfg.grad_accum):
            self._micro_batch(step, micro, losses)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = self.dist.clip_grad_norm(self.model, clip)
        measured = losses.read(grad_norm, lr, self.dist)
        self._check_finite(step + 1, measured)  # before the update: the checkpoints stay good
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += self.tokens_per_step
        assert state.flops is not None  # derived when the run started, for checkpoints from before the count
        state.flops += self.flops_per_step
        self.clock.tick(state, self.tokens_per_step)
        return measured

    def _micro_batch(self, step: int, micro: int, losses: _StepLosses) -> None:
        """Forward and backward on one micro-batch; its losses stay on the device in `losses`."""
        cfg = self.cfg
        batch, rows = self.dist.shard(*self.sampler.batch(step, micro))  # rows rank::world
        batch = batch.to(self.device)
        with self.autocast, self.dist.no_sync(self.fwd, micro == cfg.grad_accum - 1):
            out = self.fwd(batch[:, :-1])
        tok_loss = F.cross_entropy(
            out.logits.float().reshape(-1, out.logits.shape[-1]),
            batch[:, 1:].reshape(-1),
            reduction="none",
        ).view(len(rows), -1)
        ce = self.hooks.poison(tok_loss.mean(), step + 1)
        aux = ce.new_zeros(())
        for r in out.router_logits:
            lb, z = load_balancing_loss(r), z_loss(r)
            aux = aux + getattr(cfg.load_balancing, r.kind) * lb + getattr(cfg.z_loss, r.kind) * z
            losses.add_router(lb, z)
        ((ce + aux) / cfg.grad_accum).backward()
        losses.add_micro(ce, aux, tok_loss, rows)
        if losses.routing is not None and out.router_logits:
            losses.routing.add(out.router_logits, rows)

    def _check_finite(self, step: int, m: _Measured) -> None:
        for what, value in (("loss", m.loss), ("auxiliary loss", m.aux), ("gradient norm", m.grad_norm)):
            if not math.isfinite(value):
                self._diverged(step, value, what)

    # ---- after a step ---------------------------------------------------------------------------

    def _log(self, m: _Measured) -> None:
        """A logged step's metrics record, routing records and saturation probe; the progress bar
        every step (it throttles its redraws)."""
        state = self.state
        if m.logged:
            self.metrics.write(
                {
                    "step": state.step,
                    "tokens": state.tokens,
                    "time": round(state.elapsed, 3),
                    "flops": state.flops,
                    "split": "train",
                    "loss": m.loss,
                    "lr": m.lr,
                    "lb_loss": m.lb_loss,
                    "z_loss": m.z_loss,
                    "grad_norm": m.grad_norm,
                    "tokens_per_s": round(self.clock.window_rate(), 1),
                    "domain": {d: sum(v) / len(v) for d, v in sorted(m.by_domain.items())},
                }
            )
            if m.routing:
                for rec in m.routing.records(state.step):
                    self.routing_log.write(rec)
            if self.probe is not None:
                self.probe.record(self.model, self.probe_inputs, state.step, self.autocast)
        if self.progress:  # the rate over this session
            self.progress.update(state.step, m.loss, self.clock.session_rate(state))

    def _maybe_eval(self) -> None:
        state = self.state
        if state.step % self.cfg.eval_every == 0 or state.step == self.cfg.steps:
            self._eval()

    def _maybe_checkpoint(self, force: bool) -> None:
        step = self.state.step
        if self.pending is not None and self.pending.written.done():
            self._publish()  # without waiting: the background write is over
        if step % self.cfg.ckpt_every == 0 or step == self.cfg.steps or force:
            self.metrics.sync()
            self.routing_log.sync()
            self._publish()  # at most one pending save
            # Forced (a stop signal) and final checkpoints stay synchronous: the run ends on them.
            if self.cfg.async_checkpoint and not force and step < self.cfg.steps and self._dcp_checkpoints():
                self.pending = self._save_async()
            else:
                self.last_ckpt = self._save()

    def _stopped(self, signum: int | None) -> TrainResult:
        """A signal stopped the run; the step's checkpoint is written."""
        step, last = self.state.step, self.last_ckpt
        assert last is not None  # _maybe_checkpoint(force=True) wrote it
        if self.progress:
            self.progress.message(f"[{self.cfg.run_id}] stopped at step {step}; checkpoint {last.name}")
        self.rd.set_status("stopped", f"stopped by signal {signum} at step {step}")
        return TrainResult("stopped", last, step)

    def _finish(self) -> TrainResult:
        """The final checkpoint (unless the loop wrote it), eval.json and the saturation records."""
        cfg, state = self.cfg, self.state
        self._publish()
        if self.last_ckpt is None or ck.ckpt_name(state.step) != self.last_ckpt.name:
            # steps == 0 (use the initial model as is) or a resume of an already finished loop.
            self.last_ckpt = self._save()
        final = evaluate(self.model, self.eval_sets, cfg.batch_size, self.device, self.autocast)
        if self.dist.is_main:
            write_json_atomic(
                self.rd.file("eval.json"),
                {
                    "run": cfg.run_id,
                    "step": state.step,
                    "checkpoint": self.last_ckpt.name,
                    "domains": final,
                    "average": summary(final),
                },
            )
            self._write_saturation(self.rd.file("routing.jsonl"), self.probe)
        self.rd.set_status("done")
        return TrainResult("done", self.last_ckpt, state.step)

    def _save(self) -> Path:
        """Writes a checkpoint (barriers around it) and returns its path on every rank: rank 0 writes it
        all, from the gathered state, or, in DCP format, every rank its own shards and rank 0 the rest."""
        model, optimizer, state = self.model, self.optimizer, self.state

        def write(weights: dict[str, torch.Tensor] | Any, optim: dict[str, Any] | None) -> None:
            ck.save_checkpoint(
                self.ckpt_root,
                model,
                weights,
                optim,
                state,
                self.tok,
                self.meta,
                self.cfg.keep_last,
                self.source,
            )
            self._record_flops(state.flops)

        if self._dcp_checkpoints():
            self.dist.on_main_sharing(
                lambda share: write(share, None), lambda tmp: dcp_state.save(tmp, model, optimizer)
            )
        else:
            weights, optim = self.dist.full_state(model, optimizer)  # under FSDP a gather all ranks join
            self.dist.on_main(lambda: write(weights, optim))
        return self.ckpt_root / ck.ckpt_name(state.step)

    def _save_async(self) -> _PendingSave:
        """A DCP checkpoint whose shards are staged now and written in the background; rank 0 writes
        the small files into its temp folder now too, and _publish commits it once written."""
        model, optimizer, state = self.model, self.optimizer, self.state
        if self.ckpt_group is None and self.dist.enabled:
            # The writer thread's collectives on a group of their own, so that they never interleave
            # with the training step's on the default group (gloo, as DCP's async_save requires).
            self.ckpt_group = torch.distributed.new_group(backend="gloo")
        written: list[Future[Any]] = []

        def shards(tmp: Path) -> None:
            written.append(dcp_state.save_async(tmp, model, optimizer, self.ckpt_group))

        tmp = self.dist.on_main_sharing(
            lambda share: ck.begin_checkpoint(
                self.ckpt_root, model, share, None, state, self.tok, self.meta, self.source
            ),
            shards,
        )
        return _PendingSave(tmp, state.step, state.flops, written[0])

    def _publish(self) -> None:
        """Waits for the pending asynchronous checkpoint, if any, and (rank 0) commits it: renamed into
        place, `latest` rewritten. No agreement between the ranks is needed: DCP's coordinator, rank 0,
        gathers every rank's write results (each after its files are written and synced) and then
        writes .metadata before any rank's future completes (torch.distributed.checkpoint's
        _save_state_dict: all_reduce("write", write_data, finish_checkpoint)), so rank 0's future done
        means every rank's shards are on disk; a failure on any rank fails the future on all."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        pending.written.result()
        if pending.tmp is not None:  # rank 0
            dcp_state.finish(pending.tmp)
            ck.commit_checkpoint(self.ckpt_root, pending.step, pending.tmp, self.cfg.keep_last)
            self._record_flops(pending.flops)
        self.last_ckpt = self.ckpt_root / ck.ckpt_name(pending.step)

    def _record_flops(self, flops: float | None) -> None:
        self.rd.info["flops"] = flops  # run.json's total as of the newest checkpoint
        self.rd.save()

    def _dcp_checkpoints(self) -> bool:
        # auto: the periodic checkpoints of an FSDP run are sharded, and the last one, the run's output,
        # is a plain model directory that upcycling, transformers and every reader take.
        fmt = self.cfg.checkpoint_format
        last = self.state.step >= self.cfg.steps
        return fmt == "dcp" or (fmt == "auto" and self.dist.sharded and not last)

    @staticmethod
    def _write_saturation(routing_path: Path, probe: SaturationProbe | None) -> None:
        """Appends one {"step", "layer", "router", "saturation"} record per logged step and sparse
        router; readers merge them into the routing records of the same step, layer and router."""
        if probe is None:
            return
        log = JsonlWriter(routing_path)
        try:
            for rec in probe.records():
                log.write(rec)
            log.sync()
        finally:
            log.close()

    def _eval(self) -> None:
        state = self.state
        res = evaluate(self.model, self.eval_sets, self.cfg.batch_size, self.device, self.autocast)
        avg = summary(res)
        self.metrics.write(
            {
                "step": state.step,
                "tokens": state.tokens,
                "time": round(state.elapsed, 3),
                "flops": state.flops,
                "split": "eval",
                "loss": avg["loss"],
                "ppl": avg["ppl"],
                "domain": {d: v["loss"] for d, v in res.items()},
            }
        )
        if self.progress:
            per = " ".join(f"{d} {v['loss']:.3f}" for d, v in res.items())
            self.progress.message(
                f"[{self.cfg.run_id}] step {state.step} eval loss {avg['loss']:.4f} ({per})"
            )

    def _diverged(self, step: int, value: float, what: str) -> None:
        last = self.last_ckpt
        kept = f"last good checkpoint {last.name}" if last else "no checkpoint was written yet"
        msg = f"run {self.cfg.run_id} diverged at step {step}: {what} is {value}; {kept}"
        if self.progress:
            self.progress.close()
        self.rd.set_status("diverged", msg)
        raise TrainingDiverged(msg)

    def _say(self, text: str) -> None:
        if not self.quiet and self.dist.is_main:  # under torchrun, one line from rank 0
            print(text, file=sys.stderr, flush=True)
