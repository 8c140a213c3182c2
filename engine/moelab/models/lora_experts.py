"""UpIT's LoRA variant: every expert is the shared dense FFN plus its own low-rank delta.

Expert e computes SwiGLU with W + s·B_e A_e for each of the three projections (s = lora_alpha /
lora_rank), so when every B_e is zero each expert *is* the shared FFN and the layer computes
the dense model exactly (ARCHITECTURE §2 invariant). Parameter names keep Mixtral's layout for the
router (`gate`) and put the factors under `experts` (io/layout.py stacks `lora_[ab]_w[123]`):

    block_sparse_moe.gate.weight                         [E, d]
    block_sparse_moe.shared_mlp.{gate,up,down}_proj.weight   the dense FFN every expert starts from
    block_sparse_moe.experts.{e}.lora_a_w1.weight        [r, d]   (w1 = gate, w3 = up: same shapes)
    block_sparse_moe.experts.{e}.lora_b_w1.weight        [F, r]
    block_sparse_moe.experts.{e}.lora_a_w2.weight        [r, F]   (w2 = down)
    block_sparse_moe.experts.{e}.lora_b_w2.weight        [d, r]

The experts loop selects each expert's tokens with `nonzero` (a data-dependent shape that
torch.export and ONNX handle), so the same forward runs eagerly and exports as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from moelab.errors import ConfigError
from moelab.models.config import ModelConfig
from moelab.models.ffn import DenseFFN
from moelab.models.jitter import router_jitter
from moelab.models.routing import RouterLogits, route_top_k


class LoRAExperts(nn.Module):
    """E low-rank deltas on a shared SwiGLU FFN; forward(x, idx, weights) like `Experts`."""

    lora_a_w1: nn.Parameter  # registered by name below, with its siblings

    def __init__(self, n: int, hidden: int, inner: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank
        # Registered pairwise (a, b per projection) so surgery streams one projection at a time.
        shapes = {"w1": (inner, hidden), "w2": (hidden, inner), "w3": (inner, hidden)}
        for w, (out_f, in_f) in shapes.items():
            a = nn.Parameter(torch.empty(n, rank, in_f))
            nn.init.normal_(a, std=0.02)
            # B = 0: a freshly built expert equals the shared FFN, as LoRA starts.
            b = nn.Parameter(torch.zeros(n, out_f, rank))
            self.register_parameter(f"lora_a_{w}", a)
            self.register_parameter(f"lora_b_{w}", b)

    @property
    def num_experts(self) -> int:
        return self.lora_a_w1.shape[0]

    def _delta(self, x: torch.Tensor, w: str, e: int) -> torch.Tensor:
        a, b = getattr(self, f"lora_a_{w}")[e], getattr(self, f"lora_b_{w}")[e]
        return self.scale * ((x @ a.t()) @ b.t())

    def forward(
        self, shared: DenseFFN, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        # The shared gate and up projections are computed once for every token; the down
        # projection's input differs per expert, so it runs per expert on that expert's tokens.
        g0, u0 = shared.gate_proj(x), shared.up_proj(x)
        out = torch.zeros_like(x)
        for e in range(self.num_experts):
            hit = idx == e  # [N, k]; a token picks an expert at most once
            tokens = hit.any(-1).nonzero().squeeze(-1)
            w = (weights * hit.to(weights.dtype)).sum(-1).index_select(0, tokens).to(x.dtype)
            xe = x.index_select(0, tokens)
            h = shared.act_fn(g0.index_select(0, tokens) + self._delta(xe, "w1", e)) * (
                u0.index_select(0, tokens) + self._delta(xe, "w3", e)
            )
            y = shared.down_proj(h) + self._delta(h, "w2", e)
            out = out.index_add(0, tokens, y * w.unsqueeze(-1))
        return out


class LoRASparseMoE(nn.Module):
    """Top-k routed LoRA experts over one shared dense FFN (same call as `SparseMoE`)."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        moe = cfg.moe
        assert moe is not None and moe.lora_rank > 0
        if moe.capacity_factor > 0:
            raise ConfigError(
                "moe.capacity_factor: expert capacity is not supported with LoRA experts (lora_rank > 0)"
            )
        if moe.lora_rank > min(cfg.hidden_size, cfg.intermediate_size):
            raise ConfigError(
                f"moe.lora_rank {moe.lora_rank}: larger than the FFN's smaller side "
                f"({min(cfg.hidden_size, cfg.intermediate_size)})"
            )
        self.layer, self.top_k, self.rule = layer, moe.top_k, moe.router_weights
        self.jitter_noise = moe.router_jitter_noise
        self.gate = nn.Linear(cfg.hidden_size, moe.num_experts, bias=False)
        self.shared_mlp = DenseFFN(cfg)
        self.experts = LoRAExperts(
            moe.num_experts,
            cfg.hidden_size,
            cfg.intermediate_size,
            moe.lora_rank,
            moe.lora_alpha or float(moe.lora_rank),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterLogits]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.gate(router_jitter(flat, self.jitter_noise, self.training))
        weights, idx = route_top_k(logits, self.top_k, self.rule)
        y = self.experts(self.shared_mlp, flat, idx, weights)
        return y.view(shape), RouterLogits(self.layer, "ffn", logits, self.top_k)
