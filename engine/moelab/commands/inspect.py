"""`moelab inspect`: structure, parameter counts and FLOPs of a checkpoint, from its config and
safetensors headers alone (no weight is read); with --text, the experts each token is routed to.

The counting rules live in the engine: parameters in analysis/param_count.py, FLOPs in
models/flops.py (its docstring states what is counted and the convention options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from moelab.analysis.param_count import count_params
from moelab.errors import ConfigError
from moelab.io.checkpoint import read_config_dict
from moelab.io.safetensors_file import tensor_files
from moelab.models.config import ModelConfig
from moelab.models.flops import ATTENTION_MODES, UNITS, Convention, forward_flops


def add_parser(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("inspect", help=help_text, description=help_text + ".")
    p.add_argument("--ckpt", required=True, type=Path, metavar="DIR")
    p.add_argument(
        "--text", default=None, metavar="STR", help="print the experts each token of STR is routed to"
    )
    p.add_argument(
        "--seq-len", type=int, default=2048, metavar="T", help="context length for attention FLOPs"
    )
    p.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="causal",
        help="attention-score convention: causal = mean (T+1)/2 keys per query, full = T, none",
    )
    p.add_argument("--unit", choices=UNITS, default="flop", help="flop (a multiply-add = 2) or mac")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def summarize(ckpt: Path, seq_len: int = 2048, conv: Convention | None = None) -> dict[str, Any]:
    ckpt = Path(ckpt)
    conv = conv or Convention(seq_len=seq_len)
    raw = read_config_dict(ckpt)
    cfg = ModelConfig.from_hf_dict(raw, source=str(ckpt / "config.json"))
    params = count_params(ckpt, cfg)
    flops = forward_flops(cfg, conv)
    moe = cfg.moe
    layers = []
    for lay, fl in zip(params.per_layer, flops.per_layer):
        attn = lay["attn_experts"]
        layers.append(
            {
                "layer": lay["layer"],
                "moe": cfg.is_moe_layer(lay["layer"]),
                "ffn_experts": lay["ffn_experts"],
                "ffn_top_k": moe.top_k if moe and lay["ffn_experts"] else 0,
                "attn_experts": attn,
                "attn_top_k": moe.attn_top_k if moe and attn else 0,
                "params": lay["params"],
                "flops_per_token": fl["total"],
            }
        )
    files = sorted(set(tensor_files(ckpt).values()))
    meta = raw.get("moelab") or {}
    return {
        "checkpoint": str(ckpt.resolve()),
        "model_type": cfg.model_type,
        "family": cfg.family,
        "method": meta.get("method") or (moe.method if moe else "") or "dense",
        "layers": cfg.num_hidden_layers,
        "moe_layers": list(moe.moe_layers) if moe else [],
        "num_experts": moe.num_experts if moe else 0,
        "top_k": moe.top_k if moe else 0,
        "attn_experts": bool(moe and moe.attn_experts),
        "attn_top_k": moe.attn_top_k if moe else 0,
        "shared_kv": bool(moe and moe.shared_kv),
        "parallel_block": cfg.parallel_block,
        "params_total": params.total,
        "params_active": params.active,
        "seq_len": conv.seq_len,
        "flops_per_token": flops.total,
        "flops": flops.to_dict(),
        "weights_bytes": sum(p.stat().st_size for p in files),
        "disk_bytes": sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file()),
        "dtypes": params.dtypes,
        "parents": meta.get("parents", []),
        "per_layer": layers,
    }


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _print_summary(s: dict[str, Any]) -> None:
    moe = s["num_experts"] > 0
    print(f"checkpoint   {s['checkpoint']}")
    family = f" ({s['family']})" if s["family"] != s["model_type"] else ""
    print(
        f"model        {s['model_type']}{family}, method {s['method']}, {s['layers']} layers"
        f"{', parallel block' if s['parallel_block'] else ''}, {'/'.join(s['dtypes'])}"
    )
    if moe:
        attn = (
            "none"
            if not s["attn_experts"]
            else f"{s['num_experts']} per MoE layer, {'soft' if s['attn_top_k'] == 0 else 'top-' + str(s['attn_top_k'])}"
            f"{', shared KV' if s['shared_kv'] else ''}"
        )
        print(f"MoE layers   {','.join(map(str, s['moe_layers']))}")
        print(f"experts      FFN: {s['num_experts']} per MoE layer, top-{s['top_k']}; attention: {attn}")
    print(f"params       total {_human(s['params_total'])}, active per token {_human(s['params_active'])}")
    unit = "FLOP" if s["flops"]["convention"]["unit"] == "flop" else "MAC"
    print(f"{unit + 's/token':12s} {_human(s['flops_per_token'], unit)} ({s['flops']['convention']['text']})")
    print(f"on disk      {_human(s['disk_bytes'], 'B')} ({_human(s['weights_bytes'], 'B')} of weights)")
    for p in s["parents"]:
        print(f"parent       {p.get('role', '?'):6s} {p.get('path', '?')}")
    print(f"layer  kind   ffn experts  attn experts  params    {unit}s/token")
    for lay in s["per_layer"]:
        ffn = f"{lay['ffn_experts']} (top-{lay['ffn_top_k']})" if lay["ffn_experts"] else "dense"
        at = (
            f"{lay['attn_experts']} ({'soft' if lay['attn_top_k'] == 0 else 'top-' + str(lay['attn_top_k'])})"
            if lay["attn_experts"]
            else "dense"
        )
        print(
            f"{lay['layer']:5d}  {'MoE' if lay['moe'] else 'dense':5s}  {ffn:11s}  {at:12s}  {_human(lay['params']):8s}  "
            f"{_human(lay['flops_per_token'], unit)}"
        )


def tokenize(ckpt: Path, text: str, vocab_size: int) -> tuple[list[int], list[str]]:
    """Ids and token strings of `text` with the checkpoint's own tokenizer."""
    from moelab.data.tokenizer import load_tokenizer

    return load_tokenizer(ckpt, vocab_size).tokens(text)


