"""Training levers (train/levers.py): activation checkpointing and per-layer torch.compile give the
gradients of the plain model; checkpointing keeps fewer activation bytes for the backward pass."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from hf_tiny import input_ids, make_hf, save_hf

from moelab.io.checkpoint import load_model
from moelab.methods.api import UpcycleOptions, upcycle
from moelab.train import levers


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    seed = save_hf(make_hf("llama", seed=1), root / "seed")
    experts = [save_hf(make_hf("llama", seed=s), root / f"e{s}") for s in (2, 3)]
    opts = UpcycleOptions(
        method="bam-ekv", seed=seed, experts=experts, out=root / "moe", top_k=1, attn_top_k=1
    )
    model = load_model(upcycle(opts)).train()
    model.set_moe_options(router_jitter_noise=0.1)  # random draws the recompute must replay
    return model


def _grads(model: torch.nn.Module, ids: torch.Tensor, seed: int = 0) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(ids)
    loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    aux = sum(r.logits.square().mean() for r in out.router_logits)  # the routers' own gradient path
    (loss + aux).backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids).logits.sum().backward()
    return total


def test_activation_checkpointing_same_gradients_less_memory(moe):
    ids = input_ids(t=16, b=2)
    plain = copy.deepcopy(moe)
    ckpt = copy.deepcopy(moe)
    levers.apply(ckpt, activation_checkpointing=True, compile_layers=False)
    loss_a, grads_a = _grads(plain, ids)
    loss_b, grads_b = _grads(ckpt, ids)
    assert loss_a == loss_b and grads_a.keys() == grads_b.keys()
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], rtol=0, atol=1e-6, msg=n)
    assert _saved_bytes(ckpt, ids) < 0.5 * _saved_bytes(plain, ids)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_compiled_layers_same_gradients(moe):
    ids = input_ids(t=16, b=2)
    plain = copy.deepcopy(moe).eval()  # no jitter: compiled and eager draw random numbers differently
    compiled = copy.deepcopy(plain)
    levers.apply(compiled, activation_checkpointing=False, compile_layers=True)
    loss_a, grads_a = _grads(plain, ids)
    loss_b, grads_b = _grads(compiled, ids)
    assert abs(loss_a - loss_b) < 1e-5
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], rtol=1e-4, atol=1e-5, msg=n)
    assert set(compiled.state_dict()) == set(plain.state_dict())  # checkpoints keep their names


def test_compute_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert levers.compute_dtype("auto", cpu) is None and levers.compute_dtype("auto", cuda) is torch.bfloat16
    assert levers.compute_dtype("bf16", cpu) is torch.bfloat16 and levers.compute_dtype("fp32", cuda) is None
