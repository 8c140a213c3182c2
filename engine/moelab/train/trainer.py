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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moelab.data.mixture import MixtureSampler, build_domains
from moelab.data.packing import eval_windows
from moelab.data.tokenizer import Tokenizer, load_tokenizer
from moelab.errors import ConfigError, MoELabError
from moelab.io.checkpoint import load_model, read_config_dict
from moelab.launch import distributed, threads
from moelab.models.aux_losses import load_balancing_loss, z_loss
from moelab.models.config import DENSE_TYPES
from moelab.models.flops import train_flops
from moelab.models.model import MoELabForCausalLM
from moelab.train import checkpointing as ck
from moelab.train import jsoncfg
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
    status: str  # done | stopped
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


class Trainer:
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

    # ---- setup ----------------------------------------------------------------------------------

    def _build_model(self) -> tuple[MoELabForCausalLM, Tokenizer, dict[str, Any]]:
        cfg = self.cfg
        src = self.resume_from or (Path(cfg.init) if cfg.init else None)
        self.source = src  # its tokenizer and generation files go into every checkpoint
        device = self.dist.build_device  # the CPU under FSDP: `wrap` places the shards
        if src is not None:
            model = load_model(src, device=device)
            meta = dict(read_config_dict(src).get("moelab") or {})
        else:
            mcfg = cfg.model or default_seed_model()
            if mcfg.parallel_block and mcfg.model_type in DENSE_TYPES:
                mcfg.model_type = "moelab"  # only moelab's config.json records a parallel block
            if mcfg.moe is not None:
                mcfg.model_type = "moelab" if mcfg.model_type in DENSE_TYPES else mcfg.model_type
            torch.manual_seed(cfg.seed)
            model = MoELabForCausalLM(mcfg).to(device)
            meta = {}
        if cfg.capacity_factor is not None or cfg.router_jitter_noise is not None:
            model.set_moe_options(cfg.capacity_factor, cfg.router_jitter_noise)
        tok_src = src if src is not None else None
        tok = load_tokenizer(tok_src, model.config.vocab_size, model.config.eos_token_id)
        # Before `wrap`: DDP and FSDP must see which parameters take no gradient.
        self.rd.info["freeze"] = apply_freeze(model, cfg.freeze).to_dict()
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
        cfg, run = self.cfg, self.rd
        model, tok, meta = self._build_model()
        domains = build_domains(cfg.data, tok)
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
        fwd = self.dist.wrap(model)  # DDP for training steps; `model` for eval and checkpoints
        optimizer = self._optimizer(model)  # after `wrap`: FSDP replaces the parameters with shards
        main = self.dist.is_main  # only rank 0 writes the run directory
        metrics_path, routing_path = run.file("metrics.jsonl"), run.file("routing.jsonl")
        if self.resume_from is not None:
            state = ck.load_trainer_state(
                self.resume_from, optimizer, partial(self.dist.load_optimizer_state, model, optimizer)
            )
            if main:
                truncate_after(metrics_path, state.step)
                # Saturation records are written at the end from the final routing: a run killed
                # after writing them redoes them, so they must not survive as duplicates.
                truncate_after(routing_path, state.step, keep=lambda r: not is_saturation_record(r))
            self._say(f"[{cfg.run_id}] resuming from {self.resume_from.name}")
        else:
            state = ck.TrainerState(step=0, tokens=0, elapsed=0.0, flops=0.0)
            for name in ("metrics.jsonl", "routing.jsonl", "eval.json"):
                if main:
                    run.file(name).unlink(missing_ok=True)
            for old in self.ckpt_root.glob("step-*") if main else []:
                shutil.rmtree(old, ignore_errors=True)
        tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.data.seq_len
        flops_per_step = train_flops(model.config, cfg.batch_size * cfg.grad_accum, cfg.data.seq_len)
        if state.flops is None:  # a checkpoint from before the count: every step so far cost the same
            state.flops = state.step * flops_per_step
        run.info["flops_per_token"] = flops_per_step / tokens_per_step
        run.info["flops"] = state.flops
        run.set_status("running")
        # Rank 0 keeps the probe's history, but under FSDP its forward pass needs every rank.
        probe = (
            SaturationProbe(state.probe)
            if model.config.moe is not None and (main or self.dist.sharded)
            else None
        )
        probe_inputs = probe_batch(eval_sets)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        metrics = self.dist.main_only(
            lambda: MetricsLog(
                metrics_path,
                open_sinks(
                    cfg.loggers,
                    run.path,
                    cfg.run_id,
                    jsoncfg.to_dict(cfg),
                    resume_step=state.step,
                    experiment=cfg.experiment,
                    stage=cfg.stage,
                ),
            )
        )
        routing_log = self.dist.main_only(lambda: JsonlWriter(routing_path))
        progress = Progress(cfg.run_id, cfg.steps, state.step) if not self.quiet and main else None
        last_ckpt = self.resume_from
        t_window, tokens_window = time.monotonic(), 0
        t_start_elapsed, t_start, t_start_tokens = state.elapsed, time.monotonic(), state.tokens
        try:
            with _StopFlag() as stop:
                while state.step < cfg.steps:
                    step = state.step  # 0-based index of the step being taken
                    lr = lr_at(step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    log_now = (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps
                    routing = RoutingStats() if log_now else None
                    loss_sum, lb_sum, z_sum, n_aux = 0.0, 0.0, 0.0, 0
                    by_domain: dict[str, list[float]] = {}
                    for micro in range(cfg.grad_accum):
                        batch, rows = self.dist.shard(*sampler.batch(step, micro))  # rows rank::world
                        batch = batch.to(self.device)
                        with autocast, self.dist.no_sync(fwd, micro == cfg.grad_accum - 1):
                            out = fwd(batch[:, :-1])
                        tok_loss = F.cross_entropy(
                            out.logits.float().reshape(-1, out.logits.shape[-1]),
                            batch[:, 1:].reshape(-1),
                            reduction="none",
                        ).view(len(rows), -1)
                        ce = tok_loss.mean()
                        if cfg.debug_nan_at_step and step + 1 == cfg.debug_nan_at_step:
                            ce = ce * float("nan")
                        aux = ce.new_zeros(())
                        for r in out.router_logits:
                            lb, z = load_balancing_loss(r), z_loss(r)
                            aux = (
                                aux
                                + getattr(cfg.load_balancing, r.kind) * lb
                                + getattr(cfg.z_loss, r.kind) * z
                            )
                            lb_sum += lb.item()
                            z_sum += z.item()
                            n_aux += 1
                        loss_value = ce.item()
                        if not math.isfinite(loss_value) or not math.isfinite(aux.item()):
                            self._diverged(step + 1, loss_value, last_ckpt, progress)
                        ((ce + aux) / cfg.grad_accum).backward()
                        loss_sum += loss_value
                        with torch.no_grad():
                            row_loss = tok_loss.mean(dim=1).tolist()
                        for d, v in zip(rows, row_loss):
                            by_domain.setdefault(d, []).append(v)
                        if routing is not None and out.router_logits:
                            routing.add(out.router_logits, rows)
                    loss_sum, lb_sum, z_sum = self.dist.mean([loss_sum, lb_sum, z_sum])  # global means
                    if log_now:
                        by_domain = self.dist.gather_lists(by_domain)
                    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                    grad_norm = self.dist.clip_grad_norm(model, clip)
                    if not math.isfinite(grad_norm):
                        self._diverged(step + 1, grad_norm, last_ckpt, progress, what="gradient norm")
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    state.tokens += tokens_per_step
                    state.flops += flops_per_step
                    tokens_window += tokens_per_step
                    state.elapsed = t_start_elapsed + (time.monotonic() - t_start)
                    loss = loss_sum / cfg.grad_accum
                    if log_now:
                        dt = max(1e-9, time.monotonic() - t_window)
                        tps = tokens_window / dt
                        t_window, tokens_window = time.monotonic(), 0
                        metrics.write(
                            {
                                "step": state.step,
                                "tokens": state.tokens,
                                "time": round(state.elapsed, 3),
                                "flops": state.flops,
                                "split": "train",
                                "loss": loss,
                                "lr": lr,
                                "lb_loss": lb_sum / n_aux if n_aux else None,
                                "z_loss": z_sum / n_aux if n_aux else None,
                                "grad_norm": grad_norm,
                                "tokens_per_s": round(tps, 1),
                                "domain": {d: sum(v) / len(v) for d, v in sorted(by_domain.items())},
                            }
                        )
                        if routing:
                            for rec in routing.records(state.step):
                                routing_log.write(rec)
                        if probe is not None:
                            probe.record(model, probe_inputs, state.step, autocast)
                    if progress:  # every step (the bar throttles its redraws); rate over this session
                        session = max(1e-9, state.elapsed - t_start_elapsed)
                        progress.update(state.step, loss, (state.tokens - t_start_tokens) / session)
                    if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                        self._eval(model, eval_sets, autocast, metrics, state, progress)
                    if cfg.debug_step_delay:
                        time.sleep(cfg.debug_step_delay)
                    stopping = self.dist.any(stop.signal is not None)  # all ranks stop at the same step
                    if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps or stopping:
                        metrics.sync()
                        routing_log.sync()
                        last_ckpt = self._save(model, optimizer, state, tok, meta)
                    if stopping:
                        if progress:
                            progress.message(
                                f"[{cfg.run_id}] stopped at step {state.step}; checkpoint {last_ckpt.name}"
                            )
                        run.set_status("stopped", f"stopped by signal {stop.signal} at step {state.step}")
                        return TrainResult("stopped", last_ckpt, state.step)
        finally:
            metrics.close()
            routing_log.close()
            if progress:
                progress.close()
        if last_ckpt is None or ck.ckpt_name(state.step) != last_ckpt.name:
            # steps == 0 (use the initial model as is) or a resume of an already finished loop.
            last_ckpt = self._save(model, optimizer, state, tok, meta)
        final = evaluate(model, eval_sets, cfg.batch_size, self.device, autocast)
        if main:
            write_json_atomic(
                run.file("eval.json"),
                {
                    "run": cfg.run_id,
                    "step": state.step,
                    "checkpoint": last_ckpt.name,
                    "domains": final,
                    "average": summary(final),
                },
            )
            self._write_saturation(routing_path, probe)
        run.set_status("done")
        return TrainResult("done", last_ckpt, state.step)

    def _save(
        self,
        model: MoELabForCausalLM,
        optimizer: torch.optim.Optimizer,
        state: ck.TrainerState,
        tok: Tokenizer,
        meta: dict[str, Any],
    ) -> Path:
        """Writes a checkpoint from rank 0 (barriers around it) and returns its path on every rank."""
        weights, optim = self.dist.full_state(model, optimizer)  # under FSDP a gather that all ranks join

        def write() -> None:
            ck.save_checkpoint(
                self.ckpt_root,
                model,
                weights,
                optim,
                state,
                tok,
                meta,
                self.cfg.keep_last,
                source=self.source,
            )
            self.rd.info["flops"] = state.flops  # run.json's total as of the newest checkpoint
            self.rd.save()

        self.dist.on_main(write)
        return self.ckpt_root / ck.ckpt_name(state.step)

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

    def _eval(
        self,
        model: MoELabForCausalLM,
        eval_sets: dict[str, torch.Tensor],
        autocast: Any,
        metrics: MetricsLog,
        state: ck.TrainerState,
        progress: Progress | None,
    ) -> None:
        res = evaluate(model, eval_sets, self.cfg.batch_size, self.device, autocast)
        avg = summary(res)
        metrics.write(
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
        if progress:
            per = " ".join(f"{d} {v['loss']:.3f}" for d, v in res.items())
            progress.message(f"[{self.cfg.run_id}] step {state.step} eval loss {avg['loss']:.4f} ({per})")

    def _diverged(
        self, step: int, value: float, last_ckpt: Path | None, progress: Progress | None, what: str = "loss"
    ) -> None:
        kept = f"last good checkpoint {last_ckpt.name}" if last_ckpt else "no checkpoint was written yet"
        msg = f"run {self.cfg.run_id} diverged at step {step}: {what} is {value}; {kept}"
        if progress:
            progress.close()
        self.rd.set_status("diverged", msg)
        raise TrainingDiverged(msg)

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)
