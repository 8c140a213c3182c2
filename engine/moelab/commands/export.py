"""`moelab export --ckpt DIR --format {onnx,hf} --out DIR`.

onnx: model.onnx (input_ids -> router_probs.L{layer}.{ffn|attn}, computed up to the last router; a
dense model: logits), routing.json and the
tokenizer, checked against PyTorch with onnxruntime before the directory appears (atomically).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from moelab.io.atomic import atomic_dir


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("export", help=help_text, description=help_text)
    p.add_argument(
        "--ckpt", required=True, type=Path, help="checkpoint directory (config.json + safetensors)"
    )
    p.add_argument(
        "--format", required=True, choices=("onnx", "hf"), help="onnx: with router outputs; hf: plain HF dir"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output directory (must not exist unless --overwrite)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="onnx: skip the onnxruntime-vs-PyTorch check"
    )
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary instead of text")


def run(args: argparse.Namespace) -> int:
    if args.format == "hf":
        return _run_hf(args)
    return _run_onnx(args)


def _run_onnx(args: argparse.Namespace) -> int:
    # Imported here so `moelab --help` does not pay for torch.onnx.
    from moelab.data.tokenizer import detect
    from moelab.export import manifest as mf
    from moelab.export.graph import discover_routers
    from moelab.export.onnx_export import export_onnx, verify
    from moelab.export.tokenizer import copy_beside
    from moelab.io.checkpoint import load_model, read_config_dict

    t0 = time.perf_counter()
    raw = read_config_dict(args.ckpt)
    model = load_model(args.ckpt)
    tok = detect(args.ckpt, model.config.vocab_size)
    routers = discover_routers(model)
    meta = raw.get("moelab")
    method = str(meta.get("method", "")) if isinstance(meta, dict) else ""
    worst = None
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        export_onnx(model, routers, tmp / mf.MODEL_FILE)
        copy_beside(args.ckpt, tok, tmp)
        mf.write(tmp, mf.build(model.config, routers, tok, args.ckpt, method))
        mf.check_export(tmp)
        if args.verify:
            worst = verify(model, routers, tmp / mf.MODEL_FILE)
    summary = {
        "out": str(args.out),
        "format": "onnx",
        "routers": len(routers),
        "tokenizer": tok.kind,
        "max_abs_diff": worst,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        check = "not verified" if worst is None else f"onnxruntime matches PyTorch (max abs diff {worst:.1e})"
        print(
            f"exported {args.ckpt} -> {args.out}/{mf.MODEL_FILE}: {len(routers)} router output(s), "
            f"{tok.kind} tokenizer, {check}"
        )
    return 0


def _run_hf(args: argparse.Namespace) -> int:
    from moelab.export.hf_export import export_hf

    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        model_type = export_hf(args.ckpt, tmp)
    if args.json:
        print(json.dumps({"out": str(args.out), "format": "hf", "model_type": model_type}))
    else:
        print(f"exported {args.ckpt} -> {args.out} (model_type {model_type})")
    return 0
