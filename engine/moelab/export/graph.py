"""The module that is exported: every router's probabilities as named outputs, and nothing after
the last router.

The inspector reads the routers, not the next-token distribution: the graph runs the layers up to
the last one with a router and stops there: no LM head (a quarter of the FLOPs of a 150k-vocabulary
0.6B model), no final norm, no later layers; what the last MoE layer computes after its router (its
experts, the residual add) feeds no output, and the exporter drops it. A model without routers
(dense) exports its logits instead, so its graph still has an output.

Router probabilities are softmax(router logits) over all experts, before top-k (what the router
"thinks"; the top-k choice and its renormalised weights follow from them and the manifest's top_k).
Layout: [batch, seq, experts], so one output is one tensor per token like the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterKind, RouterLogits


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


LOGITS = "logits"


def output_names(routers: list[RouterSpec]) -> list[str]:
    """The graph's outputs in order: the routers' probabilities, or the logits of a dense model."""
    return [r.output for r in routers] or [LOGITS]


def router_probs(routers: list[RouterLogits], b: int, t: int) -> list[torch.Tensor]:
    """[B, T, E] per router, in the order given."""
    return [torch.softmax(r.logits.float(), dim=-1).reshape(b, t, -1) for r in routers]


def reference_outputs(
    model: MoELabForCausalLM, input_ids: torch.Tensor, routers: list[RouterSpec]
) -> list[torch.Tensor]:
    """What the exported graph must give, from the FULL model's forward (not the truncated graph)."""
    out = model(input_ids)
    return router_probs(out.router_logits, *input_ids.shape) if routers else [out.logits.float()]


class RoutingGraph(nn.Module):
    """forward(input_ids [B, T] int64) -> (probs_0 [B, T, E0], probs_1, ...), computed up to the
    last router's layer; a dense model: (logits [B, T, V],)."""

    def __init__(self, model: MoELabForCausalLM, routers: list[RouterSpec]) -> None:
        super().__init__()
        self.model = model
        self.num_layers = max(r.layer for r in routers) + 1 if routers else None

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.num_layers is None:
            return (self.model(input_ids).logits.float(),)
        _, routers = self.model.model(input_ids, num_layers=self.num_layers)
        return tuple(router_probs(routers, *input_ids.shape))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
