"""Router initialisation from data, run right after the surgery (methods/ stay pure weight surgery).

UpIT's router pre-optimization (Hui et al., 2024): each sample of a small seed set is labelled
with the expert of lowest loss on it (perplexity, with every FFN router forced to that expert),
then only the FFN router vectors rᵢ are trained with α·L_lm + (1-α)·BCE(sigmoid(h·rᵢ), labelᵢ),
h being each token's router input and labelᵢ = 1 for the sample's expert. The routers' labelling
accuracy (argmax of the mean router logit over tokens and layers) is measured on held-out
samples before and after, and recorded in config.json as moelab.router_preopt.

`--router-init hidden` uses the same labels the mergekit way: router row i is the normalised
mean hidden state of the samples labelled i, minus the mean over all samples.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from moelab.data import synthetic
from moelab.data.packing import pack
from moelab.data.sources import DataSource, load_user_documents
from moelab.data.tokenizer import Tokenizer, load_tokenizer
from moelab.errors import ConfigError
from moelab.io.atomic import atomic_dir
from moelab.io.checkpoint import load_model as load_checkpoint
from moelab.io.checkpoint import read_config_dict, save_model
from moelab.models.ffn import SparseMoE
from moelab.models.lora_experts import LoRASparseMoE
from moelab.models.model import MoELabForCausalLM

FORCED = 1e4  # logit margin that makes top-k routing pick one expert with weight 1 (exactly, in fp32)


@dataclass
class PreoptConfig:
    data: str  # comma-separated: synthetic domains (code, math, prose) and/or .txt / .jsonl files
    samples: int = 128  # seed-set windows in all (held-out ones included)
    heldout: float = 0.25  # fraction kept aside to measure labelling accuracy
    seq_len: int = 128
    alpha: float = 0.5  # weight of the LM loss; 1 - alpha on the BCE labelling loss
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-2
    seed: int = 0
    init: str = "random"  # "random" (routers as upcycled) | "hidden" (hidden-state means first)
    train: bool = True  # UpIT's pre-optimization; False with init "hidden" only sets the routers

    def validate(self) -> None:
        if not self.data.strip():
            raise ConfigError("--router-data: empty (give synthetic domains like code,math or a .txt/.jsonl file)")
        if self.samples < 4:
            raise ConfigError(f"--router-samples {self.samples}: at least 4 (some train, some held out)")
        if not 0.0 < self.heldout < 1.0:
            raise ConfigError(f"router pre-optimization heldout {self.heldout}: must be in (0, 1)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--router-alpha {self.alpha}: must be in [0, 1]")
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError("router pre-optimization: steps >= 0, batch_size >= 1 and seq_len >= 2 are needed")
        for entry in self.entries():
            if not Path(entry).expanduser().exists() and entry not in synthetic.GENERATORS:
                raise ConfigError(f"--router-data {entry!r}: neither a file nor a synthetic domain "
                                  f"({', '.join(synthetic.DOMAINS)})")

    def entries(self) -> list[str]:
        return [e.strip() for e in self.data.split(",") if e.strip()]


# ---- the seed set --------------------------------------------------------------------------------


def _stream(entry: str, tok: Tokenizer, n_tokens: int, seed: int) -> torch.Tensor:
    path = Path(entry).expanduser()
    if path.exists():
        kind = "jsonl" if path.suffix == ".jsonl" else "text"
        return pack(load_user_documents(DataSource(domain=path.stem, kind=kind, path=str(path))), tok)
    if entry in synthetic.GENERATORS:
        # The tuning data's own distribution (train split), as the paper samples its seed set from it.
        return pack(synthetic.documents(entry, seed, 2 * n_tokens, split="train"), tok)
    raise ConfigError(f"--router-data {entry!r}: neither a file nor a synthetic domain "
                      f"({', '.join(synthetic.DOMAINS)})")


def router_samples(entries: list[str], tok: Tokenizer, seq_len: int, n: int, seed: int) -> torch.Tensor:
    """[n, seq_len + 1] windows, an equal share from each entry (a file or a synthetic domain), in a seeded order."""
    per = math.ceil(n / len(entries))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for entry in entries:
        stream = _stream(entry, tok, per * (seq_len + 1), seed)
        if len(stream) < seq_len + 1:
            raise ConfigError(f"--router-data {entry!r}: {len(stream)} tokens, fewer than one window of {seq_len + 1}")
        starts = torch.randint(0, len(stream) - seq_len, (per,), generator=g)
        rows.extend(stream[s : s + seq_len + 1] for s in starts.tolist())
    windows = torch.stack(rows)
    return windows[torch.randperm(len(windows), generator=g)][:n]


# ---- labels and accuracy -------------------------------------------------------------------------


def ffn_routers(model: MoELabForCausalLM) -> list[torch.nn.Linear]:
    return [m.gate for m in model.modules() if isinstance(m, SparseMoE | LoRASparseMoE)]


@contextmanager
def forced_expert(model: MoELabForCausalLM, expert: int) -> Iterator[None]:
    """Every FFN router sends every token to `expert` alone: the MoE computes that expert's model."""
    def force(_m: torch.nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(out, -FORCED)
        forced[..., expert] = 0.0
        return forced

    handles = [g.register_forward_hook(force) for g in ffn_routers(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _batches(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@torch.no_grad()
def expert_losses(model: MoELabForCausalLM, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[samples, experts] mean token loss of each expert on each sample."""
    n_experts = ffn_routers(model)[0].out_features
    out = torch.empty(len(windows), n_experts)
    for e in range(n_experts):
        with forced_expert(model, e):
            for s in _batches(len(windows), batch_size):
                w = windows[s]
                logits = model(w[:, :-1]).logits.float()
                out[s, e] = F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").mean(1)
    return out


@torch.no_grad()
def router_predictions(model: MoELabForCausalLM, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each sample's expert by the routers: argmax of the router logits averaged over tokens and layers."""
    preds = []
    for s in _batches(len(windows), batch_size):
        w = windows[s]
        out = model(w[:, :-1])
        ffn = [r.logits.float().view(len(w), -1, r.logits.shape[-1]) for r in out.router_logits if r.kind == "ffn"]
        preds.append(torch.stack(ffn).mean(dim=(0, 2)).argmax(-1))
    return torch.cat(preds)


def accuracy(model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return float((router_predictions(model, windows, batch_size) == labels).float().mean())


# ---- router init and training --------------------------------------------------------------------


@torch.no_grad()
def hidden_init(model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
    """Router row i = normalised (mean router input of samples labelled i - mean over all samples);
    experts no sample chose keep their row."""
    routers = ffn_routers(model)
    inputs: list[list[torch.Tensor]] = [[] for _ in routers]
    hooks = [g.register_forward_pre_hook(lambda _m, a, i=i: inputs[i].append(a[0].detach().float()))
             for i, g in enumerate(routers)]
    try:
        for s in _batches(len(windows), batch_size):
            w = windows[s]
            model(w[:, :-1])
    finally:
        for h in hooks:
            h.remove()
    per_sample = labels.repeat_interleave(windows.shape[1] - 1)
    for gate, xs in zip(routers, inputs):
        h = torch.cat(xs)
        mean = h.mean(0)
        for e in range(gate.out_features):
            mine = h[per_sample == e]
            if len(mine):
                v = mine.mean(0) - mean
                gate.weight[e] = (v / v.norm().clamp_min(1e-12)).to(gate.weight.dtype)


def train_routers(model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, cfg: PreoptConfig) -> list[float]:
    """α·L_lm + (1-α)·BCE(sigmoid(h·rᵢ), labelᵢ), gradients to the FFN routers only. Returns the losses."""
    routers = ffn_routers(model)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    params = [g.weight for g in routers]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    n_experts = routers[0].out_features
    losses = []
    model.train()
    try:
        for _ in range(cfg.steps):
            rows = torch.randint(0, len(windows), (min(cfg.batch_size, len(windows)),), generator=g)
            w, lab = windows[rows], labels[rows]
            out = model(w[:, :-1])
            lm = F.cross_entropy(out.logits.float().transpose(1, 2), w[:, 1:])
            target = F.one_hot(lab, n_experts).float().repeat_interleave(w.shape[1] - 1, dim=0)
            bce = torch.stack([F.binary_cross_entropy_with_logits(r.logits.float(), target)
                               for r in out.router_logits if r.kind == "ffn"]).mean()
            loss = cfg.alpha * lm + (1.0 - cfg.alpha) * bce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        model.eval()
        for p, req in frozen:
            p.requires_grad_(req)
    return losses


def preoptimize(model: MoELabForCausalLM, windows: torch.Tensor, cfg: PreoptConfig) -> dict[str, Any]:
    """Labels the seed set, initialises and/or trains the routers in place; returns the record."""
    if not ffn_routers(model):
        raise ConfigError("router pre-optimization: the model has no FFN router")
    model.eval()
    n_held = max(1, round(len(windows) * cfg.heldout))
    train_w, held_w = windows[n_held:], windows[:n_held]
    losses = expert_losses(model, windows, cfg.batch_size)
    labels = losses.argmin(-1)
    train_l, held_l = labels[n_held:], labels[:n_held]
    before = accuracy(model, held_w, held_l, cfg.batch_size)
    if cfg.init == "hidden":
        hidden_init(model, train_w, train_l, cfg.batch_size)
    curve = train_routers(model, train_w, train_l, cfg) if cfg.train and cfg.steps else []
    after = accuracy(model, held_w, held_l, cfg.batch_size)
    counts = torch.bincount(labels, minlength=losses.shape[1]).tolist()
    return {
        **{k: v for k, v in asdict(cfg).items() if k != "train"},
        "trained": bool(curve),
        "train_samples": len(train_w),
        "heldout_samples": n_held,
        "label_counts": counts,
        "expert_loss": [round(float(v), 5) for v in losses.mean(0)],
        "heldout_accuracy_before": round(before, 4),
        "heldout_accuracy_after": round(after, 4),
        "loss_first": round(curve[0], 5) if curve else None,
        "loss_last": round(curve[-1], 5) if curve else None,
    }


def preoptimize_checkpoint(ckpt: Path, cfg: PreoptConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs `preoptimize` on an upcycled checkpoint and rewrites it atomically, with the record in
    config.json's moelab.router_preopt (next to the method's provenance)."""
    cfg.validate()
    say = progress or (lambda m: print(f"router pre-optimization: {m}", file=sys.stderr, flush=True))
    ckpt = Path(ckpt)
    hf = read_config_dict(ckpt)
    model = load_checkpoint(ckpt)
    tok = load_tokenizer(ckpt, model.config.vocab_size, model.config.eos_token_id)
    torch.manual_seed(cfg.seed)
    windows = router_samples(cfg.entries(), tok, cfg.seq_len, cfg.samples, cfg.seed)
    say(f"{len(windows)} samples of {cfg.seq_len} tokens from {cfg.data}")
    record = preoptimize(model, windows, cfg)
    say(f"labels {record['label_counts']}; held-out labelling accuracy {record['heldout_accuracy_before']:.3f} "
        f"-> {record['heldout_accuracy_after']:.3f}")
    meta = dict(hf.get("moelab") or {})
    meta["router_preopt"] = record
    dtype = getattr(torch, str(hf.get("torch_dtype") or "float32"), torch.float32)
    with atomic_dir(ckpt, overwrite=True) as tmp:
        save_model(model.to(dtype), tmp)
        # The architecture is unchanged: keep the surgery's config.json (dtype fields included).
        (tmp / "config.json").write_text(json.dumps({**hf, "moelab": meta}, indent=2) + "\n")
        for f in ckpt.iterdir():  # tokenizer and anything else beside the weights
            if f.is_file() and not f.name.endswith(".safetensors") and f.name not in (
                    "config.json", "model.safetensors.index.json"):
                shutil.copyfile(f, tmp / f.name)
    return record
