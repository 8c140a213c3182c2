"""Router initialisation from data, run right after the surgery (methods/ stay pure weight surgery).

UpIT's router pre-optimization (Hui et al., 2024): each sample of a small seed set is labelled
with the expert whose dense checkpoint has the lowest loss on it: the intermediate fine-tuning
checkpoint the expert came from, the seed with a LoRA adapter merged in, or for a genetically
merged expert the same DARE merge applied to its parents' whole dense models (methods/upit.py
rebuilds them from config.json; one dense model is in memory at a time). Upcycled checkpoints
without that record (other methods' --router-init hidden, upit from older versions) label with
the MoE itself, every FFN router forced to one expert. The record says which (`labels_from`).
Then only the FFN router vectors rᵢ are trained with α·L_lm + (1-α)·BCE(sigmoid(h·rᵢ), labelᵢ),
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
from moelab.data.mixture import DataConfig, build_domains
from moelab.data.sources import DataSource
from moelab.data.tokenizer import Tokenizer, load_tokenizer
from moelab.errors import ConfigError
from moelab.io.atomic import atomic_dir
from moelab.io.checkpoint import load_model as load_checkpoint
from moelab.io.checkpoint import model_from_tensors, read_config_dict, save_model
from moelab.methods.options import RouterInit
from moelab.methods.upit import Pool, dense_pool
from moelab.models.config import REMOTE_CODE_FILE
from moelab.models.ffn import SparseMoE
from moelab.models.lora_experts import LoRASparseMoE
from moelab.models.model import MoELabForCausalLM

FORCED = 1e4  # logit margin that makes top-k routing pick one expert with weight 1 (exactly, in fp32)


@dataclass
class PreoptConfig:
    data: str  # comma-separated: synthetic domains (code, math, prose) and/or .txt / .jsonl files
    fraction: float = 0.01  # seed set = this fraction of the tuning data's windows (the paper: about 1%)...
    min_samples: int = 32  # ...but at least this many windows, so that small data still works
    heldout: float = 0.25  # fraction kept aside to measure labelling accuracy
    seq_len: int = 128
    alpha: float = 0.5  # weight of the LM loss; 1 - alpha on the BCE labelling loss
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-2
    seed: int = 0
    init: RouterInit = "random"  # "random" (routers as upcycled) | "hidden" (hidden-state means first)
    train: bool = True  # UpIT's pre-optimization; False with init "hidden" only sets the routers

    def validate(self, entries: bool = True) -> None:
        """`entries`: check that `data` names files or synthetic domains (not when a caller gives
        the DataConfig itself, as the pipeline does)."""
        if not self.data.strip():
            raise ConfigError(
                "--router-data: empty (give synthetic domains like code,math or a .txt/.jsonl file)"
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"--router-fraction {self.fraction}: must be in (0, 1]")
        if self.min_samples < 4:
            raise ConfigError(
                f"--router-min-samples {self.min_samples}: at least 4 (some train, some held out)"
            )
        if not 0.0 < self.heldout < 1.0:
            raise ConfigError(f"router pre-optimization heldout {self.heldout}: must be in (0, 1)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--router-alpha {self.alpha}: must be in [0, 1]")
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError(
                "router pre-optimization: steps >= 0, batch_size >= 1 and seq_len >= 2 are needed"
            )
        for entry in self.entries() if entries else []:
            if not Path(entry).expanduser().exists() and entry not in synthetic.GENERATORS:
                raise ConfigError(
                    f"--router-data {entry!r}: neither a file nor a synthetic domain "
                    f"({', '.join(synthetic.DOMAINS)})"
                )

    def entries(self) -> list[str]:
        return [e.strip() for e in self.data.split(",") if e.strip()]


# ---- the seed set --------------------------------------------------------------------------------


def tuning_data(entries: list[str], seq_len: int) -> DataConfig:
    """--router-data as the data a tuning run would read: synthetic domains at their default size,
    files whole but for the held-out tail."""
    sources = []
    for e in entries:
        path = Path(e).expanduser()
        if e in synthetic.GENERATORS and not path.exists():
            sources.append(DataSource(e))
        else:
            sources.append(
                DataSource(domain=e, kind="jsonl" if path.suffix == ".jsonl" else "text", path=str(path))
            )
    return DataConfig(sources=sources, seq_len=seq_len)


@dataclass
class SeedSet:
    windows: torch.Tensor  # [n, seq_len + 1]
    tuning_windows: int  # non-overlapping windows in the tuning data's train split
    by_fraction: int  # ceil(fraction · tuning_windows), before the minimum

    def describe(self, cfg: PreoptConfig) -> str:
        why = (
            f"{cfg.fraction:.2%} of"
            if len(self.windows) == self.by_fraction
            else f"the minimum {cfg.min_samples} ({cfg.fraction:.2%} would be {self.by_fraction}) of"
        )
        return (
            f"seed set: {len(self.windows)} windows of {self.windows.shape[1] - 1} tokens, {why} the "
            f"{self.tuning_windows} windows of tuning data"
        )


def draw_seed_set(data: DataConfig, tok: Tokenizer, fraction: float, min_samples: int, seed: int) -> SeedSet:
    """A seeded sample of the tuning data's train split: max(min_samples, ceil(fraction · windows))
    windows of seq_len + 1 tokens, each domain's share in proportion to its size; distinct
    non-overlapping windows while there are enough, random (overlapping) ones beyond."""
    streams = {d: t.train for d, t in build_domains(data, tok).items()}
    width = data.seq_len + 1
    sizes = {d: len(s) // width for d, s in streams.items()}
    total = sum(sizes.values())
    by_fraction = math.ceil(fraction * total)
    n = max(min_samples, by_fraction)
    g = torch.Generator().manual_seed(seed)
    rows: list[torch.Tensor] = []
    for d, s in streams.items():
        share = math.ceil(n * sizes[d] / total)
        if share <= sizes[d]:
            starts = (torch.randperm(sizes[d], generator=g)[:share] * width).tolist()
        else:
            starts = torch.randint(0, len(s) - width + 1, (share,), generator=g).tolist()
        rows.extend(s[i : i + width] for i in starts)
    windows = torch.stack(rows)
    return SeedSet(windows[torch.randperm(len(windows), generator=g)][:n], total, by_fraction)


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
def sample_losses(model: MoELabForCausalLM, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[samples] mean token loss of `model` on each window."""
    out = torch.empty(len(windows))
    for s in _batches(len(windows), batch_size):
        w = windows[s]
        logits = model(w[:, :-1]).logits.float()
        out[s] = F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").mean(1)
    return out


