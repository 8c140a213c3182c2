"""`moelab schema [--out DIR]`: JSON Schemas of train configs and experiments, generated from the
config dataclasses (the VS Code extension validates `*.moelab.json` with experiment.schema.json),
and layout.json, the tensor-name patterns of io/layout.py (the extension's Checkpoints view reads them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


def schemas() -> dict[str, dict[str, Any]]:
    from moelab.io.layout import layout_document
    from moelab.train.config import TrainConfig
    from moelab.train.experiment import ExperimentConfig
    from moelab.train.jsoncfg import json_schema

    return {
        "train.schema.json": json_schema(
            TrainConfig,
            "MoE Lab train config",
            "moelab train CONFIG.json: one run (dense seed, branch or MoE).",
        ),
        "experiment.schema.json": json_schema(
            ExperimentConfig,
            "MoE Lab experiment",
            "moelab run EXPERIMENT.json: seed -> branches -> upcycle -> MoE -> eval.",
        ),
        "layout.json": layout_document(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("schema", help=help_text, description=help_text + ".")
    p.add_argument("--out", type=Path, default=SCHEMA_DIR, help=f"directory (default: {SCHEMA_DIR})")
    p.add_argument(
        "--check", action="store_true", help="exit 1 if the files in --out differ from the generated ones"
    )


def run(args: argparse.Namespace) -> int:
    stale = []
    for name, schema in schemas().items():
        path = args.out / name
        text = render(schema)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print("out of date (run `moelab schema`): " + ", ".join(stale))
        return 1
    return 0
