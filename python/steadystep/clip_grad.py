"""Gradient norms, as ``torch.nn.utils``; thin wrappers over ``torch.ops.steadystep``."""

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["get_total_norm"]


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
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

    Returns:
        Tensor: the norm, 0-dim, on ``tensors[0]``'s device, in the inputs' promoted dtype.
    """
    del foreach  # one multi-tensor kernel serves every case
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    return torch.ops.steadystep.get_total_norm(list(tensors), float(norm_type), bool(error_if_nonfinite))
