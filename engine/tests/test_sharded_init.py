"""Sharded initialisation (launch/sharded_init.py): a model filled row by row from its safetensors
equals `load_model`'s, unsharded and under FSDP2 at 2 gloo ranks, and a rank's start-up memory is
its shards, not the model."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from hf_tiny import make_hf, save_hf
from torchrun_cmd import needs_torchrun, torchrun

from moelab.errors import CheckpointError
from moelab.io.checkpoint import load_model
from moelab.launch.sharded_init import load_sharded
from moelab.methods.api import UpcycleOptions, upcycle


def _unsharded(ckpt: Path) -> torch.nn.Module:
    return load_sharded(ckpt, torch.device("cpu"), shard=lambda m: None)


def _assert_same(ckpt: Path) -> None:
    ref, ours = load_model(ckpt).state_dict(), _unsharded(ckpt).state_dict()
    assert ref.keys() == ours.keys()
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=0, atol=0, msg=k)


def _moe(tmp_path: Path, method: str, **kw: object) -> Path:
    seed = save_hf(make_hf("llama", seed=1), tmp_path / "seed")
    experts = [save_hf(make_hf("llama", seed=s), tmp_path / f"e{s}", "8KB") for s in (2, 3, 4)]
    opts = UpcycleOptions(method=method, seed=seed, experts=experts, out=tmp_path / "moe", **kw)  # type: ignore[arg-type]
    return upcycle(opts)


@pytest.mark.parametrize("method", ["btx", "bam-ekv", "bam-skv"])
def test_moe_rows_equal_load_model(tmp_path, method):
    _assert_same(_moe(tmp_path, method, num_experts=3, top_k=2))


@pytest.mark.parametrize("kind", ["phi3", "gemma", "qwen2"])
def test_dense_families_equal_load_model(tmp_path, kind):
    # Phi-3's fused qkv/gate_up rows, Gemma's tied head, Qwen2's biases, across 16 KB shards.
    _assert_same(save_hf(make_hf(kind, seed=5), tmp_path / kind, "16KB"))


def test_truncated_file_is_one_line(tmp_path):
    ckpt = save_hf(make_hf("llama", seed=1), tmp_path / "seed")
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _unsharded(ckpt)


_WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    from moelab.launch import distributed, fsdp
    from moelab.launch.sharded_init import load_sharded

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    cpu = torch.device("cpu")
    d = distributed.setup(cpu, "fsdp")
    import torch.distributed.fsdp, torch.distributed.tensor  # imports out of the measured window
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    base = rss("VmRSS")
    model = load_sharded(ckpt, cpu, shard=lambda m: fsdp.shard(m, cpu, None))
    peak = rss("VmHWM") - base
    # before the forward: FSDP2 leaves the root's parameters unsharded after it
    dims = {n: [getattr(x, "dim", None) for x in getattr(p, "placements", ())] for n, p in model.named_parameters()}
    full = fsdp.full_model_state(model)
    x = torch.arange(12).reshape(2, 6) % model.config.vocab_size
    logits = model(x).logits
    if d.is_main:
        ref = __import__("moelab.io.checkpoint", fromlist=["load_model"]).load_model(ckpt)
        want = ref.state_dict()
        diff = max((full[k] - want[k]).abs().max().item() for k in want)
        ldiff = (logits - ref(x).logits).abs().max().item()
        out.write_text(
            json.dumps({"keys": sorted(full) == sorted(want), "diff": diff, "logits": ldiff, "dims": dims})
        )
    Path(str(out) + f".rank{d.rank}").write_text(json.dumps({"peak": peak}))
    """
)


def _run_worker(tmp_path: Path, ckpt: Path) -> dict:
    script, out = tmp_path / "worker.py", tmp_path / "result.json"
    script.write_text(_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run(
        torchrun(2, script, ckpt, out), env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    result["peaks"] = [json.loads(Path(f"{out}.rank{r}").read_text())["peak"] for r in (0, 1)]
    return result


@needs_torchrun
def test_fsdp_splits_expert_stacks_the_ranks_do_not_divide_on_dim_1(tmp_path):
    # 3 experts on 2 ranks: on dim 0 one rank would allocate 2 of 3 experts (FSDP2 pads to equal
    # chunks); on dim 1 each holds half of every expert, read as a run of each expert's rows.
    ckpt = _moe(tmp_path, "bam-ekv", num_experts=3, top_k=2)
    result = _run_worker(tmp_path, ckpt)
    assert result["keys"] and result["diff"] == 0.0 and result["logits"] < 1e-5
    dims = result["dims"]
    stacked = [n for n in dims if ".experts." in n and n.endswith(("w1", "w2", "w3", "q_proj", "o_proj"))]
    assert stacked and all(dims[n] == [1] for n in stacked), {n: dims[n] for n in stacked}
    assert dims["model.embed_tokens.weight"] == [0]


@needs_torchrun
def test_fsdp_two_ranks_read_their_rows_only(tmp_path):
    # ~50M parameters (200 MB fp32): big enough that a rank holding the whole model would show.
    big = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=8, head_dim=32)
    seed = save_hf(make_hf("llama", seed=1, **big), tmp_path / "seed")
    ckpt = upcycle(
        UpcycleOptions(method="btx", seed=seed, experts=[seed] * 8, out=tmp_path / "moe", num_experts=8)
    )
    model_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    result = _run_worker(tmp_path, ckpt)
    assert result["keys"] and result["diff"] == 0.0 and result["logits"] < 1e-5
    assert result["dims"]["model.layers.0.block_sparse_moe.experts.w1"] == [0]  # 8 experts split evenly
    peaks = result["peaks"]
    # Each rank owns half the rows; one expert tensor (1 MB) is the only other thing read. A rank
    # that built the whole model first would peak above model_bytes.
    print(f"start-up peak per rank {[p >> 20 for p in peaks]} MiB, model {model_bytes >> 20} MiB")
    for peak in peaks:
        assert peak < 0.7 * model_bytes, (peaks, model_bytes)
