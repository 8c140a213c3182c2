"""`moelab plan` (analysis/memory_plan.py) against what training really holds: parameter and
optimizer bytes against transformers' models, each decoder layer's activations against the tensors
autograd saves, and the per-rank peak against the RSS of a real 2-rank FSDP run on gloo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hf_tiny import make_hf, save_hf
from hf_tokenizer import save_tokenizer
from torchrun_cmd import needs_torchrun, torchrun

from moelab.analysis.memory_plan import MemoryPlan, Parallel, Setup, layer_activation_bytes, plan, shard_numel
from moelab.analysis.plan_source import from_config_file
from moelab.errors import ConfigError
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.model import MoELabForCausalLM

ENGINE = Path(__file__).resolve().parents[1]


def _moe(**moe: object) -> ModelConfig:
    return ModelConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        model_type="moelab",
        moe=MoEConfig(**{"num_experts": 4, "top_k": 2, "moe_layers": [0, 1], **moe}),  # type: ignore[arg-type]
    )


# ---- parameters and optimizer state -------------------------------------------------------------


def _mixtral() -> torch.nn.Module:
    import transformers

    cfg = transformers.MixtralConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    return transformers.MixtralForCausalLM(cfg)


@pytest.mark.parametrize("kind", ["llama", "qwen3", "gemma", "mixtral"])
def test_parameter_and_optimizer_bytes_are_the_models_numel(kind):
    hf = _mixtral() if kind == "mixtral" else make_hf(kind)
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    numel = sum(p.numel() for p in hf.parameters())  # a tied head counted once, as it is stored
    p = plan(cfg, Setup(gpus=1, gpu_mem_gib=80, seq=16))
    assert p.params_total == numel
    assert p.components["parameters"] == 4 * numel  # fp32 master weights
    assert p.components["optimizer"] == 8 * numel  # AdamW's exp_avg and exp_avg_sq, fp32
    # Gradients are fp32 too; the optimizer step holds them all.
    assert plan(cfg, Setup(gpus=1, gpu_mem_gib=80, seq=16, grad_accum=2)).components["gradients"] == 4 * numel


def test_shards_split_dim0_as_fsdp2_does():
    # torch.chunk over 3 ranks: 10 rows -> 4, 4, 2 (every rank allocates 4); 4 experts over 8 ranks: 1 each.
    assert shard_numel([(10, 5)], 3) == 20
    assert shard_numel([(4, 6, 2)], 8) == 12
    assert shard_numel([(4, 6, 2)], 8, dim=1) == 4 * 1 * 2
    assert shard_numel([()], 8) == 1


# ---- activations ---------------------------------------------------------------------------------


def _saved_bytes(cfg: ModelConfig, batch: int, seq: int, dtype: torch.dtype) -> int:
    """Bytes of the distinct storages autograd saves for one decoder layer's backward (parameters,
    the layer's input and the rotary tables aside: the plan counts those elsewhere)."""
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg).to(dtype)
    x = torch.randn(batch, seq, cfg.hidden_size, dtype=dtype, requires_grad=True)
    cos, sin = model.model.rotary(seq, x.device, x.dtype, 0)
    skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), cos, sin)}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model.layers[0](x, cos, sin)
    return sum(saved.values())


