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

__all__ = ["is_dtensor", "local", "shards", "global_norm", "as_result", "local_norm"]


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
    if not torch.is_grad_enabled():
        return t.to_local()
    with torch.no_grad():
        return t.to_local()


@torch.no_grad()
def shards(tensors: list[Tensor]) -> list[Tensor]:
    """``local`` of each tensor, under one no-grad scope (1,000 scopes cost more than the norm)."""
    module = _dtensor_module()
    if module is None:
        return list(tensors)
    dtensor = module.DTensor
    return [t.to_local() if isinstance(t, dtensor) else t for t in tensors]


def _sharded(placement) -> bool:
    # Shard and _StridedShard (FSDP2 over tensor parallel on one dim; its is_shard() is False)
    # split the elements; a partial grad is summed into a replica before its norm is taken.
    return not (placement.is_replicate() or placement.is_partial())


@torch.no_grad()
def global_norm(grads: list[Tensor], norm_type: float, process_group=None, error_if_nonfinite: bool = False,
                local_grads: list[Tensor] | None = None):
    """The norm of all ``grads`` over every rank that holds a part of them, or None when they
    are all plain tensors and no ``process_group`` is given (the single-process case).

    DTensors are grouped by device mesh. A mesh dim is reduced when some grad is sharded along
    it; a grad replicated along a reduced dim is counted only by the ranks at
    coordinate 0 of that dim, so each element counts once. Every rank of a mesh joins its
    reductions, also one that counts none of its grads. A partial grad (a pending sum) is
    summed first: its norm needs the sum. Plain tensors count where they are. A
    ``process_group`` then reduces the whole, for shards that no mesh describes (pipeline
    stages, ZeRO-style slices). ``local_grads``: ``shards(grads)``, when the caller has them.
    Returns a plain 0-dim fp32 tensor (fp64 if a grad is fp64), the same value on every rank.
    """
    module = _dtensor_module()
    dtensor = None if module is None else module.DTensor
    # One look (and one hash) per grad: with thousands of DTensors, property reads and the
    # hashing of meshes and placements cost more than the norm. Decisions are per kind of grad
    # (mesh, placements), of which a model has a handful.
    kinds: dict = {}
    kind_of = [
        kinds.setdefault((g.device_mesh, g.placements), len(kinds))
        if dtensor is not None and isinstance(g, dtensor) else -1
        for g in grads
    ]
    if process_group is None and not kinds:
        return None
    groups_per_part: list[int] = []
    groups: list[str] = []
    part_of_key: dict[tuple[str, ...], int] = {}

    def part_index(key: tuple[str, ...]) -> int:
        if key not in part_of_key:
            part_of_key[key] = len(groups_per_part)
            groups_per_part.append(len(key))
            groups.extend(key)
        return part_of_key[key]

    # Parts are made in the order the meshes first appear, the same on every rank: the
    # collectives follow it.
    kinds_by_mesh: dict = {}
    for mesh, placements in kinds:
        kinds_by_mesh.setdefault(mesh, []).append(placements)
    part_of_kind = {}
    for mesh, mesh_kinds in kinds_by_mesh.items():
        coordinate = mesh.get_coordinate()
        if coordinate is None:  # grads of a mesh this rank is not in: nothing of them here
            part_of_kind.update({(mesh, kind): -1 for kind in mesh_kinds})
            continue
        reduced = [d for d in range(mesh.ndim) if any(_sharded(kind[d]) for kind in mesh_kinds)]
        part = part_index(tuple(mesh.get_group(d).group_name for d in reduced))
        for kind in mesh_kinds:
            counted = all(coordinate[d] == 0 for d in reduced if not _sharded(kind[d]))
            part_of_kind[(mesh, kind)] = part if counted else -1
    kind_parts = [part_of_kind[kind] for kind in kinds]
    kind_partial = [any(p.is_partial() for p in placements) for _, placements in kinds]
    kind_specs = list(kinds)
    if local_grads is None:
        local_grads = shards(grads)
    tensors = list(local_grads)
    parts = []
    for i, kind in enumerate(kind_of):
        if kind < 0:
            parts.append(part_index(()))
            continue
        parts.append(kind_parts[kind])
        if kind_partial[kind]:
            mesh, placements = kind_specs[kind]
            target = [module.Replicate() if p.is_partial() else p for p in placements]
            tensors[i] = grads[i].redistribute(mesh, target).to_local()
    if not groups_per_part:
        groups_per_part.append(0)
    group = None if process_group is None else process_group.group_name
    return torch.ops.steadystep.get_total_norm_sharded(
        tensors, parts, groups, groups_per_part, group, float(norm_type), bool(error_if_nonfinite)
    )


def as_result(norm: Tensor, grads: list[Tensor]) -> Tensor:
    """The norm as torch's clipping functions return it for ``grads``: in their promoted (real)
    dtype, and for DTensor grads a DTensor replicated over the first one's mesh, whose
    ``to_local()`` is the global norm on every rank (no collective, no host sync)."""
    if grads:
        dtype = functools.reduce(torch.promote_types, {g.dtype.to_real() for g in grads})
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
