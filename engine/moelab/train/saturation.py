"""Router saturation (OLMoE, §5.3): how much of each token's top-k expert set at a logged step is
already its top-k set at the final step, on a fixed probe batch (the same tokens at every step).

The final routing is only known when training ends, so the trainer keeps each logged step's probe
top-k indices (small integer tensors, in the trainer state saved with every checkpoint, so that a
resumed run yields the same numbers) and writes the saturation records when the run is done.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import top_k_mask

# A few hundred tokens: enough for a stable mean, small enough to keep every logged step in the
# checkpoint (tokens * k bytes per step and router).
PROBE_TOKENS = 256


def probe_batch(eval_sets: dict[str, torch.Tensor], tokens: int = PROBE_TOKENS) -> torch.Tensor:
    """Inputs [n, T] from the first eval windows of each domain, in turn, up to about `tokens`: eval
    windows are fixed for a run, so every logged step sees the same tokens."""
    sets = [w[:, :-1] for w in eval_sets.values() if len(w)]
    if not sets:
        return torch.empty(0, 0, dtype=torch.long)
    rows = max(1, -(-tokens // sets[0].shape[1]))
    picked = [s[i] for i in range(rows) for s in sets if i < len(s)][:rows]
    return torch.stack(picked)


def is_saturation_record(rec: dict[str, Any]) -> bool:
    return "saturation" in rec and "load" not in rec


class SaturationProbe:
    """The probe's top-k indices per logged step and sparse router. `history` is the trainer
    state's dict, updated in place, so a checkpoint of the state carries it."""

    def __init__(self, history: dict[str, Any]) -> None:
        self.history = history
        history.setdefault("steps", [])
        history.setdefault("topk", {})  # (layer, kind) -> one [tokens, k] tensor per logged step

    @torch.no_grad()
    def record(
        self,
        model: MoELabForCausalLM,
        inputs: torch.Tensor,
        step: int,
        autocast: contextlib.AbstractContextManager | None = None,
    ) -> None:
        if inputs.numel() == 0:
            return
        was_training = model.training
        model.eval()
        with autocast or contextlib.nullcontext():
            out = model(inputs.to(next(model.parameters()).device))
        model.train(was_training)
        self.history["steps"].append(step)
        for r in out.router_logits:
            if r.sparse:
                idx = r.selected().cpu()
                small = torch.uint8 if r.logits.shape[-1] <= 256 else torch.int16
                self.history["topk"].setdefault((r.layer, r.kind), []).append(idx.to(small))

    def records(self) -> list[dict[str, Any]]:
        """One record per (logged step, layer, router), measured against the last logged step."""
        steps = self.history["steps"]
        out = []
        for (layer, kind), per_step in sorted(self.history["topk"].items()):
            experts = 1 + max(int(t.max()) for t in per_step)  # only indices matter: any upper bound works
            final = top_k_mask(per_step[-1], experts)
            k = per_step[-1].shape[-1]
            for step, idx in zip(steps, per_step):
                kept = (top_k_mask(idx, experts) * final).sum() / (final.shape[0] * k)
                out.append(
                    {"step": step, "layer": layer, "router": kind, "saturation": round(float(kept), 5)}
                )
        return out
