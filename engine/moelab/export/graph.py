"""The module that is exported: logits plus every router's probabilities as named outputs.

Router probabilities are softmax(router logits) over all experts, before top-k (what the router
"thinks"; the top-k choice and its renormalised weights follow from them and the manifest's top_k).
Layout: [batch, seq, experts], so one output is one tensor per token like the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterKind


@dataclass(frozen=True)
class RouterSpec:
    layer: int
    kind: RouterKind
    num_experts: int
    top_k: int  # 0 = soft mixture over all experts

    @property
    def output(self) -> str:
        return f"router_probs.L{self.layer}.{self.kind}"


def discover_routers(model: MoELabForCausalLM) -> list[RouterSpec]:
    """The routers in the order forward() reports them, found by running two tokens: whatever
    module kinds a model has (FFN, attention, LoRA experts), the outputs follow what it returns."""
    with torch.no_grad():
        out = model(torch.zeros(1, 2, dtype=torch.long, device=_device(model)))
    specs = [RouterSpec(r.layer, r.kind, int(r.logits.shape[-1]), int(r.top_k)) for r in out.router_logits]
    names = [s.output for s in specs]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two routers share an output name: {names}")
    return specs


class RoutingGraph(nn.Module):
    """forward(input_ids [B, T] int64) -> (logits [B, T, V], probs_0 [B, T, E0], probs_1, ...)."""

    def __init__(self, model: MoELabForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t = input_ids.shape
        out = self.model(input_ids)
        probs = [torch.softmax(r.logits.float(), dim=-1).reshape(b, t, -1) for r in out.router_logits]
        return (out.logits.float(), *probs)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
