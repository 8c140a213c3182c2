"""Expert parallelism (`"parallel": "fsdp+ep"`, launch/expert_parallel.py) at 2 gloo ranks: one MoE
layer computes what the plain layer computes, outputs and gradients; training logs the loss curve of
one process and saves its tensors; a checkpoint it saved resumes in one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
from test_distributed import _config, _env, _grad_norms, _same_checkpoints, _same_curve, _train
from torchrun_cmd import needs_torchrun, torchrun

# 4 experts, top-2: each rank holds 2 experts, and most tokens have one expert on each rank.
MOE = {**_config("run")["model"], "moe": {"num_experts": 4, "top_k": 2, "moe_layers": [0, 1]}}

_LAYER_WORKER = textwrap.dedent(
    """
    import copy
    import torch
    import torch.distributed as dist
    from moelab.errors import ConfigError
    from moelab.launch import distributed, expert_parallel
    from moelab.models.config import ModelConfig, MoEConfig
    from moelab.models.ffn import Experts, SparseMoE

    d = distributed.setup(torch.device("cpu"), "fsdp+ep")
    rank, world = d.rank, d.world_size
    cfg = ModelConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0]))

    def check(label, x_all, prepare=lambda moe: None):
        torch.manual_seed(0)
        plain = SparseMoE(cfg, 0)
        prepare(plain)
        ep = copy.deepcopy(plain)
        expert_parallel.parallelize(ep, d.device, None)
        g_all = torch.randn(x_all.shape[0], cfg.hidden_size, generator=torch.Generator().manual_seed(2))
        # The plain layer on the global batch; the EP layer on this rank's rows of it.
        x_ref = x_all.clone().requires_grad_()
        y_ref, _ = plain(x_ref)
        (y_ref * g_all).sum().backward()
        x = x_all[rank::world].clone().requires_grad_()
        y, _ = ep(x)
        (y * g_all[rank::world]).sum().backward()
        close = lambda a, b, what: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{label}: {what}")
        close(y, y_ref[rank::world].detach(), "output")
        close(x.grad, x_ref.grad[rank::world], "input gradient")
        gate = ep.gate.weight.grad.clone()
        dist.all_reduce(gate)  # the router is replicated here: FSDP would sum (average) it
        close(gate, plain.gate.weight.grad, "router gradient")
        for n in ("w1", "w2", "w3"):
            p = ep.experts._parameters[n]
            assert p.to_local().shape[0] == 2 and p.shape == getattr(plain.experts, n).shape
            # Each expert's gradient is its owner's alone, scaled by 1/W like FSDP's averaged ones.
            close(p.grad.full_tensor() * world, getattr(plain.experts, n).grad, f"{n} gradient")

    x = torch.randn(12, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    check("routed", x)

    def to_first_two(moe):  # positive inputs, experts 2 and 3 never chosen: rank 1 receives no token
        with torch.no_grad():
            moe.gate.weight[:2] = 1.0
            moe.gate.weight[2:] = -1.0
    check("rank without tokens", x.abs(), to_first_two)

    for bad, match in ((SparseMoE(cfg, 0), "capacity_factor"), (Experts(3, 8, 8), "3 is not divisible by 2")):
        if isinstance(bad, SparseMoE):
            bad.experts.capacity_factor = 1.0
        try:
            expert_parallel.parallelize(bad, d.device, None)
        except ConfigError as e:
            assert match in str(e) and "\\n" not in str(e), e
        else:
            raise AssertionError(f"no ConfigError for {match}")
    print("ok", flush=True)
    """
)


@needs_torchrun
def test_expert_parallel_layer_equals_the_plain_layer(tmp_path):
    (tmp_path / "worker.py").write_text(_LAYER_WORKER)
    done = subprocess.run(
        torchrun(2, "worker.py"), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ok") == 2, done.stdout  # both ranks got through every check


@needs_torchrun
def test_fsdp_ep_training_matches_one_process_and_resumes_in_one(tmp_path):
    one = _train(tmp_path / "one", "run", 1, model=MOE)
    ep = _train(tmp_path / "ep", "run", 2, model=MOE, parallel="fsdp+ep")
    _same_curve(one, ep)
    _same_checkpoints(one, ep)
    # The global gradient norm covers the experts (on their own device mesh) and everything else.
    assert _grad_norms(one) == pytest.approx(_grad_norms(ep), abs=1e-5)
    # Step 2 is sharded (DCP): each rank wrote its own experts. Resumed from it in one process (the
    # run directory as a kill -9 right after that checkpoint leaves it), the run continues the same
    # curve to the same weights.
    step2 = ep / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (step2 / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    shutil.copytree(tmp_path / "ep", tmp_path / "resumed")
    resumed = tmp_path / "resumed" / "runs" / "run"
    shutil.rmtree(resumed / "checkpoints" / "step-000004")
    (resumed / "checkpoints" / "latest").write_text("step-000002\n")
    info = json.loads((resumed / "run.json").read_text())
    (resumed / "run.json").write_text(json.dumps({**info, "status": "running"}))
    _train(tmp_path / "resumed", "run", 1, model=MOE, parallel="fsdp+ep")
    _same_curve(one, resumed)
    _same_checkpoints(one, resumed)
