"""ONNX export with dynamic batch and sequence axes, checked against PyTorch with onnxruntime.

The exporter is torch.onnx's dynamo path (torch.export + onnxscript): the TorchScript tracer
would freeze the sequence length in the rotary positions. Experts are swapped for their
traceable dense form during export (export/traceable.py).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from moelab.errors import MoELabError
from moelab.export.graph import RouterSpec, RoutingGraph, output_names, reference_outputs
from moelab.export.traceable import traceable
from moelab.models.model import MoELabForCausalLM

OPSET = 23
INPUT = "input_ids"
# protobuf caps one file at 2 GiB; above this the weights go to model.onnx.data beside it.
EXTERNAL_DATA_BYTES = 1 << 30
TOLERANCE = 1e-4


def export_onnx(model: MoELabForCausalLM, routers: list[RouterSpec], path: Path) -> None:
    model = model.eval()
    max_ctx = model.config.max_position_embeddings
    graph = RoutingGraph(model, routers).eval()
    # Batch 2 and a length > 1 so torch.export does not specialise either axis to a constant.
    example = torch.zeros(2, min(8, max_ctx), dtype=torch.long)
    dims = {
        INPUT: {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=max_ctx)}
    }
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with traceable(model), _quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                input_names=[INPUT],
                output_names=output_names(routers),
                dynamo=True,
                dynamic_shapes=dims,
                opset_version=OPSET,
                external_data=n_bytes > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
        except Exception as e:  # the exporter's own errors are long; keep the first line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MoELabError(f"ONNX export failed: {first} (run with --debug for the traceback)") from e


def verify(
    model: MoELabForCausalLM,
    routers: list[RouterSpec],
    path: Path,
    lengths: tuple[int, ...] = (7, 13),
    tol: float = TOLERANCE,
) -> float:
    """Runs the exported file with onnxruntime and the full PyTorch model at several lengths; returns
    the max abs difference over the outputs (router probabilities), raising when it exceeds `tol`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MoELabError(
            "onnxruntime is not installed: pip install 'moelab[onnx]' (or pass --no-verify)"
        ) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = output_names(routers)
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for t in lengths:
        t = min(t, model.config.max_position_embeddings)
        ids = torch.randint(0, model.config.vocab_size, (1, t), generator=gen)
        with torch.no_grad():
            want = reference_outputs(model, ids, routers)
        got = session.run(names, {INPUT: ids.numpy()})
        for name, w, g in zip(names, want, got):
            if tuple(w.shape) != tuple(g.shape):
                raise MoELabError(
                    f"{path}: output {name} has shape {list(g.shape)}, PyTorch gives {list(w.shape)}"
                )
            diff = float(np.abs(w.numpy() - g).max())
            if diff > tol:
                raise MoELabError(
                    f"{path}: output {name} differs from PyTorch by {diff:.2e} at length {t} (> {tol:g})"
                )
            worst = max(worst, diff)
    return worst


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter logs progress lines and warnings (torchvision missing, deprecations) that
    say nothing to a user of `moelab export`."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
