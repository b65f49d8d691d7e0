"""Gradient clipping, as ``torch.nn.utils``: thin wrappers over ``torch.ops.steadystep``.

Same signatures and results as torch's functions (``foreach`` is accepted and ignored: one
multi-tensor kernel per device serves every case). The norm stays a device tensor: nothing
waits for the GPU, except the ``error_if_nonfinite`` check, as in torch.

Sharded gradients: DTensor gradients (FSDP2, tensor parallel, HSDP) give the global norm, each
element counted once, with one all-reduce per sharded mesh dim; the keyword-only
``process_group`` reduces over one more group (hand-made shards, pipeline stages). The norm
comes back as torch returns it, a DTensor replicated over the mesh: ``.to_local()`` is the
global value on every rank, already reduced, still on the device.
"""

import types
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor

from . import _distributed

__all__ = [
    "get_total_norm",
    "clip_grads_with_norm_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "adaptive_clip_grad_",
]

_TensorOrTensors = Tensor | Iterable[Tensor]


def _tensors(tensors: _TensorOrTensors) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _grads(parameters: _TensorOrTensors) -> list[Tensor]:
    if isinstance(parameters, types.GeneratorType):
        parameters = list(parameters)
        if not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return [p.grad for p in _tensors(parameters) if p.grad is not None]


def get_total_norm(
    tensors: _TensorOrTensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    process_group: "torch.distributed.ProcessGroup | None" = None,
) -> Tensor:
    r"""Compute the norm of an iterable of tensors, taken together as one vector.

    Same signature and result as :func:`torch.nn.utils.get_total_norm`, from one
    multi-tensor kernel per device that accumulates in fp32 (fp64 for fp64 inputs) and never
    synchronises with the host.

    Args:
        tensors (Iterable[Tensor] or Tensor): the tensors (usually gradients).
        norm_type (float): order of the norm; ``inf`` for the max-norm.
        error_if_nonfinite (bool): raise if the norm is nan or inf (this check reads the norm
            on the host, as torch's does).
        foreach (bool, optional): accepted for compatibility and ignored.
        process_group (ProcessGroup, optional): ranks that hold other shards of these tensors;
            the norm is reduced over it (after the DTensors' own meshes).

    Returns:
        Tensor: the norm, 0-dim, on ``tensors[0]``'s device, in the inputs' promoted dtype (for
        DTensors, a replicated DTensor).
    """
    tensors = _tensors(tensors)
    sharded = _distributed.global_norm(tensors, norm_type, process_group, error_if_nonfinite)
    if sharded is None:
        return torch.ops.steadystep.get_total_norm(tensors, float(norm_type), bool(error_if_nonfinite))
    return _distributed.as_result(sharded, tensors)


def clip_grads_with_norm_(
    parameters: _TensorOrTensors, max_norm: float, total_norm: Tensor, foreach: bool | None = None
) -> None:
    r"""Scale the gradients of ``parameters`` by ``min(1, max_norm / (total_norm + 1e-6))``.

    As :func:`torch.nn.utils.clip_grads_with_norm_`, in place; the coefficient is computed and
    applied on the device, and when it is 1 the CUDA kernel reads and writes no gradient.

    Args:
        parameters (Iterable[Tensor] or Tensor): tensors whose ``.grad`` to scale.
        max_norm (float): largest allowed norm (>= 0).
        total_norm (Tensor): the norm to clip by (e.g. from :func:`get_total_norm`).
        foreach (bool, optional): accepted for compatibility and ignored.
    """
    grads = _distributed.shards(_grads(parameters))
    torch.ops.steadystep.clip_grads_with_norm_(grads, float(max_norm), _distributed.local_norm(total_norm))


