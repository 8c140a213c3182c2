"""The fast MoE paths compute what the simple ones do: outputs AND gradients.

- FFN experts: grouped_mm and padded against the reference per-expert loop, and the loop against a
  token-by-token definition (dropless and with capacity drops as documented in models/ffn.py).
- BAM attention experts (expert-KV, shared-KV; soft and top-k): against a naive loop of dense
  attentions, one per expert, weighted by the router.
Timing lives in bench/, never here. CUDA cases skip on machines without a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from moelab.models.attention import Attention, ExpertAttention
from moelab.models.config import ModelConfig, MoEConfig
from moelab.models.ffn import Experts, SparseMoE, expert_capacity
from moelab.models.model import MoELabForCausalLM
from moelab.models.rope import RotaryEmbedding, apply_rope
from moelab.models.routing import mixture_weights

FAST = ("grouped_mm", "padded")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _routing(n: int, n_experts: int, k: int, active: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random distinct top-k experts per token, drawn from the first `active` experts only (so the
    others get zero tokens), and random positive weights (not normalised: the experts must not care)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.rand(n, active, generator=g).argsort(dim=-1)[:, :k]
    relabel = torch.randperm(n_experts, generator=g)[:active]  # the empty experts are not always the last
    idx = relabel[perm]
    weights = torch.rand(n, k, generator=g) + 0.1
    return idx, weights


def _run(ex: Experts, impl: str, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, gy: torch.Tensor):
    ex.implementation = impl
    ex.zero_grad(set_to_none=True)
    xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = ex(xx, idx, ww)
    y.backward(gy)
    return [y.detach(), xx.grad, ww.grad, ex.w1.grad, ex.w2.grad, ex.w3.grad]


def _naive(ex: Experts, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, cap: int) -> torch.Tensor:
    """The definition, token by token: expert e serves the first `cap` (token, slot) pairs routed to
    it in token order; the rest are dropped; kept ones are summed with their weights, unrenormalised."""
    seen = [0] * ex.num_experts
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            seen[e] += 1
            if cap and seen[e] > cap:
                continue
            h = F.silu(x[t] @ ex.w1[e].t()) * (x[t] @ ex.w3[e].t())
            out[t] += w[t, j] * (h @ ex.w2[e].t())
    return out


@pytest.mark.parametrize("k", [1, 2, 6])
@pytest.mark.parametrize("capacity_factor", [0.0, 0.5, 1.0])
def test_experts_paths_match_reference(k: int, capacity_factor: float) -> None:
    torch.manual_seed(0)
    n_experts, d, f, n = 6, 16, 24, 40
    active = n_experts if k == n_experts else 4  # k < E: two experts get no tokens at all
    ex = Experts(n_experts, d, f, capacity_factor=capacity_factor)
    x = torch.randn(n, d)
    idx, w = _routing(n, n_experts, k, active, seed=k)
    gy = torch.randn(n, d)
    ref = _run(ex, "loop", x, idx, w, gy)
    cap = expert_capacity(capacity_factor, n, k, n_experts)
    torch.testing.assert_close(ref[0], _naive(ex, x, idx, w, cap).detach(), atol=1e-5, rtol=1e-5)
    for impl in FAST:
        got = _run(ex, impl, x, idx, w, gy)
        for name, a, b in zip(("y", "dx", "dweights", "dw1", "dw2", "dw3"), got, ref, strict=True):
            torch.testing.assert_close(
                a, b, atol=1e-5, rtol=1e-5, msg=lambda m, n=name, i=impl: f"{i} {n}: {m}"
            )


def test_capacity_drops_as_documented() -> None:
    """Capacity ceil(cf·N·k/E); overflow in token order is dropped; a fully dropped token gives zeros;
    dropped slots get no gradient through their routing weight."""
    torch.manual_seed(0)
    n_experts, d, f, n, k = 4, 8, 12, 10, 1
    assert expert_capacity(0.5, n, k, n_experts) == math.ceil(0.5 * n * k / n_experts) == 2
    idx = torch.zeros(n, 1, dtype=torch.long)  # everyone wants expert 0
    w = torch.ones(n, 1)
    x = torch.randn(n, d)
    for impl in ("loop", *FAST):
        ex = Experts(n_experts, d, f, capacity_factor=0.5, implementation=impl)
        ww = w.clone().requires_grad_()
        y = ex(x, idx, ww)
        assert y[:2].abs().sum() > 0, impl  # the first two tokens fit
        assert torch.equal(y[2:], torch.zeros_like(y[2:])), impl  # the rest are dropped to zeros
        y.sum().backward()
        assert torch.equal(ww.grad[2:], torch.zeros_like(ww.grad[2:])), impl
        assert ww.grad[:2].abs().sum() > 0, impl
    # Dropless (the default) keeps everything.
    dropless = Experts(n_experts, d, f)
    assert (dropless(x, idx, w).abs().sum(-1) > 0).all()


def test_sparse_moe_reads_capacity_from_config() -> None:
    cfg = ModelConfig(
        hidden_size=16,
        intermediate_size=24,
        num_attention_heads=2,
        num_key_value_heads=2,
        model_type="moelab",
        moe=MoEConfig(num_experts=4, top_k=2, moe_layers=[0], capacity_factor=1.25),
    )
    moe = SparseMoE(cfg, 0)
    assert moe.experts.capacity_factor == 1.25
    assert MoEConfig.from_dict(cfg.moe.to_dict()).capacity_factor == 1.25
    assert MoEConfig.from_dict({"num_experts": 4}).capacity_factor == 0.0  # old configs: dropless


def test_auto_implementation_on_cpu() -> None:
    x = torch.randn(3, 16)
    assert Experts(4, 16, 24).select_implementation(x) == "grouped_mm"
    # Rows of 6 fp32 values are not 16-byte aligned: grouped_mm's kernel refuses them, the loop runs.
    assert Experts(4, 6, 10).select_implementation(torch.randn(3, 6)) == "loop"
    with pytest.raises(ValueError):
        Experts(4, 16, 24, implementation="nope")


def test_experts_unaligned_auto_matches_loop() -> None:
    torch.manual_seed(1)
    ex = Experts(3, 6, 10)
    x = torch.randn(7, 6)
    idx, w = _routing(7, 3, 2, 3, seed=3)
    a = ex(x, idx, w)
    ex.implementation = "padded"
    torch.testing.assert_close(ex(x, idx, w), a)


@pytest.mark.parametrize("capacity_factor", [0.0, 1.0])
def test_compiled_fp32_experts_are_one_graph_and_match_loop(capacity_factor: float) -> None:
    """torch.compile with fullgraph=True fails on any graph break: dropless, auto takes grouped_mm
    through our custom op (torch's own fake kernel is bf16-only); with a capacity, the padded path's
    static shapes. Two of six experts get no tokens (their gradient must be zeros, not garbage)."""
    torch.manual_seed(0)
    n_experts, d, f, n, k = 6, 16, 24, 40, 2
    ex = Experts(n_experts, d, f, capacity_factor=capacity_factor)
    x, gy = torch.randn(n, d), torch.randn(n, d)
    idx, w = _routing(n, n_experts, k, 4, seed=5)
    ref = _run(ex, "loop", x, idx, w, gy)
    compiled = torch.compile(ex, fullgraph=True, backend="aot_eager")
    ex.implementation = "auto"
    for _ in range(2):  # the second call reuses the graph
        ex.zero_grad(set_to_none=True)
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = compiled(xx, idx, ww)
        y.backward(gy)
        got = [y.detach(), xx.grad, ww.grad, ex.w1.grad, ex.w2.grad, ex.w3.grad]
        for name, a, b in zip(("y", "dx", "dweights", "dw1", "dw2", "dw3"), got, ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@CUDA
@pytest.mark.parametrize("impl", FAST)
def test_experts_cuda_bf16_match_loop(impl: str) -> None:
    torch.manual_seed(0)
    ex = Experts(8, 64, 128).cuda().to(torch.bfloat16)
    x = torch.randn(256, 64, device="cuda", dtype=torch.bfloat16)
    idx, w = _routing(256, 8, 2, 6, seed=0)
    idx, w = idx.cuda(), w.cuda()
    gy = torch.randn_like(x)
    ref = _run(ex, "loop", x, idx, w, gy)
    got = _run(ex, impl, x, idx, w, gy)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


# ---- BAM attention experts ----------------------------------------------------------------------


def _attn_cfg(shared_kv: bool, attn_top_k: int, kv_heads: int, bias: bool) -> ModelConfig:
    return ModelConfig(
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        attention_bias=bias,
        model_type="moelab",
        moe=MoEConfig(
            num_experts=3,
            top_k=2,
            moe_layers=[0],
            attn_experts=True,
            attn_top_k=attn_top_k,
            shared_kv=shared_kv,
        ),
    )


def _naive_expert_attention(
    m: ExpertAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Σᵢ wᵢ(x) · Attentionᵢ(x): E ordinary dense attentions (K/V heads repeated by hand), each on the
    expert's slice of the stacked parameters, weighted by the router's mixture weights."""
    b, t, hid = x.shape
    h, kv, d = m.n_heads, m.n_kv, m.head_dim
    w = mixture_weights(m.router(x).reshape(b * t, -1), m.top_k).view(b, t, -1)
    ex = m.experts
    out = torch.zeros_like(x)
    for i in range(m.n_experts):
        q = F.linear(x, ex.q_proj[i], None if ex.q_bias is None else ex.q_bias[i])
        if m.shared_kv:
            k, v = m.k_proj(x), m.v_proj(x)
        else:
            k = F.linear(x, ex.k_proj[i], None if ex.k_bias is None else ex.k_bias[i])
            v = F.linear(x, ex.v_proj[i], None if ex.v_bias is None else ex.v_bias[i])
        q = apply_rope(q.view(b, t, h, d).transpose(1, 2), cos, sin)
        k = apply_rope(k.view(b, t, kv, d).transpose(1, 2), cos, sin).repeat_interleave(h // kv, dim=1)
        v = v.view(b, t, kv, d).transpose(1, 2).repeat_interleave(h // kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, h * d)
        out = out + w[..., i : i + 1] * F.linear(y, ex.o_proj[i])
    return out


@pytest.mark.parametrize("shared_kv", [False, True], ids=["ekv", "skv"])
@pytest.mark.parametrize("attn_top_k", [0, 1, 2], ids=["soft", "top1", "top2"])
@pytest.mark.parametrize("kv_heads,bias", [(4, False), (2, True), (1, False)], ids=["mha", "gqa-bias", "mqa"])
def test_expert_attention_matches_naive_loop(
    shared_kv: bool, attn_top_k: int, kv_heads: int, bias: bool
) -> None:
    torch.manual_seed(0)
    cfg = _attn_cfg(shared_kv, attn_top_k, kv_heads, bias)
    m = ExpertAttention(cfg, 0)
    with torch.no_grad():  # non-zero biases and a lively router, so both matter
        for p in m.parameters():
            if p.dim() == 2 and p.shape[0] == cfg.moe.num_experts and p is not m.router.weight:
                p.normal_(std=0.1)
        m.router.weight.normal_(std=0.5)
    cos, sin = RotaryEmbedding(cfg)(12, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 12, cfg.hidden_size)
    gy = torch.randn_like(x)

    def grads(fn):
        m.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        y = fn(xx)
        y.backward(gy)
        named = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        return y.detach(), xx.grad, named

    y, dx, dp = grads(lambda xx: m(xx, cos, sin)[0])
    y_ref, dx_ref, dp_ref = grads(lambda xx: _naive_expert_attention(m, xx, cos, sin))
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-4)
    assert dp.keys() == dp_ref.keys()
    for name in dp:
        torch.testing.assert_close(
            dp[name], dp_ref[name], atol=1e-5, rtol=1e-4, msg=lambda s, n=name: f"{n}: {s}"
        )


def test_dense_gqa_attention_matches_repeated_kv() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    a = Attention(cfg)
    cos, sin = RotaryEmbedding(cfg)(9, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 9, 32)
    b, t = 2, 9
    q = apply_rope(a.q_proj(x).view(b, t, 4, 8).transpose(1, 2), cos, sin)
    k = apply_rope(a.k_proj(x).view(b, t, 2, 8).transpose(1, 2), cos, sin).repeat_interleave(2, dim=1)
    v = a.v_proj(x).view(b, t, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
    ref = a.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, 32))
    torch.testing.assert_close(a(x, cos, sin)[0], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shared_kv", [False, True], ids=["ekv", "skv"])
def test_parallel_block_feeds_attention_and_ffn_the_same_normed_input(shared_kv: bool) -> None:
    cfg = ModelConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        parallel_block=True,
        model_type="moelab",
        moe=MoEConfig(num_experts=3, top_k=2, moe_layers=[0, 1], attn_experts=True, shared_kv=shared_kv),
    )
    model = MoELabForCausalLM(cfg)
    seen: dict[str, torch.Tensor] = {}
    layer = model.model.layers[1]
    layer.self_attn.register_forward_hook(lambda mod, args, out: seen.__setitem__("attn", args[0]))
    layer.block_sparse_moe.register_forward_hook(lambda mod, args, out: seen.__setitem__("ffn", args[0]))
    model(torch.randint(0, 64, (2, 7)))
    assert seen["attn"] is seen["ffn"]  # the very same tensor: LN computed once, shared
