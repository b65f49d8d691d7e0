"""Gradient guards: adaptive clipping and spike skipping whose state and decisions stay on the
device. Each policy works alone (``norm = guard.clip_(model.parameters())`` for the clip policies)
and as the ``guard=`` of the fused optimizers, which decide it inside their step.

``ZScoreClip`` is ZClip (Kumar et al. 2025; reference ``zclip.ZClip`` 1.0.0) as a drop-in for
``clip_grad_norm_``: the same constructor arguments, defaults and numbers, but the statistics
live in a device tensor and every decision is tensor math, so a step never waits for the GPU.
The math is the ``torch.ops.steadystep.zscore_clip_`` op (C++), shared with the C++ class.
"""

from collections.abc import Iterable

import math

import torch
from torch import Tensor

from .clip_grad import _grads

__all__ = ["AdaptiveGradClip", "PercentileClip", "SpikeSkip", "ZScoreClip"]

# NOTE [ZScoreClip state] (csrc/guard/zscore_clip_policy.cpp): slots of the fp64 state vector.
_COUNT, _MEAN, _VAR, _NORM, _COEF, _SPIKE, _HEADER = range(7)


class _Guard:
    """A guard policy: its kind and args as the ops take them (NOTE [Guard policies] in
    csrc/guard/policy.h; the math is C++), and its state, one fp64 device tensor created at the
    first step. Subclasses set ``_KIND``, ``_HYPER`` (the constructor arguments, in order) and
    ``_args()``."""

    _KIND = ""
    _ROLE = "clip"  # "clip" (scales the gradients), "skip" (vetoes the step) or "agc"
    _HYPER: tuple[str, ...] = ()
    state: Tensor | None = None

    def _args(self) -> list[float]:
        raise NotImplementedError

    def _state_size(self) -> int:
        raise NotImplementedError

    def _state_on(self, device: torch.device) -> Tensor:
        if self.state is None:
            self.state = torch.zeros(self._state_size(), dtype=torch.float64, device=device)
        elif self.state.device != device:
            self.state = self.state.to(device)  # a loaded checkpoint, once
        return self.state

    def _state_for(self, grads: list[Tensor], total_norm: Tensor | None) -> Tensor:
        """The state on the device a standalone clip step works on: total_norm's when given, else
        the first gradient's (CPU for none)."""
        device = total_norm.device if total_norm is not None else (grads[0].device if grads else torch.device("cpu"))
        return self._state_on(device)

    def _slot(self, i: int) -> Tensor:
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__}: no step taken yet")
        return self.state[i]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._HYPER)
        return f"{type(self).__name__}({args})"

    def state_dict(self) -> dict:
        """Hyper-parameters and the state tensor (a copy, on its device)."""
        out = {k: getattr(self, k) for k in self._HYPER}
        out["state"] = None if self.state is None else self.state.clone()
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`'s hyper-parameters and state; the next step continues
        exactly where the saved one left off. A state of the wrong size is refused (ValueError)
        before anything changes."""
        probe = type(self).__new__(type(self))
        type(self).__init__(probe, **{k: state_dict[k] for k in self._HYPER})  # validates
        state = state_dict["state"]
        if state is not None and state.numel() != probe._state_size():
            raise ValueError(f"{type(self).__name__}: state has {state.numel()} elements, "
                             f"expected {probe._state_size()}")
        device = self.state.device if self.state is not None else None
        self.__dict__.update(probe.__dict__)
        self.state = None if state is None else state.to(device=device or state.device, dtype=torch.float64,
                                                          copy=True)


class ZScoreClip(_Guard):
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

    _KIND = "zscore"
    _HYPER = ("alpha", "z_thresh", "max_grad_norm", "eps", "warmup_steps", "mode", "clip_option",
              "clip_factor", "skip_update_on_spike")

    def _state_size(self) -> int:
        return _HEADER + max(self.warmup_steps, 1)

    def _args(self) -> list[float]:
        # csrc/guard/zscore_clip_policy.cpp's order; None is nan, a choice its index.
        return [self.alpha, self.z_thresh, math.nan if self.max_grad_norm is None else self.max_grad_norm,
                self.eps, float(self.warmup_steps), float(self.mode == "percentile"),
                float(self.clip_option == "mean"), self.clip_factor, float(self.skip_update_on_spike)]

    def clip_grads_(self, grads: list[Tensor], total_norm: Tensor | None = None) -> Tensor:
        """One step on a list of gradients (in place); ``total_norm``: their norm, when the
        caller has it (e.g. over all ranks). Returns the norm before clipping."""
        return torch.ops.steadystep.zscore_clip_(
            grads, self._state_for(grads, total_norm), self.alpha, self.z_thresh, self.max_grad_norm, self.eps, self.warmup_steps,
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


class AdaptiveGradClip(_Guard):
    """AGC (NFNets; ``timm.utils.adaptive_clip_grad``) as a guard of the fused optimizers: each
    unit (row along dim 0) of each gradient is clipped to ``clip_factor * max(|unit of the
    weight|, eps)`` by :func:`steadystep.adaptive_clip_grad_` before the step's norm pass; the
    rest of the step (non-finite guard, other policies) sees the clipped gradients. No state.
    Refused with a GradScaler (the scaled gradients would be measured against unscaled
    weights): unscale first (``scaler.unscale_(opt)``) or use bf16."""

    _KIND = "agc"
    _ROLE = "agc"
    _HYPER = ("clip_factor", "eps", "norm_type")

    def __init__(self, clip_factor: float = 0.01, eps: float = 1e-3, norm_type: float = 2.0) -> None:
        if not clip_factor > 0:
            raise ValueError(f"AdaptiveGradClip: clip_factor must be > 0, got {clip_factor}")
        if not eps >= 0:
            raise ValueError(f"AdaptiveGradClip: eps must be >= 0, got {eps}")
        if not norm_type > 0:
            raise ValueError(f"AdaptiveGradClip: norm_type must be > 0, got {norm_type}")
        self.clip_factor = float(clip_factor)
        self.eps = float(eps)
        self.norm_type = float(norm_type)
        self.state = None

    def _state_size(self) -> int:
        return 0

    def _args(self) -> list[float]:
        return [self.clip_factor, self.eps, self.norm_type]

    def clip_(self, parameters: Tensor | Iterable[Tensor]) -> None:
        """``timm.utils.adaptive_clip_grad(parameters, clip_factor, eps, norm_type)``."""
        from .clip_grad import adaptive_clip_grad_
        adaptive_clip_grad_(parameters, self.clip_factor, self.eps, self.norm_type)


# NOTE [PercentileClip state] (csrc/guard/percentile_clip_policy.cpp): slots of the state vector.
_P_COUNT, _P_NORM, _P_THRESHOLD, _P_COEF, _P_HEADER = range(5)


class PercentileClip(_Guard):
    r"""AutoClip (Seetharaman et al. 2020): clip the global gradient norm to the ``quantile`` of
    the last ``history_length`` norms, as ``autoclip.torch.QuantileClip(parameters, quantile,
    history_length, global_threshold=True)`` (autoclip 0.2.1) does, with the same arguments,
    defaults, checks and numbers.

    Each step, the threshold is ``torch.quantile(history, quantile)`` (linear interpolation;
    ``inf`` while the history is empty, so the first step is not clipped), the gradients are
    scaled as :func:`torch.nn.utils.clip_grad_norm_` with ``max_norm=threshold`` scales them
    (``min(threshold / (norm + 1e-6), 1)``), then the norm enters the history. The history is a
    ring buffer in the state tensor on the gradients' device, and the quantile is computed there
    (sort, gather, lerp): no step reads a device value on the host.

    Differences from ``QuantileClip``: it is constructed without the parameters (pass them to
    :meth:`clip_`), has only the global-threshold mode (no per-parameter thresholds), returns
    the norm as a 0-dim device tensor, and takes the norm with steadystep's multi-tensor kernel
    (fp32 accumulation, fp64 for fp64 gradients, then the gradients' dtype, as the reference
    returns it), which can differ from torch's per-tensor reduction by its rounding.
    """

    _KIND = "percentile"
    _HYPER = ("quantile", "history_length")

    def __init__(self, quantile: float = 0.9, history_length: int = 1000) -> None:
        # autoclip's checks, types and messages.
        if not isinstance(quantile, (float, Tensor)):
            raise TypeError("QuantileClip quantile value must be a float or a tensor.")
        if not isinstance(history_length, int):
            raise TypeError("QuantileClip history_length must be an int.")
        if quantile < 0.0 or quantile > 1.0:
            raise ValueError("QuantileClip quantile value must be between 0.0 and 1.0.")
        if history_length <= 0:
            raise ValueError("QuantileClip history length must be greater than zero.")
        self.quantile = float(quantile)
        self.history_length = int(history_length)
        self.state = None

    def _state_size(self) -> int:
        return _P_HEADER + self.history_length

    def _args(self) -> list[float]:
        return [self.quantile, float(self.history_length)]

    def clip_grads_(self, grads: list[Tensor], total_norm: Tensor | None = None) -> Tensor:
        """One step on a list of gradients (in place); ``total_norm``: their norm, when the
        caller has it (e.g. over all ranks). Returns the norm before clipping."""
        return torch.ops.steadystep.percentile_clip_(grads, self._state_for(grads, total_norm), self.quantile,
                                                     self.history_length, total_norm)

    def clip_(self, parameters: Tensor | Iterable[Tensor]) -> Tensor:
        """Clip the gradients of ``parameters`` in place (drop-in for ``clip_grad_norm_``);
        returns their total L2 norm before clipping, a 0-dim device tensor."""
        return self.clip_grads_(_grads(parameters))

    @property
    def step_count(self) -> Tensor:
        """Steps taken (0-dim fp64 device tensor)."""
        return self._slot(_P_COUNT)

    @property
    def last_norm(self) -> Tensor:
        """Last step's gradient norm, before clipping (0-dim fp64 device tensor)."""
        return self._slot(_P_NORM)

    @property
    def last_threshold(self) -> Tensor:
        """The threshold last step's norm was clipped to (inf at the first step; 0-dim fp64)."""
        return self._slot(_P_THRESHOLD)

    @property
    def last_clip_coef(self) -> Tensor:
        """Last step's factor on the gradients (1: not clipped; 0-dim fp64 device tensor)."""
        return self._slot(_P_COEF)


# NOTE [SpikeSkip state] (csrc/guard/spike_skip_policy.cpp): slots of the state vector.
_S_COUNT, _S_NORM, _S_SKIPPED, _S_MEAN, _S_STD, _S_HEADER = range(6)


class SpikeSkip(_Guard):
    r"""Skip the optimizer step when the gradient norm spikes (Megatron's
    ``grad_norm_skip_threshold``, OLMo-core's z-score skip step), decided on the device inside
    the fused step: a skipped step leaves parameters and optimizer state bit-identical, does not
    advance the step count and adds one to ``skipped_steps``, as a non-finite gradient does.

    A step is skipped when its norm is above ``max_norm`` (from the first step), or, once the
    window holds at least ``warmup_steps`` norms, when ``norm - mean > z_thresh * std`` with
    ``std, mean = torch.std_mean(window)`` (unbiased) over the last ``window`` norms before it.
    Every finite norm enters the window, skipped ones too, so a lasting shift of the norm stops
    being an outlier after a while instead of stalling training. A skip policy: use it in a fused
    optimizer's ``guard=`` (alone or with one clip policy), not on its own.

    Args:
        max_norm: absolute bound on the norm (None: none).
        z_thresh: z-score bound (None: none). One of the two must be given.
        window: how many of the last finite norms the statistics cover (>= 2).
        warmup_steps: norms needed in the window before the z-score rule applies (2 to window).
    """

    _KIND = "spike_skip"
    _ROLE = "skip"
    _HYPER = ("max_norm", "z_thresh", "window", "warmup_steps")

    def __init__(self, max_norm: float | None = None, z_thresh: float | None = 6.0, window: int = 128,
                 warmup_steps: int = 64) -> None:
        if max_norm is None and z_thresh is None:
            raise ValueError("SpikeSkip: max_norm or z_thresh must be given")
        if max_norm is not None and not max_norm >= 0:
            raise ValueError(f"SpikeSkip: max_norm must be >= 0, got {max_norm}")
        if z_thresh is not None and not z_thresh >= 0:
            raise ValueError(f"SpikeSkip: z_thresh must be >= 0, got {z_thresh}")
        if int(window) != window or window < 2:
            raise ValueError(f"SpikeSkip: window must be an integer >= 2, got {window}")
        if int(warmup_steps) != warmup_steps or not 2 <= warmup_steps <= window:
            raise ValueError(f"SpikeSkip: warmup_steps must be an integer in [2, window={window}], "
                             f"got {warmup_steps}")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.z_thresh = None if z_thresh is None else float(z_thresh)
        self.window = int(window)
        self.warmup_steps = int(warmup_steps)
        self.state = None

    def _state_size(self) -> int:
        return _S_HEADER + self.window

    def _args(self) -> list[float]:
        none = math.nan
        return [none if self.max_norm is None else self.max_norm, none if self.z_thresh is None else self.z_thresh,
                float(self.window), float(self.warmup_steps)]

    @property
    def step_count(self) -> Tensor:
        """Finite norms seen (0-dim fp64 device tensor)."""
        return self._slot(_S_COUNT)

    @property
    def last_norm(self) -> Tensor:
        """Last step's gradient norm (0-dim fp64 device tensor)."""
        return self._slot(_S_NORM)

    @property
    def last_skipped(self) -> Tensor:
        """Whether this policy skipped the last step (0-dim bool device tensor)."""
        return self._slot(_S_SKIPPED) != 0

    @property
    def mean(self) -> Tensor:
        """Mean of the window the last norm was judged against (0 while empty; 0-dim fp64)."""
        return self._slot(_S_MEAN)

    @property
    def std(self) -> Tensor:
        """Unbiased standard deviation of that window (0 below 2 norms; 0-dim fp64)."""
        return self._slot(_S_STD)
