"""`moelab run`: an experiment's stages, each a run directory under `out`, resumable.

A stage whose run.json says `done` is skipped; an interrupted training run resumes from its
`checkpoints/latest`. The upcycle stage is a run directory too (stage `upcycle`) holding the MoE
checkpoint in `checkpoint/`, so the extension lists it with the others.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moelab.errors import MoELabError
from moelab.io.checkpoint import load_config
from moelab.methods.api import Method, UpcycleOptions, upcycle
from moelab.models.flops import train_flops
from moelab.train import jsoncfg
from moelab.train.config import HYPER_FIELDS, Hyper, TrainConfig, TrainStage
from moelab.train.evaluate import evaluate_checkpoint
from moelab.train.experiment import ExperimentConfig, StageConfig, Variant
from moelab.train.router_preopt import PreoptConfig, preoptimize_checkpoint
from moelab.train.rundir import RunDir, RunStage, read_run_json, write_json_atomic
from moelab.train.trainer import resolve_device, train


@dataclass
class PipelineResult:
    status: Literal["done", "stopped", "failed"] = "done"
    checkpoints: dict[str, Path] = field(default_factory=dict)  # label (seed, branch-code, btx) -> checkpoint
    failures: dict[str, str] = field(default_factory=dict)  # run id -> error
    eval: dict[str, Any] | None = None
    # label -> {"steps", "tokens", "tokens_after_seed", "train_flops", "matched_to"} (see Pipeline._budget)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Stopped(Exception):
    """A training run stopped on a signal: the pipeline stops after it (not a MoELabError, which
    a failed MoE run raises and the other methods survive)."""


@dataclass
class _Plan:
    """The experiment's stages and every run id, fixed before anything runs (queued runs show them)."""

    dense: StageConfig
    branch: StageConfig | None
    tune: StageConfig | None
    cont: StageConfig | None
    up: StageConfig | None
    moe: StageConfig | None
    seed_id: str
    branch_ids: dict[str, str]  # domain -> run id
    tune_id: str
    cont_id: str
    variants: dict[str, Variant]  # label -> variant
    shares: dict[str, Method]  # label -> the method whose upcycled checkpoint it shares
    up_ids: dict[str, str]  # label -> upcycle run id
    moe_ids: dict[str, str]  # label -> MoE run id


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _log_as(run_id: str) -> Callable[[str], None]:
    return lambda msg: _log(f"[{run_id}] router pre-optimization: {msg}")