def clip_grad_norm_(
    parameters: _TensorOrTensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    process_group: "torch.distributed.ProcessGroup | None" = None,
) -> Tensor:
    r"""Clip the gradient norm of ``parameters``, as :func:`torch.nn.utils.clip_grad_norm_`.

    The norm of all gradients together is computed as by :func:`get_total_norm`, and the
    gradients are scaled in place by ``min(1, max_norm / (total_norm + 1e-6))``. Two
    multi-tensor passes at most (one when no clipping is needed), no host synchronisation.

    Args:
        parameters (Iterable[Tensor] or Tensor): tensors whose ``.grad`` to clip.
        max_norm (float): largest allowed norm (>= 0).
        norm_type (float): order of the norm; ``inf`` for the max-norm. Default: 2.
        error_if_nonfinite (bool): raise if the norm is nan or inf. Default: False.
        foreach (bool, optional): accepted for compatibility and ignored.
        process_group (ProcessGroup, optional): ranks that hold other shards of these
            gradients; the norm is reduced over it (after the DTensors' own meshes), so every
            rank clips by the same coefficient.

    Returns:
        Tensor: the total norm of the gradients before clipping (0-dim; for DTensor gradients a
        replicated DTensor).
    """
    grads = _grads(parameters)
    local_grads = _distributed.shards(grads)
    sharded = _distributed.global_norm(grads, norm_type, process_group, error_if_nonfinite, local_grads)
    if sharded is None:
        return torch.ops.steadystep.clip_grad_norm_(grads, float(max_norm), float(norm_type), bool(error_if_nonfinite))
    total = _distributed.as_result(sharded, grads)  # in torch's dtype, as torch clips with it
    torch.ops.steadystep.clip_grads_with_norm_(local_grads, float(max_norm), _distributed.local_norm(total))
    return total


def clip_grad_value_(parameters: _TensorOrTensors, clip_value: float, foreach: bool | None = None) -> None:
    r"""Clamp the gradients of ``parameters`` into ``[-clip_value, clip_value]`` in place, as
    :func:`torch.nn.utils.clip_grad_value_` (nan stays nan).

    Args:
        parameters (Iterable[Tensor] or Tensor): tensors whose ``.grad`` to clamp.
        clip_value (float): the bound (>= 0).
        foreach (bool, optional): accepted for compatibility and ignored.
    """
    torch.ops.steadystep.clip_grad_value_(_distributed.shards(_grads(parameters)), float(clip_value))


def adaptive_clip_grad_(
    parameters: _TensorOrTensors, clip_factor: float = 0.01, eps: float = 1e-3, norm_type: float = 2.0
) -> None:
    r"""Adaptive gradient clipping (AGC, NFNets), as :func:`timm.utils.adaptive_clip_grad`.

    Each unit of each gradient (a row along dim 0 for a parameter of more than one dim, else the
    whole tensor) is scaled in place by ``max_norm / max(norm(g_unit), 1e-6)`` unless its norm
    is below ``max_norm = clip_factor * max(norm(w_unit), eps)``. The same values as timm's
    (its ops rounded in the parameter's dtype), from one multi-tensor kernel per device that
    accumulates the norms in fp32 (fp64 for fp64) and never synchronises with the host.

    Args:
        parameters (Iterable[Tensor] or Tensor): the parameters whose ``.grad`` is clipped.
        clip_factor (float): the largest gradient-to-weight norm ratio per unit (> 0).
        eps (float): the smallest weight norm a unit is measured against (>= 0).
        norm_type (float): order of the unit norms, > 0 or ``inf``.

    Unlike timm's, which accepts anything, it raises ``ValueError`` for ``clip_factor <= 0``,
    ``eps < 0``, ``norm_type <= 0`` or ``-inf``, or a grad whose dtype differs from its
    parameter's, and ``RuntimeError`` for gradients on several devices; every check runs before
    the first gradient changes.
    """
    params = [p for p in _tensors(parameters) if p.grad is not None]
    if not params:
        return  # an empty list has no tensor to dispatch on
    torch.ops.steadystep.adaptive_clip_grad_(
        [p.detach() for p in params], [p.grad for p in params], float(clip_factor), float(eps), float(norm_type)
    )