@pytest.mark.parametrize(
    "name,cfg",
    [
        ("dense", ModelConfig(hidden_size=128, intermediate_size=384, num_attention_heads=4)),
        (
            "gqa",
            ModelConfig(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2),
        ),
        ("btx", _moe()),
        ("bam-ekv soft", _moe(attn_experts=True)),
        ("bam-skv soft", _moe(attn_experts=True, shared_kv=True)),
        ("bam-ekv top-1", _moe(attn_experts=True, attn_top_k=1)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_activations_match_what_autograd_saves(name, cfg, dtype):
    batch, seq = 2, 64
    measured = _saved_bytes(cfg, batch, seq, dtype)
    planned = layer_activation_bytes(cfg, 0, batch * seq, seq, dtype.itemsize)
    print(f"{name} {dtype}: saved {measured} B, planned {planned:.0f} B ({planned / measured:.3f})")
    assert abs(planned / measured - 1) < 0.1, (measured, planned)


# ---- the plan's own logic ------------------------------------------------------------------------


def test_max_batch_is_the_largest_that_fits():
    cfg = _moe()
    base = Setup(gpus=2, gpu_mem_gib=0.05, seq=256, headroom=0.0)
    p = plan(cfg, base)
    assert p.max_batch > 1
    at = plan(cfg, Setup(**{**base.__dict__, "batch": p.max_batch}))
    over = plan(cfg, Setup(**{**base.__dict__, "batch": p.max_batch + 1}))
    assert at.fits and not over.fits
    # Checkpointing keeps less, so at least as many sequences fit.
    assert p.max_batch_other >= p.max_batch


def test_expert_parallel_gathers_local_experts_only():
    cfg = _moe(num_experts=4)
    fsdp = plan(cfg, Setup(gpus=4, gpu_mem_gib=80, seq=64))
    ep = plan(cfg, Setup(gpus=4, gpu_mem_gib=80, seq=64, parallel="fsdp+ep"))
    assert ep.expert_parallel == 4
    assert ep.components["parameters"] == fsdp.components["parameters"]  # 1 of 4 experts per rank either way
    assert ep.components["buffers"] < fsdp.components["buffers"]
    with pytest.raises(ConfigError, match="fsdp\\+ep"):
        plan(ModelConfig(), Setup(gpus=2, gpu_mem_gib=80, parallel="fsdp+ep"))
    # As launch/expert_parallel.py: the experts of a layer are split over all ranks, evenly.
    with pytest.raises(ConfigError, match="4 is not divisible by 8"):
        plan(cfg, Setup(gpus=8, gpu_mem_gib=80, parallel="fsdp+ep"))


# ---- the command ---------------------------------------------------------------------------------


def _moelab(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ENGINE), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "moelab", "plan", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_cli_plans_a_config_only_checkpoint_and_a_train_config(tmp_path):
    ckpt = save_hf(make_hf("llama"), tmp_path / "seed")
    only = tmp_path / "shape"
    only.mkdir()
    (only / "config.json").write_text((ckpt / "config.json").read_text())  # no weights at all
    text = _moelab("--ckpt", only, "--gpus", 2, "--gpu-mem", 1, "--seq", 32)
    assert text.returncode == 0, text.stderr
    assert "optimizer" in text.stdout and "fits" in text.stdout and "max batch" in text.stdout
    as_json = _moelab("--ckpt", only, "--gpus", 2, "--gpu-mem", 1, "--seq", 32, "--json")
    got = json.loads(as_json.stdout)
    assert got["fits"] and got["setup"]["batch"] == 1 and got["params_total"] > 0
    brief = _moelab("--ckpt", only, "--gpus", 2, "--gpu-mem", 1, "--seq", 32, "--brief").stdout
    assert brief.count("\n") == 1 and brief.startswith("shape: 2 × 1 GiB, fsdp") and "fits" in brief
    # A train config whose model is a checkpoint: its seq_len and its global batch split over the GPUs.
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"run_id": "r", "init": "seed", "batch_size": 8, "data": {"seq_len": 48}}))
    from_train = json.loads(_moelab("--config", train, "--gpus", 4, "--gpu-mem", 1, "--json").stdout)
    assert from_train["setup"]["seq"] == 48 and from_train["setup"]["batch"] == 2
    assert from_train["params_total"] == got["params_total"]


