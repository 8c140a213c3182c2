"""Sharded (DCP) checkpoints: 2 FSDP ranks write their own shards; one process (no process group)
and 3 ranks read them back, resharded, equal to what the 2 ranks held; the export streams one into
safetensors that transformers' own Mixtral loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from hf_tiny import hf_logits, input_ids, make_hf, save_hf
from torchrun_cmd import needs_torchrun, torchrun

from moelab.errors import CheckpointError
from moelab.export.hf_export import export_hf
from moelab.io import dcp_file
from moelab.io.checkpoint import load_model
from moelab.launch import dcp_state
from moelab.methods.api import UpcycleOptions, upcycle

pytestmark = needs_torchrun

# Every rank: the sharded model from the upcycled checkpoint, one AdamW step, then either save a DCP
# checkpoint (and rank 0 the gathered reference) or load one and write what it gathered.
_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from moelab.io.checkpoint import write_config, load_config
    from moelab.launch import dcp_state, distributed, fsdp
    from moelab.launch.sharded_init import load_sharded

    mode, src, ckpt, ref = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    cpu = torch.device("cpu")
    d = distributed.setup(cpu, "fsdp")
    model = load_sharded(src, cpu, shard=lambda m: fsdp.shard(m, cpu, None))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    if mode == "save":
        x = (torch.arange(24).reshape(4, 6) * 7) % model.config.vocab_size
        model(x[d.rank :: d.world_size]).logits.square().mean().backward()
        opt.step()
        if d.is_main:
            ckpt.mkdir()
            write_config(ckpt, load_config(src))
        d.barrier()
        dcp_state.save(ckpt, model, opt)
    else:
        dcp_state.load(ckpt, model, opt)
    weights, optim = d.full_state(model, opt)
    if d.is_main:
        torch.save({"model": weights, "optim": optim}, ref)
    """
)


def _run(ranks: int, *args: Path | str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run(torchrun(ranks, *args), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcp")
    seed = save_hf(make_hf("llama", seed=1), root / "seed")
    experts = [save_hf(make_hf("llama", seed=s), root / f"e{s}") for s in (2, 3, 4)]
    src = upcycle(UpcycleOptions(method="btx", seed=seed, experts=experts, out=root / "moe", top_k=2))
    (root / "worker.py").write_text(_WORKER)
    _run(2, root / "worker.py", "save", src, root / "ckpt", root / "ref2.pt")
    return root, torch.load(root / "ref2.pt", weights_only=False)


def _assert_optim_equal(got: dict, want: dict) -> None:
    assert got["state"].keys() == want["state"].keys()
    for i, s in want["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(got["state"][i][k], s[k], rtol=0, atol=0)


def test_written_by_each_rank_not_gathered(saved):
    root, _ = saved
    shards = sorted(p.name for p in (root / "ckpt" / "dcp").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    assert not list((root / "ckpt").glob("*.safetensors"))


def test_one_process_reads_it_without_a_process_group(saved):
    root, ref = saved
    model = load_model(root / "ckpt")  # the path eval, inspect and analyze take
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref["model"][k], rtol=0, atol=0, msg=k)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    dcp_state.load(root / "ckpt", model, opt)  # the resume path at world size 1
    _assert_optim_equal(opt.state_dict(), ref["optim"])


def test_three_ranks_reshard_it(saved):
    root, ref = saved
    _run(3, root / "worker.py", "load", root / "moe", root / "ckpt", root / "ref3.pt")
    got = torch.load(root / "ref3.pt", weights_only=False)
    for k, v in ref["model"].items():
        torch.testing.assert_close(got["model"][k], v, rtol=0, atol=0, msg=k)
    _assert_optim_equal(got["optim"], ref["optim"])


def test_export_streams_it_into_a_mixtral(saved, tmp_path):
    import transformers

    root, _ = saved
    out = tmp_path / "hf"
    out.mkdir()
    assert export_hf(root / "ckpt", out) == "mixtral"
    ids = input_ids(t=9)
    hf = transformers.MixtralForCausalLM.from_pretrained(out).eval()
    ours = load_model(root / "ckpt")
    torch.testing.assert_close(hf_logits(hf, ids), ours(ids).logits, atol=1e-4, rtol=0)
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"


def test_metadata_lists_tensors_without_reading_them(saved):
    root, ref = saved
    listed = dcp_file.model_tensors(root / "ckpt")
    assert {k: tuple(v.shape) for k, v in ref["model"].items()} == {k: s for k, (s, _) in listed.items()}


def test_index_lists_disk_names_for_readers_without_torch(saved):
    root, ref = saved
    index = json.loads((root / "ckpt" / "dcp" / dcp_file.INDEX_NAME).read_text())
    assert index["format"] == "dcp"
    w1 = index["tensors"]["model.layers.0.block_sparse_moe.experts.2.w1.weight"]
    assert w1["dtype"] == "F32" and w1["shape"] == list(
        ref["model"]["model.layers.0.block_sparse_moe.experts.w1"].shape[1:]
    )
    total = sum(t.numel() * t.element_size() for t in ref["model"].values())
    assert sum(t["bytes"] for t in index["tensors"].values()) == total


def test_truncated_metadata_is_one_line(saved, tmp_path):
    root, _ = saved
    broken = tmp_path / "broken"
    shutil.copytree(root / "ckpt", broken)
    meta = broken / "dcp" / ".metadata"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not a readable DCP checkpoint"):
        load_model(broken)