class Pipeline:
    def __init__(self, exp: ExperimentConfig, quiet: bool = False) -> None:
        self.exp, self.quiet = exp, quiet
        self.out = Path(exp.out)
        self.result = PipelineResult()

    def run_id(self, stage: StageConfig, default: str, suffix: str = "") -> str:
        part = stage.name or default
        return f"{self.exp.name}-{part}" + (f"-{suffix}" if suffix else "")

    def _train_config(self, stage: StageConfig, run_id: str, kind: TrainStage, **kw: Any) -> TrainConfig:
        h = stage.hyper(self.exp.defaults)
        return TrainConfig(
            **{k: getattr(h, k) for k in HYPER_FIELDS},
            run_id=run_id,
            out=str(self.out),
            stage=kind,
            experiment=self.exp.name,
            data=self.exp.data,
            device=self.exp.device,
            seed=self.exp.seed,
            threads=self.exp.threads,
            loggers=list(self.exp.loggers),
            **kw,
        )

    def _train(self, cfg: TrainConfig) -> Path:
        """Trains one run and returns its checkpoint; raises _Stopped when a signal stopped it (the
        pipeline then stops too)."""
        res = train(cfg, quiet=self.quiet)
        if res.status == "stopped":
            self.result.status = "stopped"
            raise _Stopped
        assert res.checkpoint is not None
        return res.checkpoint

    def _queue(
        self, run_id: str, stage: RunStage, method: str = "", parents: list[str] | None = None
    ) -> None:
        # Planned runs appear in the extension's Runs view as `queued` before they start.
        path = self.out / run_id
        if read_run_json(path) is None:
            RunDir(path, run_id, stage, method=method, parents=parents, experiment=self.exp.name).save()

    def run(self) -> PipelineResult:
        r = self.result
        plan = self._plan()
        self._queue_all(plan)
        try:
            seed = self._seed_stage(plan)
            branches = self._branch_stage(plan, seed)
            branch_tokens = sum(r.budgets[f"branch-{d}"]["tokens"] for d in branches)
            tuned = self._tune_stage(plan, seed)
            self._continued_stage(plan, seed, branch_tokens)
            upcycled = self._upcycle_stage(plan, seed, branches, tuned)
            self._moe_stage(plan, upcycled, branch_tokens)
        except _Stopped:
            return r
        # 5. eval
        ev = self.exp.stage("eval")
        if ev is not None:
            r.eval = self._eval(ev, plan.seed_id) | {"budgets": r.budgets}
        if r.failures:
            r.status = "failed"
        return r

    def _plan(self) -> _Plan:
        exp = self.exp
        dense = exp.stage("dense")
        assert dense is not None
        branch, tune, cont = exp.stage("branch"), exp.stage("tune"), exp.stage("continued")
        up, moe = exp.stage("upcycle"), exp.stage("moe")
        domains = (branch.domains or [s.domain for s in exp.data.sources]) if branch else []
        labels = up.labels() if up else []
        variants = {x: up.variant(x) for x in labels} if up else {}
        # A variant that only trains differently (no upcycle setting of its own) shares its method's checkpoint.
        shares = {
            x: v.method
            for x, v in variants.items()
            if x != v.method and v.attn_top_k is None and v.method in labels
        }
        moe_labels = (moe.methods or labels) if moe else []
        return _Plan(
            dense=dense,
            branch=branch,
            tune=tune,
            cont=cont,
            up=up,
            moe=moe,
            seed_id=self.run_id(dense, "seed"),
            branch_ids={d: self.run_id(branch, "branch", d) for d in domains} if branch else {},
            tune_id=self.run_id(tune, "tune") if tune else "",
            cont_id=self.run_id(cont, "dense-continued") if cont else "",
            variants=variants,
            shares=shares,
            up_ids={x: self.run_id(up, "upcycle", shares.get(x, x)) for x in labels} if up else {},
            moe_ids={x: self.run_id(moe, "moe", x) for x in moe_labels} if moe else {},
        )

    def _queue_all(self, p: _Plan) -> None:
        self._queue(p.seed_id, "dense")
        for bid in p.branch_ids.values():
            self._queue(bid, "branch", parents=[p.seed_id])
        if p.tune:
            self._queue(p.tune_id, "branch", parents=[p.seed_id])
        if p.cont:
            self._queue(p.cont_id, "branch", parents=[p.seed_id])
        for x, uid in p.up_ids.items():
            m = p.variants[x].method
            self._queue(
                uid, "upcycle", m, self._up_parents(m, p.seed_id, list(p.branch_ids.values()), p.tune_id)
            )
        for x, mid in p.moe_ids.items():
            self._queue(mid, "moe", p.variants[x].method, [p.up_ids.get(x, "")])

    def _seed_stage(self, p: _Plan) -> Path:
        """1. the dense seed."""
        cfg = self._train_config(p.dense, p.seed_id, "dense", init=p.dense.init, model=p.dense.model)
        seed = self.result.checkpoints["seed"] = self._train(cfg)
        self._budget("seed", p.dense, 0)
        return seed

    def _branch_stage(self, p: _Plan, seed: Path) -> dict[str, Path]:
        """2. branches: each continues the seed on one domain."""
        branches: dict[str, Path] = {}
        for d, bid in p.branch_ids.items():
            assert p.branch is not None
            ck = self._train(
                self._train_config(p.branch, bid, "branch", init=str(seed), domains=[d], parents=[p.seed_id])
            )
            branches[d] = self.result.checkpoints[f"branch-{d}"] = ck
            self._budget(f"branch-{d}", p.branch, 0)
        return branches

    def _tune_stage(self, p: _Plan, seed: Path) -> list[Path]:
        """2b. UpIT's fine-tuning run: the seed on the mixture, every checkpoint kept as an expert."""
        if not p.tune:
            return []
        h = p.tune.hyper(self.exp.defaults)
        cfg = self._train_config(p.tune, p.tune_id, "branch", init=str(seed), parents=[p.seed_id])
        cfg.keep_last = h.steps // h.ckpt_every + 1
        ck = self.result.checkpoints["tune"] = self._train(cfg)
        self._budget("tune", p.tune, 0)
        return sorted(c for c in ck.parent.glob("step-*") if (c / "config.json").exists())

    def _continued_stage(self, p: _Plan, seed: Path, branch_tokens: int) -> None:
        """2c. the "is it just more training?" baseline: the seed continued for the MoE pipeline's
        extra tokens."""
        cont = p.cont
        if not cont:
            return
        matched = branch_tokens + (self._tokens(p.moe.hyper(self.exp.defaults)) if p.moe else 0)
        h = cont.hyper(self.exp.defaults)
        steps = cont.steps if cont.steps is not None else -(-matched // self._tokens(h, steps=1))
        cfg = self._train_config(cont, p.cont_id, "branch", init=str(seed), parents=[p.seed_id])
        cfg.steps = steps
        self.result.checkpoints["dense-continued"] = self._train(cfg)
        self._budget(
            "dense-continued",
            cont,
            0,
            steps=steps,
            run_id=p.cont_id,
            match="tokens of the branches + one MoE run" if cont.steps is None else "",
        )

    def _upcycle_stage(
        self, p: _Plan, seed: Path, branches: dict[str, Path], tuned: list[Path]
    ) -> dict[str, Path]:
        """3. upcycle: one MoE checkpoint per method and variant."""
        upcycled: dict[str, Path] = {}
        for x, uid in p.up_ids.items():
            assert p.up is not None
            if x in p.shares:
                continue
            v = p.variants[x]
            experts = tuned if v.method == "upit" else list(branches.values())
            ck = self._upcycle(
                p.up,
                v,
                uid,
                seed,
                experts,
                self._up_parents(v.method, p.seed_id, list(p.branch_ids.values()), p.tune_id),
                n_others=len(branches) + (1 if p.up.keep_seed else 0),
            )
            if ck is not None:
                upcycled[x] = self.result.checkpoints[f"upcycle-{x}"] = ck
        for x, m in p.shares.items():
            if m in upcycled:
                upcycled[x] = upcycled[m]
        return upcycled

    def _moe_stage(self, p: _Plan, upcycled: dict[str, Path], branch_tokens: int) -> None:
        """4. MoE training on the equal mixture, one run per method and variant."""
        r = self.result
        for x, mid in p.moe_ids.items():
            assert p.moe is not None
            v = p.variants[x]
            if x not in upcycled:
                r.failures.setdefault(mid, f"no upcycled checkpoint for {x}")
                RunDir(self.out / mid, mid, "moe", method=v.method, experiment=self.exp.name).set_status(
                    "failed", f"upcycle stage {p.up_ids.get(x, x)} did not produce a checkpoint"
                )
                continue
            steps, match = self._moe_steps(p.moe, v, upcycled, upcycled[x], mid)
            if steps is None:
                continue
            cfg = self._train_config(
                p.moe,
                mid,
                "moe",
                init=str(upcycled[x]),
                method=v.method,
                parents=[p.up_ids[x]],
                capacity_factor=p.moe.capacity_factor,
                router_jitter_noise=p.moe.router_jitter_noise,
            )
            cfg.steps = steps
            up = p.up
            if v.method == "upit" and up is not None and up.lora_rank and up.lora_freeze_backbone:
                cfg.freeze = [*cfg.freeze, "backbone"] if "backbone" not in cfg.freeze else cfg.freeze
            try:
                ck = self._train(cfg)
            except MoELabError as e:  # a diverged or failed MoE does not stop the other methods
                r.failures[mid] = str(e)
                _log(f"[{mid}] failed: {e}")
                continue
            r.checkpoints[x] = ck
            before = {"sparse": 0, "upit": r.budgets.get("tune", {}).get("tokens", 0)}.get(
                v.method, branch_tokens
            )
            self._budget(x, p.moe, before, steps=steps, run_id=mid, match=match or "tokens")

    def _moe_steps(
        self, moe: StageConfig, v: Variant, upcycled: dict[str, Path], own: Path, mid: str
    ) -> tuple[int | None, str]:
        """The MoE run's steps and what they match: the stage's steps, or as many as give the
        training FLOPs of another variant's run (None, recorded as a failure, when it has no checkpoint)."""
        h = moe.hyper(self.exp.defaults)
        if not v.match_flops_of:
            return h.steps, ""
        target = upcycled.get(v.match_flops_of)
        if target is None:
            self.result.failures[mid] = f"no upcycled checkpoint for {v.match_flops_of} to match the FLOPs of"
            return None, ""
        # The count the trainer adds up in run.json's "flops" (models/flops.py): a step of one costs ratio × the other's.
        ratio = self._step_flops(target) / self._step_flops(own)
        return math.ceil(h.steps * ratio), f"training FLOPs of {v.match_flops_of}"

    def _tokens(self, h: Hyper, steps: int | None = None) -> int:
        return (h.steps if steps is None else steps) * h.batch_size * h.grad_accum * self.exp.data.seq_len

    def _step_flops(self, ckpt: Path) -> float:
        return train_flops(load_config(ckpt), 1, self.exp.data.seq_len)

    def _budget(
        self,
        label: str,
        stage: StageConfig,
        before: int,
        steps: int | None = None,
        run_id: str = "",
        match: str = "",
    ) -> None:
        """What a model's training cost: its own run's tokens, the tokens spent after the seed on the
        way to it (branches or UpIT's fine-tuning run, then its own run), and the training FLOPs its
        run executed (run.json's "flops")."""
        h = stage.hyper(self.exp.defaults)
        tokens = self._tokens(h, steps)
        b: dict[str, Any] = {
            "steps": h.steps if steps is None else steps,
            "tokens": tokens,
            "tokens_after_seed": 0 if label == "seed" else before + tokens,
        }
        flops = (read_run_json(self.out / run_id) or {}).get("flops") if run_id else None
        if flops is not None:
            b["train_flops"] = flops
        if match:
            b["matched_to"] = match
        self.result.budgets[label] = b

    @staticmethod
    def _up_parents(method: str, seed_id: str, branch_ids: list[str], tune_id: str) -> list[str]:
        return [seed_id, tune_id] if method == "upit" else [seed_id, *branch_ids]

    def _upcycle(
        self,
        stage: StageConfig,
        variant: Variant,
        run_id: str,
        seed: Path,
        experts: list[Path],
        parents: list[str],
        n_others: int = 0,
    ) -> Path | None:
        method = variant.method
        attn_top_k = stage.attn_top_k if variant.attn_top_k is None else variant.attn_top_k
        path = self.out / run_id
        out = path / "checkpoint"
        info = read_run_json(path)
        if info and info.get("status") == "done" and (out / "config.json").exists():
            _log(f"[{run_id}] already done; skipping")
            return out
        n = stage.num_experts
        if method == "sparse" and n is None:
            n = len(experts) + (1 if stage.keep_seed else 0)  # as many experts as the other methods
        if method == "upit" and n is None:
            n = max(n_others, len(experts))  # as many as the others: the genetic step adds the rest
        opts = UpcycleOptions(
            method=method,
            seed=seed,
            experts=[] if method == "sparse" else experts,
            out=out,
            num_experts=n,
            top_k=stage.top_k,
            attn_top_k=attn_top_k,
            router_seed=stage.router_seed,
            moe_layers=stage.moe_layers,
            router_init=stage.router_init,
            keep_seed=stage.keep_seed and method not in ("sparse", "upit"),
            overwrite=True,
            lora_rank=stage.lora_rank if method == "upit" else 0,
            dare_drop=stage.dare_drop,
            merge_seed=stage.router_seed,
            capacity_factor=stage.capacity_factor or 0.0,
            router_jitter_noise=stage.router_jitter_noise or 0.0,
            router_weights=stage.router_weights,
        )
        rd = RunDir(
            path,
            run_id,
            "upcycle",
            method=method,
            parents=parents,
            experiment=self.exp.name,
            config=jsoncfg.to_dict(opts)
            | {"seed": str(seed), "experts": [str(e) for e in opts.experts], "out": str(out)},
        )
        rd.set_status("running")
        try:
            ck = upcycle(opts)  # carries the seed's tokenizer and generation files along
            data = self.exp.data  # the seed set is a fraction of the tuning data
            if method == "upit" or stage.router_init == "hidden":
                preoptimize_checkpoint(
                    Path(ck),
                    PreoptConfig(
                        data=",".join(s.domain for s in data.sources),
                        fraction=stage.router_fraction,
                        min_samples=stage.router_min_samples,
                        steps=stage.router_steps,
                        seq_len=data.seq_len,
                        seed=stage.router_seed,
                        init=stage.router_init,
                        train=method == "upit",
                    ),
                    _log_as(run_id),
                    data,
                )
        except Exception as e:  # one method failing must not stop the others
            msg = str(e) or type(e).__name__
            rd.set_status("failed", msg)
            self.result.failures[run_id] = msg
            _log(f"[{run_id}] failed: {msg}")
            return None
        rd.set_status("done")
        _log(f"[{run_id}] wrote {ck}")
        return Path(ck)

    def _eval(self, stage: StageConfig, seed_id: str) -> dict[str, Any]:
        run_id = self.run_id(stage, "eval")
        h = stage.hyper(self.exp.defaults)
        models = {k: v for k, v in self.result.checkpoints.items() if not k.startswith("upcycle-")}
        harness = stage.harness(h.batch_size) if stage.tasks else None
        config: dict[str, Any] = {"checkpoints": {k: str(v) for k, v in models.items()}}
        if harness is not None:
            config["lm_eval"] = jsoncfg.to_dict(harness)
        info = read_run_json(self.out / run_id)
        if info and info.get("status") == "done" and info.get("config") == config:
            try:
                done = json.loads((self.out / run_id / "eval.json").read_text())
                _log(f"[{run_id}] already done; skipping")
                return done
            except (OSError, ValueError):
                pass  # evaluate again
        rd = RunDir(
            self.out / run_id, run_id, "eval", parents=[seed_id], experiment=self.exp.name, config=config
        )
        rd.set_status("running")
        device = resolve_device(self.exp.device)
        results: dict[str, Any] = {}
        try:
            for label, ck in models.items():
                _log(f"[{run_id}] evaluating {label}")
                results[label] = evaluate_checkpoint(
                    ck, self.exp.data, h.batch_size, h.eval_batches, device, harness=harness
                )
        except Exception as e:
            rd.set_status("failed", str(e))
            raise
        out = {
            "experiment": self.exp.name,
            "domains": [s.domain for s in self.exp.data.sources],
            "models": results,
        }
        write_json_atomic(rd.file("eval.json"), out)
        rd.set_status("done")
        return out


def format_table(ev: dict[str, Any]) -> str:
    """Per-domain and average perplexity, one row per model."""
    domains = ev["domains"]
    head = ["model", *domains, "average"]
    rows = [
        [label, *(f"{m['domains'][d]['ppl']:.3f}" for d in domains), f"{m['average']['ppl']:.3f}"]
        for label, m in ev["models"].items()
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])
