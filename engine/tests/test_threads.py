"""torch's CPU threads for a run (launch/threads.py): the choice from the model and the machine, the
wait policy the CLI sets before torch loads, and what the trainer applies and records."""

from __future__ import annotations

import json
import os

import pytest
import torch

from moelab import cli
from moelab.launch.threads import (
    MIN_GEMM_FLOPS_PER_THREAD,
    Machine,
    choose_threads,
    gemm_flops,
    measure_machine,
    quiet_wait_policy,
)
from moelab.train.config import load_train_config
from moelab.train.trainer import train

BIG = 64 * MIN_GEMM_FLOPS_PER_THREAD  # a model whose matmuls could use 64 threads
TINY = gemm_flops(hidden_size=32, tokens=4 * 32)
DEMO = gemm_flops(hidden_size=128, tokens=16 * 128)  # the demo's seed: d=128, 16 × 128 tokens a step
IDLE_2 = Machine(cpus=2, busy=0.0)


def test_the_config_comes_first_then_omp_num_threads():
    assert choose_threads(3, "1", BIG, IDLE_2) == choose_threads(3, None, TINY, IDLE_2)
    assert choose_threads(3, "1", BIG, IDLE_2).threads == 3
    assert "threads=3 in the config" in choose_threads(3, "1", BIG, IDLE_2).reason
    env = choose_threads(0, "5", TINY, IDLE_2)
    assert env.threads == 5 and env.reason == "OMP_NUM_THREADS=5"
    assert choose_threads(0, "4,2", TINY, IDLE_2).threads == 4  # OpenMP's nested form: its first level


@pytest.mark.parametrize("env", [None, "", "abc", "0"])
def test_no_usable_omp_num_threads_means_the_choice_is_ours(env):
    assert choose_threads(0, env, BIG, Machine(cpus=8, busy=0.0)).threads == 8


def test_a_small_model_gets_one_thread_on_an_idle_machine():
    choice = choose_threads(0, None, TINY, Machine(cpus=64, busy=0.0))
    assert choice.threads == 1 and "too small" in choice.reason


def test_threads_follow_the_model_size_up_to_the_idle_cpus():
    assert choose_threads(0, None, 3 * MIN_GEMM_FLOPS_PER_THREAD, Machine(cpus=16, busy=0.0)).threads == 3
    big = choose_threads(0, None, BIG, Machine(cpus=16, busy=0.0))
    assert big.threads == 16 and "16 of 16 CPUs idle" in big.reason
    # Other work keeps 10 CPUs busy: 6 are left.
    assert choose_threads(0, None, BIG, Machine(cpus=16, busy=10.2)).threads == 6


def test_the_demo_on_two_cores_takes_both_alone_and_one_beside_a_busy_process():
    assert choose_threads(0, None, DEMO, IDLE_2).threads == 2
    busy = choose_threads(0, None, DEMO, Machine(cpus=2, busy=1.0))
    assert busy.threads == 1 and "1 of 2 CPUs idle (load 1.0)" in busy.reason


def test_a_saturated_machine_still_gets_one_thread():
    assert choose_threads(0, None, BIG, Machine(cpus=4, busy=9.0)).threads == 1


def test_the_machine_is_measured_within_this_process_s_cpus():
    m = measure_machine()
    assert 1 <= m.cpus <= (os.cpu_count() or 1) and m.busy >= 0.0
    assert measure_machine() is m  # once per process: later stages do not count our own load


def test_the_wait_policy_is_passive_unless_the_user_chose():
    env: dict[str, str] = {}
    quiet_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    quiet_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_cli_sets_the_wait_policy_before_any_command(monkeypatch, capsys):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert cli.main([]) == 2  # no command: the help
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_trainer_applies_the_choice_and_records_it_in_run_json(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = {
        "run_id": "t",
        "out": "runs",
        "steps": 1,
        "batch_size": 4,
        "eval_batches": 1,
        "warmup_steps": 0,
        "device": "cpu",
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
        "data": {"seq_len": 32, "synthetic_train_chars": 4000, "synthetic_eval_chars": 1000},
    }
    (tmp_path / "t.json").write_text(json.dumps(cfg))
    before = torch.get_num_threads()
    try:
        train(load_train_config(tmp_path / "t.json"), quiet=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    info = json.loads((tmp_path / "runs" / "t" / "run.json").read_text())
    assert info["threads"]["threads"] == 1 and "too small" in info["threads"]["reason"]