def expert_losses(model: MoELabForCausalLM, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[samples, experts] mean token loss of the MoE with every FFN router forced to each expert."""
    n_experts = ffn_routers(model)[0].out_features
    out = torch.empty(len(windows), n_experts)
    for e in range(n_experts):
        with forced_expert(model, e):
            out[:, e] = sample_losses(model, windows, batch_size)
    return out


def dense_expert_losses(
    pool: Pool, windows: torch.Tensor, batch_size: int, progress: Callable[[str], None] | None = None
) -> torch.Tensor:
    """[samples, experts] mean token loss of each expert's dense model, built and evaluated one at a time."""
    out = torch.empty(len(windows), len(pool))
    for e in range(len(pool)):
        if progress:
            progress(f"labelling with expert {e}: {pool.describe(e)}")
        model = model_from_tensors(pool.seed.cfg, pool.dense_state(e), f"expert {e}'s dense model")
        out[:, e] = sample_losses(model, windows, batch_size)
        del model
    return out


@torch.no_grad()
def router_predictions(model: MoELabForCausalLM, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each sample's expert by the routers: argmax of the router logits averaged over tokens and layers."""
    preds = []
    for s in _batches(len(windows), batch_size):
        w = windows[s]
        out = model(w[:, :-1])
        ffn = [
            r.logits.float().view(len(w), -1, r.logits.shape[-1])
            for r in out.router_logits
            if r.kind == "ffn"
        ]
        preds.append(torch.stack(ffn).mean(dim=(0, 2)).argmax(-1))
    return torch.cat(preds)


def accuracy(model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    return float((router_predictions(model, windows, batch_size) == labels).float().mean())


# ---- router init and training --------------------------------------------------------------------


@torch.no_grad()
def hidden_init(
    model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> None:
    """Router row i = normalised (mean router input of samples labelled i - mean over all samples);
    experts no sample chose keep their row."""
    routers = ffn_routers(model)
    inputs: list[list[torch.Tensor]] = [[] for _ in routers]
    hooks = [
        g.register_forward_pre_hook(lambda _m, a, i=i: inputs[i].append(a[0].detach().float()))
        for i, g in enumerate(routers)
    ]
    try:
        for s in _batches(len(windows), batch_size):
            w = windows[s]
            model(w[:, :-1])
    finally:
        for h in hooks:
            h.remove()
    per_sample = labels.repeat_interleave(windows.shape[1] - 1)
    for gate, xs in zip(routers, inputs):
        acts = torch.cat(xs)
        mean = acts.mean(0)
        for e in range(gate.out_features):
            mine = acts[per_sample == e]
            if len(mine):
                v = mine.mean(0) - mean
                gate.weight[e] = (v / v.norm().clamp_min(1e-12)).to(gate.weight.dtype)


def train_routers(
    model: MoELabForCausalLM, windows: torch.Tensor, labels: torch.Tensor, cfg: PreoptConfig
) -> list[float]:
    """α·L_lm + (1-α)·BCE(sigmoid(h·rᵢ), labelᵢ), gradients to the FFN routers only. Returns the losses."""
    routers = ffn_routers(model)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    params = [g.weight for g in routers]
    for weight in params:
        weight.requires_grad_(True)
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
            bce = torch.stack(
                [
                    F.binary_cross_entropy_with_logits(r.logits.float(), target)
                    for r in out.router_logits
                    if r.kind == "ffn"
                ]
            ).mean()
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


def preoptimize(
    model: MoELabForCausalLM,
    windows: torch.Tensor,
    cfg: PreoptConfig,
    dense: Pool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Labels the seed set (by the experts' dense models in `dense`, else by the MoE with one forced
    expert), initialises and/or trains the routers in place; returns the record."""
    routers = ffn_routers(model)
    if not routers:
        raise ConfigError("router pre-optimization: the model has no FFN router")
    if dense is not None and len(dense) != routers[0].out_features:
        raise ConfigError(
            f"router pre-optimization: the record names {len(dense)} experts but the MoE has "
            f"{routers[0].out_features}"
        )
    model.eval()
    n_held = max(1, round(len(windows) * cfg.heldout))
    train_w, held_w = windows[n_held:], windows[:n_held]
    if dense is not None:
        losses = dense_expert_losses(dense, windows, cfg.batch_size, progress)
        labels_from = {"kind": "dense models", "experts": [dense.describe(e) for e in range(len(dense))]}
    else:
        losses = expert_losses(model, windows, cfg.batch_size)
        labels_from = {"kind": "moe with one forced expert"}
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
        "labels_from": labels_from,
        "train_samples": len(train_w),
        "heldout_samples": n_held,
        "label_counts": counts,
        "expert_loss": [round(float(v), 5) for v in losses.mean(0)],
        "heldout_accuracy_before": round(before, 4),
        "heldout_accuracy_after": round(after, 4),
        "loss_first": round(curve[0], 5) if curve else None,
        "loss_last": round(curve[-1], 5) if curve else None,
    }


def preoptimize_checkpoint(
    ckpt: Path,
    cfg: PreoptConfig,
    progress: Callable[[str], None] | None = None,
    data: DataConfig | None = None,
) -> dict[str, Any]:
    """Runs `preoptimize` on an upcycled checkpoint and rewrites it atomically, with the record in
    config.json's moelab.router_preopt (next to the method's provenance). The seed set is drawn
    from `data` (the pipeline passes its experiment's), else from cfg.data's entries."""
    cfg.validate(entries=data is None)
    say = progress or (lambda m: print(f"router pre-optimization: {m}", file=sys.stderr, flush=True))
    ckpt = Path(ckpt)
    hf = read_config_dict(ckpt)
    model = load_checkpoint(ckpt)
    tok = load_tokenizer(ckpt, model.config.vocab_size, model.config.eos_token_id)
    torch.manual_seed(cfg.seed)
    seed_set = draw_seed_set(
        data or tuning_data(cfg.entries(), cfg.seq_len), tok, cfg.fraction, cfg.min_samples, cfg.seed
    )
    windows = seed_set.windows
    say(f"{seed_set.describe(cfg)} ({cfg.data})")
    meta = dict(hf.get("moelab") or {})
    # UpIT labels with its experts' dense models; an upit record from before members were
    # recorded falls back to the MoE's forced experts (the record says so).
    dense = dense_pool(meta) if meta.get("method") == "upit" and "members" in meta else None
    record = preoptimize(model, windows, cfg, dense, say)
    record |= {"tuning_windows": seed_set.tuning_windows, "samples": len(windows)}
    say(
        f"labels {record['label_counts']}; held-out labelling accuracy {record['heldout_accuracy_before']:.3f} "
        f"-> {record['heldout_accuracy_after']:.3f}"
    )
    meta["router_preopt"] = record
    dtype = getattr(torch, str(hf.get("torch_dtype") or "float32"), torch.float32)
    with atomic_dir(ckpt, overwrite=True) as tmp:
        save_model(model.to(dtype), tmp)
        # The architecture is unchanged: keep the surgery's config.json (dtype fields included).
        (tmp / "config.json").write_text(json.dumps({**hf, "moelab": meta}, indent=2) + "\n")
        for f in ckpt.iterdir():  # tokenizer and anything else beside the weights
            if (
                f.is_file()
                and not f.name.endswith(".safetensors")
                and f.name not in ("config.json", "model.safetensors.index.json", REMOTE_CODE_FILE)
            ):
                shutil.copyfile(f, tmp / f.name)
    return record