def test_remote_md_shows_the_commands_current_output(monkeypatch, capsys):
    # docs/REMOTE.md pastes `moelab plan`'s output for the papers' shapes: it must be what the command prints.
    from moelab import cli

    repo = ENGINE.parent
    monkeypatch.chdir(repo)
    doc = (repo / "docs" / "REMOTE.md").read_text()
    commands = [c for c in doc.split("$ moelab plan ")[1:] if not c.startswith("--ckpt docs/plan/$")]
    assert len(commands) >= 2
    for block in commands:
        lines = block.split("```")[0].splitlines()
        args = lines[0].rstrip("\\ ").split()
        rest = 1
        if lines[0].endswith("\\"):
            args += lines[1].split()
            rest = 2
        shown = "\n".join(lines[rest:]).strip()
        failed = shown.startswith("moelab: error:")
        assert cli.main(["plan", *args]) == (1 if failed else 0)
        out = capsys.readouterr()
        assert (out.err if failed else out.out).strip() == shown, args


def test_cli_bad_input_is_one_line(tmp_path):
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"run_id": "r", "batch_size": 6}))
    for args, what in (
        (["--config", train, "--gpus", 4, "--gpu-mem", 80], "batch_size 6"),
        (["--config", train, "--gpus", 2, "--gpu-mem", 80, "--parallel", "fsdp+ep"], "fsdp+ep"),
        (["--ckpt", tmp_path / "nowhere", "--gpus", 2, "--gpu-mem", 80], "nowhere"),
        (["--config", train, "--gpus", 2, "--gpu-mem", 0], "--gpu-mem"),
    ):
        proc = _moelab(*args)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and what in proc.stderr, proc.stderr


# ---- against a real run -------------------------------------------------------------------------

# glibc serves allocations over 64 KiB by mmap and returns them when freed, so that the RSS follows
# the live tensors. By default it raises that threshold as large blocks are freed and keeps freed
# memory in its heap: the RSS then carries fragmentation (the 2-rank run below peaked at 454 MiB
# that way, for 240 MiB with the fixed threshold), which on a GPU is the caching allocator's slack
# that the plan's headroom stands for.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

_ONE_PROCESS = textwrap.dedent(
    """
    import gc, json, sys
    from pathlib import Path
    import torch, torch.nn.functional as F
    from moelab.models.config import ModelConfig
    from moelab.models.model import MoELabForCausalLM

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    cfg = ModelConfig.from_hf_dict(json.loads(sys.argv[1]))
    b, t = int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = MoELabForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randint(0, cfg.vocab_size, (b, t + 1))

    def step():  # the trainer's step: logits in fp32, cross-entropy, backward, AdamW
        out = model(x[:, :-1])
        F.cross_entropy(out.logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # the optimizer state now exists
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = rss("VmRSS")
    step()
    print(rss("VmHWM") - base)
    """
)