def route_text(ckpt: Path, text: str) -> list[dict[str, Any]]:
    import torch

    from moelab.io.checkpoint import load_model

    model = load_model(ckpt)
    ids, tokens = tokenize(ckpt, text, model.config.vocab_size)
    if not ids:
        raise ConfigError("--text: no tokens")
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    rows: list[dict[str, Any]] = [{"id": i, "token": t, "routes": []} for i, t in zip(ids, tokens)]
    for r in out.router_logits:
        probs = r.probs()
        k = r.top_k if r.top_k > 0 else probs.shape[-1]  # soft: every expert, ranked
        top = probs.topk(min(k, probs.shape[-1]), dim=-1)
        for pos, row in enumerate(rows):
            row["routes"].append(
                {
                    "layer": r.layer,
                    "router": r.kind,
                    "soft": r.top_k == 0,
                    "experts": top.indices[pos].tolist(),
                    "probs": [round(p, 4) for p in top.values[pos].tolist()],
                }
            )
    return rows


def run(args: argparse.Namespace) -> int:
    if args.seq_len < 1:
        raise ConfigError(f"--seq-len {args.seq_len}: must be positive")
    conv = Convention(seq_len=args.seq_len, attention=args.attention, unit=args.unit)
    summary = summarize(args.ckpt, conv=conv)
    routes = route_text(args.ckpt, args.text) if args.text is not None else None
    if args.json:
        if routes is not None:
            summary["tokens"] = routes
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    _print_summary(summary)
    if routes is not None:
        if not summary["num_experts"]:
            print("(dense checkpoint: no routers)")
        for row in routes:
            parts = []
            for r in row["routes"]:
                shown = r["experts"][:2] if r["soft"] else r["experts"]
                ex = ",".join(f"{e}:{p:.2f}" for e, p in zip(shown, r["probs"]))
                parts.append(f"L{r['layer']} {r['router']} {ex}")
            print(f"{row['id']:6d} {row['token']!r:12s} " + "  ".join(parts))
    return 0
