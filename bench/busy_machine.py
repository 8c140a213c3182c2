"""The demo's training on a busy machine: tokens/s alone and beside CPU-bound processes (issue 20 §3).

For each thread policy, `moelab train` trains the demo's seed (its model, data and batch: d=128, 4 layers,
16 × 128 tokens a step) in a fresh process, since OpenMP's settings are fixed when it loads, for
--seconds: once alone, once beside --competitors busy loops (`python -c "while True: pass"`, one core
each) started a second before it. Tokens/s comes from the run's own metrics.jsonl between its first and
last train record, so start-up, data building and the first step are not counted; the slowdown is
alone / busy. The threads each run took, and why, come from its run.json.

Policies:
  default    what a user gets: no OMP_NUM_THREADS or OMP_WAIT_POLICY set, so the engine chooses the
             threads (engine/moelab/launch/threads.py) and its CLI sets OMP_WAIT_POLICY=PASSIVE
  2-active   the old Makefile setting: OMP_NUM_THREADS=2, OpenMP's workers spinning (OMP_WAIT_POLICY=ACTIVE)
  2-passive  two threads that sleep when idle (tells oversubscription from spinning)

    .venv/bin/python bench/busy_machine.py [--seconds 30] [--competitors 1] [--policies default,2-active]
    .venv/bin/python bench/busy_machine.py --tiny --seconds 2   # the quick demo's model: end to end only

Run it on an otherwise idle machine: it warns when the load average says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
sys.path.insert(0, str(ENGINE))

from moelab.train import jsoncfg
from moelab.train.config import HYPER_FIELDS, TrainConfig
from moelab.train.demo import demo_experiment
from moelab.train.runlog import read_jsonl

# Environment per policy: a value sets the variable, None removes it.
POLICIES: dict[str, dict[str, str | None]] = {
    "default": {"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None},
    "2-active": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2-passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}
START_TIMEOUT_S = 300  # data building and the first logged step, on a slow machine


@dataclass
class Result:
    tokens_per_s: float
    threads: int | None
    reason: str


def train_config(tiny: bool, run_id: str) -> dict:
    """The demo's seed stage, run until stopped: no evaluation or checkpoint inside the timed window."""
    exp = demo_experiment(quick=tiny)
    seed = exp.stage("dense")
    assert seed is not None and seed.model is not None
    hyper = seed.hyper(exp.defaults)
    cfg = TrainConfig(
        **{k: getattr(hyper, k) for k in HYPER_FIELDS},
        run_id=run_id,
        out="runs",
        stage="dense",
        data=exp.data,
        device="cpu",
        seed=exp.seed,
        model=seed.model,
    )
    cfg.steps = cfg.eval_every = cfg.ckpt_every = 10**6
    cfg.log_every = 1 if tiny else 5  # --tiny runs for a few seconds only
    return jsoncfg.to_dict(cfg)


def child_env(policy: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ENGINE), os.environ.get("PYTHONPATH")])
        ),
    }
    for key, value in POLICIES[policy].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def train_records(run_dir: Path) -> list[dict]:
    records, _ = read_jsonl(run_dir / "metrics.jsonl")
    return [r for r in records if r.get("split") == "train"]


def measure(
    work: Path, policy: str, competitors: int, seconds: float, tiny: bool
) -> Result:
    """One setting in fresh processes: the competitors, then `moelab train` for `seconds` after its
    first logged step, stopped with SIGTERM (it checkpoints and exits)."""
    run_id = f"{policy}-{competitors}"
    config = work / f"{run_id}.json"
    config.write_text(json.dumps(train_config(tiny, run_id)))
    busy = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL
        )
        for _ in range(competitors)
    ]
    try:
        if busy:
            time.sleep(1.0)  # running, so the engine's look at the machine sees them
        return _train_for(work, config, run_id, policy, seconds)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def _train_for(
    work: Path, config: Path, run_id: str, policy: str, seconds: float
) -> Result:
    run_dir = work / "runs" / run_id
    log = (work / f"{run_id}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moelab", "train", str(config)],
        cwd=work,
        env=child_env(policy),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (run_dir / "metrics.jsonl").exists() or not train_records(run_dir):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"busy_machine: {run_id} logged no step (see {work / (run_id + '.log')})"
                )
            time.sleep(0.2)
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    recs = train_records(run_dir)
    if len(recs) < 2:
        raise SystemExit(
            f"busy_machine: {run_id} logged one step in {seconds}s; give it more --seconds"
        )
    first, last = recs[0], recs[-1]
    tps = (last["tokens"] - first["tokens"]) / max(1e-9, last["time"] - first["time"])
    info = json.loads((run_dir / "run.json").read_text()).get("threads") or {}
    return Result(tps, info.get("threads"), info.get("reason", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=30.0, help="timed training per setting"
    )
    ap.add_argument(
        "--competitors",
        type=int,
        default=1,
        help="CPU-bound processes beside the busy run",
    )
    ap.add_argument(
        "--policies",
        default="default,2-active",
        help=f"comma-separated: {', '.join(POLICIES)}",
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="the quick demo's model: end to end, not a measurement",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    policies = args.policies.split(",")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SystemExit(
            f"busy_machine: unknown policy {', '.join(unknown)}; known: {', '.join(POLICIES)}"
        )

    cpus = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(
        f"# {cpus} CPUs, load average {load:.2f} at start; {args.seconds:g} s per setting",
        flush=True,
    )
    if load > 0.5:
        print(
            "# warning: the machine is not idle; the figures are not comparable across runs",
            flush=True,
        )

    rows = []
    with tempfile.TemporaryDirectory(prefix="moelab-busy-") as tmp:
        for policy in policies:
            alone = measure(Path(tmp), policy, 0, args.seconds, args.tiny)
            busy = measure(Path(tmp), policy, args.competitors, args.seconds, args.tiny)
            rows.append((policy, alone, busy))
            print(
                f"{policy:<10} threads {alone.threads}/{busy.threads}  alone {alone.tokens_per_s:8.0f} tok/s"
                f"  busy {busy.tokens_per_s:8.0f} tok/s  slowdown {alone.tokens_per_s / busy.tokens_per_s:5.2f}x",
                flush=True,
            )
    print(
        f"\n| policy | threads alone / busy | alone tok/s | with {args.competitors} busy process(es) tok/s | slowdown |"
    )
    print("|---|---|---|---|---|")
    for policy, alone, busy in rows:
        print(
            f"| {policy} | {alone.threads} / {busy.threads} | {alone.tokens_per_s:.0f} | {busy.tokens_per_s:.0f} "
            f"| {alone.tokens_per_s / busy.tokens_per_s:.2f}× |"
        )
    for policy, alone, busy in rows:
        print(f"{policy}: alone: {alone.reason}; busy: {busy.reason}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpus": cpus,
                    "load_at_start": load,
                    "seconds": args.seconds,
                    "competitors": args.competitors,
                    "rows": [
                        {
                            "policy": p,
                            "alone": vars(a),
                            "busy": vars(b),
                            "slowdown": a.tokens_per_s / b.tokens_per_s,
                        }
                        for p, a, b in rows
                    ],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