def test_plan_within_20_percent_of_one_process_step(tmp_path):
    # Activations and the loss over an 8192 vocabulary dominate what a step adds here.
    cfg = _moe(num_experts=4, top_k=2)
    cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size = 8192, 256, 768
    env = {**os.environ, "PYTHONPATH": str(ENGINE), "OMP_NUM_THREADS": "1", **MALLOC_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_PROCESS, json.dumps(cfg.to_hf_dict()), "4", "128"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = int(proc.stdout.split()[-1])
    p = plan(cfg, Setup(gpus=1, gpu_mem_gib=80, seq=128, batch=4, dtype="fp32"))
    planned = p.peak - p.components["parameters"] - p.components["optimizer"]  # both exist before
    print(
        f"one process: step peak {measured / 2**20:.1f} MiB, plan {planned / 2**20:.1f} MiB ({p.peak_phase})"
    )
    assert abs(planned / measured - 1) < 0.2, (measured, planned)


# Runs `moelab train` in-process under torchrun and writes, per rank: the RSS before and after the
# trainer's set-up, the peak RSS (VmHWM, reset after set-up) over the training steps, and the
# exact bytes of the rank's parameter shards and optimizer state.
_WORKER = textwrap.dedent(
    """
    import gc, json, os, sys
    from pathlib import Path
    import torch
    from moelab.train import trainer as T
    from moelab.train.config import load_train_config

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def local_bytes(tensors):
        seen = {}
        for t in tensors:
            t = t.to_local() if hasattr(t, "to_local") else t
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(seen.values())

    marks = {}
    setup, step = T.Trainer._setup, T.Trainer._train_step

    def measured_setup(self):
        setup(self)
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        marks["after_setup"] = rss("VmRSS")

    def measured_step(self):
        out = step(self)
        marks["peak"] = rss("VmHWM")
        marks["params"] = local_bytes(self.model.parameters())
        marks["optimizer"] = local_bytes(
            v for s in self.optimizer.state.values() for v in s.values() if v.dim() > 0
        )
        return out

    T.Trainer._setup, T.Trainer._train_step = measured_setup, measured_step
    T.train(load_train_config(Path(sys.argv[1])), quiet=True)
    Path(sys.argv[2] + "." + os.environ["RANK"]).write_text(json.dumps(marks))
    """
)


def _upcycled(tmp_path: Path) -> Path:
    """A BTX MoE of four copies of a Llama seed: ~15M parameters (60 MB fp32) and a vocabulary of
    8192, so that the shards, the optimizer state, the activations and the loss over the vocabulary
    are each tens of MB per rank."""
    shape = dict(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=256,
    )
    seed = save_hf(make_hf("llama", seed=1, **shape), tmp_path / "seed")
    save_tokenizer(seed)
    opts = UpcycleOptions(method="btx", seed=seed, experts=[seed] * 4, out=tmp_path / "moe", num_experts=4)
    return upcycle(opts)


@needs_torchrun
@pytest.mark.parametrize("parallel", ["fsdp", "fsdp+ep"])
def test_plan_within_20_percent_of_a_two_rank_run(tmp_path, parallel):
    cfg = {
        "run_id": "mem",
        "init": str(_upcycled(tmp_path)),
        "stage": "moe",
        "steps": 3,
        "batch_size": 8,
        "warmup_steps": 1,
        "log_every": 100,
        "eval_every": 100,
        "eval_batches": 1,
        "ckpt_every": 100,
        "checkpoint_format": "dcp",
        "threads": 1,
        "device": "cpu",
        "parallel": parallel,
        "data": {"seq_len": 128, "synthetic_train_chars": 20000, "synthetic_eval_chars": 2000},
    }
    config = tmp_path / "train.json"
    config.write_text(json.dumps(cfg))
    (tmp_path / "worker.py").write_text(_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ENGINE), **MALLOC_ENV)
    out = tmp_path / "marks"
    proc = subprocess.run(
        torchrun(2, tmp_path / "worker.py", config, out), env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    planned = plan_for(config, parallel)
    parts = planned.components
    for r, m in enumerate(ranks):
        step_peak = m["peak"] - m["after_setup"]  # what the training steps add to the set-up's memory
        plan_step = planned.peak - parts["parameters"]  # the parameter shards exist after set-up
        print(
            f"rank {r}: params {m['params'] >> 20} MiB (plan {parts['parameters'] / 2**20:.1f}), optimizer "
            f"{m['optimizer'] >> 20} MiB (plan {parts['optimizer'] / 2**20:.1f}), step peak "
            f"{step_peak / 2**20:.1f} MiB (plan {plan_step / 2**20:.1f}, {plan_step / step_peak:.3f})"
        )
        assert math.isclose(m["params"], parts["parameters"], rel_tol=0.01)
        assert math.isclose(m["optimizer"], parts["optimizer"], rel_tol=0.01)
        assert abs(plan_step / step_peak - 1) < 0.2, (step_peak, plan_step)


def plan_for(config: Path, parallel: Parallel) -> MemoryPlan:
    """The plan of `config` at 2 ranks, in fp32: mixed_precision auto computes in fp32 on the CPU
    (a plan from a train config assumes GPUs, so bf16)."""
    source = from_config_file(config, 2)
    setup = Setup(gpus=2, gpu_mem_gib=80, parallel=parallel, **{**source.defaults, "dtype": "fp32"})
    return plan(source.model, setup)
