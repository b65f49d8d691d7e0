"""Gradients sharded over ranks: DTensors (FSDP2, tensor parallel, HSDP) and hand-made shards
with a ``process_group``. This module only says which rank counts which local tensor and over
which groups; the norm itself is one op, ``torch.ops.steadystep.get_total_norm_sharded``
(NOTE [Sharded norm] in csrc/ops/sharded_norm.cpp), which reduces with torch's functional
collectives and never synchronises with the host.
"""

import functools
import sys

import torch
from torch import Tensor

__all__ = ["is_dtensor", "local", "global_norm", "as_result", "local_norm"]


def _dtensor_module():
    # No tensor can be a DTensor unless torch.distributed.tensor has been imported: checking
    # sys.modules keeps `import steadystep` and the single-process path free of that import.
    return sys.modules.get("torch.distributed.tensor")


def is_dtensor(t: Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor``."""
    module = _dtensor_module()
    return module is not None and isinstance(t, module.DTensor)


def local(t: Tensor) -> Tensor:
    """The tensor this rank holds: a DTensor's local shard (its storage, for in-place updates),
    else ``t``. Never recorded by autograd: with grad mode on, ``to_local`` builds an autograd
    node, about 0.1 ms a tensor (1,000 DTensor grads: 0.1 s a step); without it, a lookup."""
    if not is_dtensor(t):
        return t
    with torch.no_grad():
        return t.to_local()


def _group_name(group) -> str:
    return group.group_name


@torch.no_grad()
def global_norm(grads: list[Tensor], norm_type: float, process_group=None, error_if_nonfinite: bool = False):
    """The norm of all ``grads`` over every rank that holds a part of them, or None when they
    are all plain tensors and no ``process_group`` is given (the single-process case).

    DTensors are grouped by device mesh. A mesh dim is reduced when some grad is sharded (or
    partial) along it; a grad replicated along a reduced dim is counted only by the ranks at
    coordinate 0 of that dim, so each element counts once. A partial grad (a pending sum) is
    summed first: its norm needs the sum. Plain tensors count where they are. A
    ``process_group`` then reduces the whole, for shards that no mesh describes (pipeline
    stages, ZeRO-style slices). Returns a plain 0-dim fp32 tensor (fp64 if a grad is fp64),
    the same value on every rank.
    """
    if process_group is None and not any(is_dtensor(g) for g in grads):
        return None
    module = _dtensor_module()
    tensors, parts = [], []
    part_of_key: dict[tuple[str, ...], int] = {}
    groups_per_part: list[int] = []
    groups: list[str] = []

    def part_index(key: tuple[str, ...]) -> int:
        if key not in part_of_key:
            part_of_key[key] = len(groups_per_part)
            groups_per_part.append(len(key))
            groups.extend(key)
        return part_of_key[key]

    by_mesh: dict = {}
    for i, g in enumerate(grads):
        if is_dtensor(g):
            by_mesh.setdefault(g.device_mesh, []).append(i)
    placed: dict[int, tuple[Tensor, int]] = {}
    for mesh, indices in by_mesh.items():
        coordinate = mesh.get_coordinate()
        reduced = [
            d for d in range(mesh.ndim)
            if any(not grads[i].placements[d].is_replicate() for i in indices)
        ]
        key = tuple(_group_name(mesh.get_group(d)) for d in reduced) if coordinate is not None else ()
        for i in indices:
            g = grads[i]
            if any(p.is_partial() for p in g.placements):
                g = g.redistribute(g.device_mesh, [module.Replicate() if p.is_partial() else p for p in g.placements])
            counted = coordinate is not None and all(
                coordinate[d] == 0 for d in reduced if g.placements[d].is_replicate()
            )
            placed[i] = (g.to_local(), part_index(key) if counted else -1)
    for i, g in enumerate(grads):
        t, part = placed.get(i) or (g, part_index(()))
        tensors.append(t)
        parts.append(part)
    if not groups_per_part:
        groups_per_part.append(0)
    group = None if process_group is None else _group_name(process_group)
    return torch.ops.steadystep.get_total_norm_sharded(
        tensors, parts, groups, groups_per_part, group, float(norm_type), bool(error_if_nonfinite)
    )


def as_result(norm: Tensor, grads: list[Tensor]) -> Tensor:
    """The norm as torch's clipping functions return it for ``grads``: in their promoted (real)
    dtype, and for DTensor grads a DTensor replicated over the first one's mesh, whose
    ``to_local()`` is the global norm on every rank (no collective, no host sync)."""
    if grads:
        dtype = functools.reduce(torch.promote_types, (g.dtype.to_real() for g in grads))
        norm = norm.to(dtype)
    first = next((g for g in grads if is_dtensor(g)), None)
    if first is None:
        return norm
    module = _dtensor_module()
    mesh = first.device_mesh
    return module.DTensor.from_local(norm, mesh, [module.Replicate()] * mesh.ndim, run_check=False)


def local_norm(total_norm: Tensor) -> Tensor:
    """A norm given to the clipping functions, as a plain tensor of this rank: a replicated
    DTensor's local value, a partial one's reduced value (as torch would use it)."""
    if not is_dtensor(total_norm):
        return total_norm
    if any(p.is_partial() for p in total_norm.placements):
        return total_norm.full_tensor()
    return total_norm.to_local()
