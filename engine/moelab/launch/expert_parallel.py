"""Expert parallelism (`"parallel": "fsdp+ep"` under torchrun): each rank holds E/W of every MoE
layer's FFN experts, and the tokens travel to the experts instead of the experts to the tokens.

Why all-to-all: under FSDP alone every rank all-gathers every expert of a layer before running it,
so a layer whose E experts do not fit one GPU cannot run. Here rank r keeps experts
[r·E/W, (r+1)·E/W) whole and never gathers them. After top-k routing (unchanged), each rank sorts its
token slots by expert, which groups them by owning rank, and one all-to-all sends each rank the
slots for its experts (a first small all-to-all exchanges the per-expert counts that size it).
The owner runs `Experts`' own local compute (its sort by local expert and loop / grouped path) on
what it received, a second all-to-all sends the outputs back in the same order, and the sender
combines them with its router weights. Both all-to-alls are differentiable (the backward of one is
the reverse one), so activation gradients flow back to the ranks the tokens came from.

What is sharded how:
- FFN experts (`Experts.w1/w2/w3`, [E, …]): DTensors with `Shard(0)` on a 1-D "ep" device mesh of
  all ranks, as torchtitan does, and left out of FSDP (`ignored_params`): they are split already.
  Because they are DTensors, torch.distributed.checkpoint.state_dict gathers them into the full
  state dict, DCP writes each rank its experts and reshards on load, and the parameter names are
  the single-process ones, so checkpoints do not change.
- Everything else (attention, routers, norms, embeddings, head): FSDP2 as in `"fsdp"` (launch/fsdp.py).

Gradients: FSDP averages the other parameters' gradients over the ranks (each rank's loss is the
mean over its rows, so the mean is the global batch's gradient). An expert's gradient is never
reduced across ranks (no other rank holds it), but it already sums the contributions of every
rank's tokens, each taken from that rank's mean loss: it is divided by W in the backward to be the
same gradient. The global gradient norm is taken per device mesh and combined (`clip_grad_norm`):
torch cannot reduce DTensors of two meshes together.

Limits: dropless routing only (a capacity factor drops slots by their rank in the global batch,
which no rank sees here), the plain `Experts` only (LoRA experts and BAM attention experts stay
FSDP-sharded), and E divisible by W.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from moelab.errors import ConfigError
from moelab.models.ffn import Experts, _combine, _sort_slots

_WEIGHTS = ("w1", "w2", "w3")


def parallelize(model: nn.Module, device: torch.device, param_dtype: torch.dtype | None) -> set[nn.Parameter]:
    """Places each `Experts` module's experts on the ranks, in place (on the meta device too, for
    sharded initialisation). Returns the expert parameters, for FSDP to leave alone."""
    experts = [m for m in model.modules() if type(m) is Experts]
    world = dist.get_world_size()
    for m in experts:
        if m.num_experts % world:
            raise ConfigError(
                f"parallel: fsdp+ep places the {m.num_experts} experts of each MoE layer on {world} "
                f"ranks, and {m.num_experts} is not divisible by {world}"
            )
        _check_dropless(m.capacity_factor)
    if not experts:
        return set()
    mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("ep",))
    for m in experts:
        _distribute(m, mesh, device)
        m.__class__ = ExpertParallelExperts  # as fully_shard does: same module, same names, new forward
        ep = cast(ExpertParallelExperts, m)
        ep.ep_mesh, ep.ep_param_dtype = mesh, param_dtype
    return {p for m in experts for p in m.parameters(recurse=False)}


def _distribute(m: Experts, mesh: DeviceMesh, device: torch.device) -> None:
    rank, world = mesh.get_local_rank(), mesh.size()
    for name in _WEIGHTS:
        p = m._parameters[name]
        assert p is not None
        n = p.shape[0] // world
        rows = p.detach()[rank * n : (rank + 1) * n]
        # A copy, not a view: a view would keep the whole [E, …] tensor alive on every rank.
        local = rows.clone() if p.is_meta else rows.to(device, copy=True)
        shard = DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=p.shape, stride=p.stride())
        m.register_parameter(name, nn.Parameter(shard, requires_grad=p.requires_grad))


def _check_dropless(capacity_factor: float) -> None:
    if capacity_factor > 0:
        raise ConfigError(
            f"capacity_factor: {capacity_factor} is not supported with parallel fsdp+ep (expert "
            "parallelism is dropless: set capacity_factor 0, or use parallel fsdp)"
        )


class ExpertParallelExperts(Experts):
    """An `Experts` whose stacked weights are Shard(0) DTensors on `ep_mesh`. Reading `w1/w2/w3`
    gives this rank's experts as plain tensors, so `Experts`' own forward computes with them."""

    ep_mesh: DeviceMesh
    ep_param_dtype: torch.dtype | None

    def __getattr__(self, name: str) -> torch.Tensor | nn.Module:
        value = super().__getattr__(name)
        if name in _WEIGHTS and isinstance(value, DTensor):
            local = _ScaleGrad.apply(value.to_local(), 1.0 / self.ep_mesh.size())
            return local if self.ep_param_dtype is None else local.to(self.ep_param_dtype)
        return value

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x: [N, d]; idx, weights: [N, k] (global expert ids). Returns Σⱼ weights[:, j] · expert(x)."""
        _check_dropless(self.capacity_factor)
        world = self.ep_mesh.size()
        group = self.ep_mesh.get_group()
        n_local = self.num_experts  # this rank's experts (w1 reads as the local shard)
        k = idx.shape[1]
        _, order, counts = _sort_slots(idx, n_local * world)  # slots by expert = by owning rank
        sent = x.index_select(0, order // k)
        with torch.no_grad():
            # [W·E/W]: block s = how many slots rank s sends to each of this rank's experts.
            got = funcol.wait_tensor(funcol.all_to_all_single(counts, None, None, group))
            send_sizes = counts.view(world, n_local).sum(1).tolist()
            recv_sizes = got.view(world, n_local).sum(1).tolist()
            # Received rows are by source rank, then by local expert within each source.
            local_idx = torch.arange(n_local, device=x.device).repeat(world).repeat_interleave(got)
        recv = funcol.wait_tensor(funcol.all_to_all_single_autograd(sent, recv_sizes, send_sizes, group))
        out = self._local_experts(recv, local_idx)
        back = funcol.wait_tensor(funcol.all_to_all_single_autograd(out, send_sizes, recv_sizes, group))
        return _combine(back, order, weights).to(x.dtype)

    def _local_experts(self, recv: torch.Tensor, local_idx: torch.Tensor) -> torch.Tensor:
        """Each received row through its local expert, rows kept in received order."""
        if recv.shape[0] == 0:
            # Every rank must still get a gradient for its experts (zeros here), or the ranks would
            # disagree on which gradients exist and the norm's collectives would not match.
            tie = sum(getattr(self, n).sum() for n in _WEIGHTS)
            return recv + 0 * tie
        return super().forward(recv, local_idx.unsqueeze(1), recv.new_ones(recv.shape[0], 1))


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward scales the gradient (an expert's 1/W, see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` for gradients on several device meshes (FSDP's and "ep"): each mesh's
    norm is reduced on its own and the global norm combined from them. Returns the global norm."""
    by_mesh: dict[DeviceMesh | None, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is not None:
            by_mesh.setdefault(p.grad.device_mesh if isinstance(p.grad, DTensor) else None, []).append(p)
    norms = []
    for group in by_mesh.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group if p.grad is not None])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if not norms:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(norms))
    for group in by_mesh.values():
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total
