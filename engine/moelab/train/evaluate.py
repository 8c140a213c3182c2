"""Per-domain loss / perplexity, and routing statistics (expert load and mean router probability,
overall and per domain, and expert co-activation) for every MoE layer and router kind."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moelab.data.mixture import DataConfig, build_domains
from moelab.data.packing import eval_windows
from moelab.data.tokenizer import load_tokenizer
from moelab.io.checkpoint import load_model
from moelab.models.model import MoELabForCausalLM
from moelab.models.routing import RouterLogits, top_k_mask
from moelab.train.harness import HarnessConfig, check_hf_tokenizer, run_harness, task_manager

# A record carries E*E numbers: past this it would dwarf the rest of routing.jsonl (and the panel).
MAX_COACT_EXPERTS = 64


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


class RoutingStats:
    """Accumulates, per (layer, router kind): routing-slot counts per expert (top-k slots; a soft
    router counts each token's top-1), summed router probabilities, counts per domain, and for
    top-k routers with at most MAX_COACT_EXPERTS experts the expert co-occurrence counts."""

    def __init__(self) -> None:
        self._acc: dict[tuple[int, str], dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._acc)

    @torch.no_grad()
    def add(self, routers: list[RouterLogits], row_domains: list[str]) -> None:
        rows = len(row_domains)
        for r in routers:
            n = r.logits.shape[-1]
            sel = r.selected().reshape(rows, -1).cpu()  # [B, T*k]
            probs = r.probs().reshape(rows, -1, n).cpu()
            a = self._acc.setdefault(
                (r.layer, r.kind),
                {
                    "counts": torch.zeros(n, dtype=torch.float64),
                    "prob": torch.zeros(n, dtype=torch.float64),
                    "tokens": 0,
                    "by_domain": {},
                },
            )
            a["counts"] += torch.bincount(sel.reshape(-1), minlength=n).double()
            a["prob"] += probs.sum(dim=(0, 1)).double()
            a["tokens"] += probs.shape[0] * probs.shape[1]
            if r.sparse and n <= MAX_COACT_EXPERTS:
                m = top_k_mask(r.selected(), n)
                # (Mᵀ M)[a, b] = tokens routed to both a and b; the diagonal counts tokens routed to a.
                a.setdefault("coact", torch.zeros(n, n, dtype=torch.float64))
                a["coact"] += (m.T @ m).double().cpu()
            for d in dict.fromkeys(row_domains):
                idx = torch.tensor([i for i, x in enumerate(row_domains) if x == d])
                c = a["by_domain"].setdefault(d, torch.zeros(n, dtype=torch.float64))
                c += torch.bincount(sel[idx].reshape(-1), minlength=n).double()

    def records(self, step: int) -> list[dict[str, Any]]:
        out = []
        for (layer, kind), a in sorted(self._acc.items()):
            total = a["counts"].sum().item() or 1.0
            rec: dict[str, Any] = {
                "step": step,
                "layer": layer,
                "router": kind,
                "load": _r(a["counts"] / total),
                "prob": _r(a["prob"] / max(1, a["tokens"])),
                "by_domain": {d: _r(c / (c.sum().item() or 1.0)) for d, c in a["by_domain"].items()},
            }
            if "coact" in a:
                rec["coact"] = conditional_coactivation(a["coact"])
            out.append(rec)
        return out


def conditional_coactivation(counts: torch.Tensor) -> list[list[float]]:
    """Co-occurrence counts [E, E] -> P(b | a) = counts[a, b] / counts[a, a] (row a, column b): the
    diagonal is 1, and an expert never picked gets a row of zeros rather than a division by zero."""
    picked = counts.diagonal().clamp(min=1).unsqueeze(1)
    return [[round(float(x), 4) for x in row] for row in counts / picked]


def _r(t: torch.Tensor) -> list[float]:
    return [round(float(x), 5) for x in t]


@torch.no_grad()
def evaluate(
    model: MoELabForCausalLM,
    eval_sets: dict[str, torch.Tensor],
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    routing: RoutingStats | None = None,
) -> dict[str, dict[str, float]]:
    """{domain: {"loss", "ppl", "tokens"}} over fixed windows [n, T+1] per domain."""
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, float]] = {}
    for domain, windows in eval_sets.items():
        total, count = 0.0, 0
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size].to(device)
            with autocast or contextlib.nullcontext():
                o = model(batch[:, :-1])
            n = batch[:, 1:].numel()
            total += lm_loss(o.logits, batch[:, 1:]).item() * n
            count += n
            if routing is not None and o.router_logits:
                routing.add(o.router_logits, [domain] * batch.shape[0])
        loss = total / max(1, count)
        out[domain] = {"loss": round(loss, 6), "ppl": round(math.exp(min(loss, 50.0)), 4), "tokens": count}
    model.train(was_training)
    return out


def summary(per_domain: dict[str, dict[str, float]]) -> dict[str, float]:
    """Average loss and average perplexity over domains (each domain weighs the same)."""
    if not per_domain:
        return {"loss": float("nan"), "ppl": float("nan")}
    n = len(per_domain)
    return {
        "loss": round(sum(v["loss"] for v in per_domain.values()) / n, 6),
        "ppl": round(sum(v["ppl"] for v in per_domain.values()) / n, 4),
    }


def evaluate_checkpoint(
    ckpt: Path,
    data: DataConfig,
    batch_size: int,
    eval_batches: int,
    device: torch.device,
    with_routing: bool = False,
    harness: HarnessConfig | None = None,
) -> dict[str, Any]:
    """Loads a checkpoint and evaluates it on every domain of `data`:
    {"checkpoint", "domains": {d: {loss, ppl, tokens}}, "average": {loss, ppl}, "routing": [...],
    "lm_eval": {"tasks": {task: {metric: value}}, ...}} (lm_eval: with `harness` only)."""
    if harness is not None:  # first: a checkpoint or task it refuses fails before the long pass
        check_hf_tokenizer(Path(ckpt))
        tasks = task_manager(harness)
    model = load_model(ckpt, device=device)
    tok = load_tokenizer(Path(ckpt), model.config.vocab_size, model.config.eos_token_id)
    domains = build_domains(data, tok, need_train=False)
    sets = {d: eval_windows(t.eval, data.seq_len, eval_batches * batch_size) for d, t in domains.items()}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    routing = RoutingStats() if with_routing else None
    res = evaluate(model, sets, batch_size, device, autocast, routing)
    out: dict[str, Any] = {"checkpoint": str(ckpt), "domains": res, "average": summary(res)}
    if routing is not None:
        out["routing"] = [{k: v for k, v in r.items() if k != "step"} for r in routing.records(0)]
    if harness is not None:
        del model
        out["lm_eval"] = run_harness(Path(ckpt), harness, str(device), tasks)
    return out
