"""Gradient guards: adaptive clipping whose state and decisions stay on the device.

``ZScoreClip`` is ZClip (Kumar et al. 2025; reference ``zclip.ZClip`` 1.0.0) as a drop-in for
``clip_grad_norm_``: the same constructor arguments, defaults and numbers, but the statistics
live in a device tensor and every decision is tensor math, so a step never waits for the GPU.
The math is the ``torch.ops.steadystep.zscore_clip_`` op (C++), shared with the C++ class.
"""

from collections.abc import Iterable

import torch
from torch import Tensor

from .clip_grad import _grads

__all__ = ["ZScoreClip"]

# NOTE [ZScoreClip state] (csrc/ops/zscore_clip.cpp): slots of the fp64 state vector.
_COUNT, _MEAN, _VAR, _NORM, _COEF, _SPIKE, _HEADER = range(7)


class ZScoreClip:
    r"""Adaptive gradient clipping at an EMA z-score of the gradient norm (ZClip).

    For the first ``max(warmup_steps, 1)`` steps the norms are collected (and the gradients
    clipped to ``max_grad_norm`` as :func:`torch.nn.utils.clip_grad_norm_` does); the last of
    them initialises the EMA with the collected norms' mean and variance. After that, with
    ``std = sqrt(var)`` and ``z = (norm - mean) / (std + eps)``:

    * ``mode="zscore"``: a spike is ``z > z_thresh``; it is clipped to
      ``(mean + z_thresh * std / (z / z_thresh)) * clip_factor`` (``clip_option=
      "adaptive_scaling"``) or to ``mean`` (``"mean"``);
    * ``mode="percentile"``: a spike is ``norm > mean + z_thresh * std``, clipped to that.

    The clip-to value is capped at ``max_grad_norm`` (when not None), the gradients are scaled
    by ``clip_to / (norm + 1e-6)`` when the norm exceeds it, and the EMA is updated with the
    clip-to value on a spike (the norm otherwise), unless ``skip_update_on_spike``.

    Args: as ``zclip.ZClip`` (same names and defaults).

    Differences from ``zclip.ZClip``: :meth:`step` / :meth:`clip_` return the norm as a 0-dim
    device tensor (the reference returns a float, i.e. syncs), and the norm is accumulated in
    fp32 (fp64 for fp64 gradients) by steadystep's multi-tensor kernel, whatever the dtype.
    """

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, max_grad_norm: float | None = 1.0,
                 eps: float = 1e-6, warmup_steps: int = 25, mode: str = "zscore",
                 clip_option: str = "adaptive_scaling", clip_factor: float = 1.0,
                 skip_update_on_spike: bool = False) -> None:
        mode = mode.lower()
        if mode == "zscore":
            if clip_option not in ("mean", "adaptive_scaling"):
                raise ValueError("For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.")
        elif mode != "percentile":
            raise ValueError("mode must be either 'zscore' or 'percentile'.")
        self.alpha = float(alpha)
        self.z_thresh = float(z_thresh)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.eps = float(eps)
        self.warmup_steps = int(warmup_steps)
        self.mode = mode
        self.clip_option = clip_option if mode == "zscore" else None
        self.clip_factor = float(clip_factor)
        self.skip_update_on_spike = bool(skip_update_on_spike)
        self.state: Tensor | None = None

    def _new_state(self, device: torch.device) -> Tensor:
        return torch.zeros(_HEADER + max(self.warmup_steps, 1), dtype=torch.float64, device=device)

    def clip_grads_(self, grads: list[Tensor], total_norm: Tensor | None = None) -> Tensor:
        """One step on a list of gradients (in place); ``total_norm``: their norm, when the
        caller has it (e.g. over all ranks). Returns the norm before clipping."""
        device = total_norm.device if total_norm is not None else (grads[0].device if grads else torch.device("cpu"))
        if self.state is None:
            self.state = self._new_state(device)
        elif self.state.device != device:
            self.state = self.state.to(device)  # a loaded checkpoint, once
        return torch.ops.steadystep.zscore_clip_(
            grads, self.state, self.alpha, self.z_thresh, self.max_grad_norm, self.eps, self.warmup_steps,
            self.mode, self.clip_option or "adaptive_scaling", self.clip_factor, self.skip_update_on_spike,
            total_norm)

    def clip_(self, parameters: Tensor | Iterable[Tensor]) -> Tensor:
        """Clip the gradients of ``parameters`` in place (drop-in for ``clip_grad_norm_``);
        returns their total L2 norm before clipping, a 0-dim device tensor."""
        return self.clip_grads_(_grads(parameters))

    def step(self, model: torch.nn.Module) -> Tensor:
        """``zclip.ZClip.step``: :meth:`clip_` on ``model.parameters()``, after backward and
        before the optimizer step. Returns the norm as a device tensor (no sync)."""
        return self.clip_(model.parameters())

    def _slot(self, i: int) -> Tensor:
        if self.state is None:
            raise RuntimeError("ZScoreClip: no step taken yet")
        return self.state[i]

    @property
    def step_count(self) -> Tensor:
        """Steps taken (0-dim fp64 device tensor)."""
        return self._slot(_COUNT)

    @property
    def initialized(self) -> Tensor:
        """Whether the warmup is over (0-dim bool device tensor)."""
        return self._slot(_COUNT) >= max(self.warmup_steps, 1)

    @property
    def mean(self) -> Tensor:
        """EMA mean of the norm (0-dim fp64 device tensor; 0 during warmup)."""
        return self._slot(_MEAN)

    @property
    def var(self) -> Tensor:
        """EMA variance of the norm (0-dim fp64 device tensor; 0 during warmup)."""
        return self._slot(_VAR)

    @property
    def last_norm(self) -> Tensor:
        """Last step's gradient norm, before clipping (0-dim fp64 device tensor)."""
        return self._slot(_NORM)

    @property
    def last_clip_coef(self) -> Tensor:
        """Last step's factor on the gradients (1: not clipped; 0-dim fp64 device tensor)."""
        return self._slot(_COEF)

    @property
    def last_spike(self) -> Tensor:
        """Whether last step's norm was a spike, clipped to the z-score threshold (0-dim bool)."""
        return self._slot(_SPIKE) != 0

    def state_dict(self) -> dict:
        """Hyper-parameters and the state tensor (a copy, on its device)."""
        return {
            "alpha": self.alpha, "z_thresh": self.z_thresh, "max_grad_norm": self.max_grad_norm,
            "eps": self.eps, "warmup_steps": self.warmup_steps, "mode": self.mode,
            "clip_option": self.clip_option, "clip_factor": self.clip_factor,
            "skip_update_on_spike": self.skip_update_on_spike,
            "state": None if self.state is None else self.state.clone(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`'s hyper-parameters and state; the next step continues
        exactly where the saved one left off."""
        state = state_dict["state"]
        warmup = int(state_dict["warmup_steps"])
        if state is not None and state.numel() != _HEADER + max(warmup, 1):
            raise ValueError(f"ZScoreClip: state has {state.numel()} elements, expected {_HEADER + max(warmup, 1)}")
        for key in ("alpha", "z_thresh", "max_grad_norm", "eps", "warmup_steps", "mode", "clip_option",
                    "clip_factor", "skip_update_on_spike"):
            setattr(self, key, state_dict[key])
        device = self.state.device if self.state is not None else None
        self.state = None if state is None else state.to(device=device or state.device, dtype=torch.float64,
                                                          copy=True)
