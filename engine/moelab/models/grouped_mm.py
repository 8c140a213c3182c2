"""``torch._grouped_mm`` as a custom op that torch.compile traces in any dtype.

torch's own fake (meta) kernel for ``_grouped_mm`` accepts bf16 only, so compiling an fp32 model
that calls it fails, and the experts had to fall back under torch.compile to the padded path, whose
dropless buffer size is a host sync: a graph break and recompiles at every new largest group (the
medium shape's compiled train step ran at half the transformers peer's speed). Wrapped as a custom op
with its own fake kernel (the output shape needs only the operands' shapes) and its own backward
(two more grouped matmuls, themselves custom ops so that AOTAutograd traces them too), the whole
dropless MoE layer is one graph: the group sizes stay a tensor (the offsets) and never reach Python.

The calls are torch's own kernels; only the tracing rules are ours. Tested against the eager
``torch._grouped_mm`` path and the per-expert loop, outputs and gradients, in tests/test_fast_paths.py.
"""

from __future__ import annotations

import torch


@torch.library.custom_op("moelab::grouped_mm", mutates_args=())
def grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """x [S, in] sorted by group, w [G, in, out], offs [G] int32 cumulative group ends -> [S, out]."""
    return torch._grouped_mm(x, w, offs=offs)


@grouped_mm.register_fake
def _(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[-1])


@torch.library.custom_op("moelab::grouped_mm_weight_grad", mutates_args=())
def grouped_mm_weight_grad(x: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Per group g: x_gᵀ · grad_g, [G, in, out] (the grouped matmul with groups along the reduced dim)."""
    return torch._grouped_mm(x.t(), grad, offs=offs)


@grouped_mm_weight_grad.register_fake
def _(x: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    return x.new_empty(offs.shape[0], x.shape[1], grad.shape[1])


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
    x, w, offs = inputs
    ctx.save_for_backward(x, w, offs)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
    x, w, offs = ctx.saved_tensors  # type: ignore[attr-defined]
    # The kernels want 16-byte aligned strides; a gradient arriving as a broadcast view has none.
    grad = grad.contiguous()
    grad_x = grouped_mm(grad, w.transpose(-2, -1), offs)
    grad_w = grouped_mm_weight_grad(x, grad, offs)
    return grad_x, grad_w, None


grouped_mm.register_autograd(_backward, setup_context=_setup_context)
