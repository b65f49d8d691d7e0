"""Learning-rate schedulers for PyTorch whose schedule math is steadystep's C++.

Each class of PyTorch's parity set subclasses the ``torch.optim.lr_scheduler`` class of the same
name: constructor, arguments, validation and ``state_dict`` are PyTorch's (so checkpoints
cross-load and ``isinstance`` checks hold), while ``get_lr`` and the closed form come from
``steadystep._C``, the same code the LibTorch classes run.
"""

import warnings
from typing import Any

from torch.optim import Optimizer, swa_utils
from torch.optim import lr_scheduler as _torch
from torch.optim.lr_scheduler import (
    EPOCH_DEPRECATION_WARNING,
    LRScheduler,
    _enable_get_lr_call,
    _param_groups_val_list,
    _update_param_group_val,
    _warn_get_lr_called_within_step,
)

from . import _C

__all__ = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "ChainedScheduler",
    "SWALR",
    "LRScheduler",
    "WarmupCosineLR",
    "WarmupStableDecayLR",
    "InverseSqrtLR",
    "ExponentialDecayLR",
    "BoundedLR",
    "RandomLR",
]


class _CppSchedule(LRScheduler):
    """Mixin for the schedulers whose math is in C++: subclasses say which C++ schedule their
    attributes describe (:meth:`_schedule`); this class asks it for the lrs."""

    def _schedule(self) -> Any:
        raise NotImplementedError

    def _context(self) -> Any:
        return _C.StepContext(
            self.last_epoch,
            self._step_count,
            self._is_initial,
            [float(lr) for lr in self.base_lrs],
            [float(group["lr"]) for group in self.optimizer.param_groups],
        )

    def get_lr(self) -> list[float]:
        """Compute the next learning rate of each param group (PyTorch's recursive form)."""
        _warn_get_lr_called_within_step(self)
        return self._schedule().get_lr(self._context())

    def _get_closed_form_lr(self) -> list[float]:
        return self._schedule().closed_form_lr(self._context())


class LambdaLR(_CppSchedule, _torch.LambdaLR):
    """:class:`torch.optim.lr_scheduler.LambdaLR`: ``lr = base_lr * lr_lambda(epoch)``."""

    def _schedule(self) -> Any:
        return _C.Lambda(list(self.lr_lambdas), len(self.optimizer.param_groups))


class MultiplicativeLR(_CppSchedule, _torch.MultiplicativeLR):
    """:class:`torch.optim.lr_scheduler.MultiplicativeLR`: ``lr *= lr_lambda(epoch)`` each step."""

    def _schedule(self) -> Any:
        return _C.Multiplicative(list(self.lr_lambdas), len(self.optimizer.param_groups))


class StepLR(_CppSchedule, _torch.StepLR):
    """:class:`torch.optim.lr_scheduler.StepLR`: ``lr *= gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        _C.Step(step_size, gamma)  # validates before the optimizer is touched
        super().__init__(optimizer, step_size, gamma, last_epoch)

    def _schedule(self) -> Any:
        return _C.Step(self.step_size, self.gamma)


class MultiStepLR(_CppSchedule, _torch.MultiStepLR):
    """:class:`torch.optim.lr_scheduler.MultiStepLR`: ``lr *= gamma`` at each milestone."""

    def _schedule(self) -> Any:
        return _C.MultiStep(list(self.milestones.elements()), self.gamma)


class ConstantLR(_CppSchedule, _torch.ConstantLR):
    """:class:`torch.optim.lr_scheduler.ConstantLR`: ``lr * factor`` for ``total_iters`` steps."""

    def _schedule(self) -> Any:
        return _C.Constant(self.factor, self.total_iters)


class LinearLR(_CppSchedule, _torch.LinearLR):
    """:class:`torch.optim.lr_scheduler.LinearLR`: the lr factor moves linearly from
    ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    def _schedule(self) -> Any:
        return _C.Linear(self.start_factor, self.end_factor, self.total_iters)


class ExponentialLR(_CppSchedule, _torch.ExponentialLR):
    """:class:`torch.optim.lr_scheduler.ExponentialLR`: ``lr *= gamma`` every step."""

    def _schedule(self) -> Any:
        return _C.Exponential(self.gamma)


class PolynomialLR(_CppSchedule, _torch.PolynomialLR):
    """:class:`torch.optim.lr_scheduler.PolynomialLR`: ``lr = base_lr * (1 - t/total_iters)**power``."""

    def _schedule(self) -> Any:
        return _C.Polynomial(self.total_iters, self.power)


class CosineAnnealingLR(_CppSchedule, _torch.CosineAnnealingLR):
    r""":class:`torch.optim.lr_scheduler.CosineAnnealingLR`:
    :math:`\eta_t = \eta_{min} + \frac{1}{2}(\eta_{base} - \eta_{min})(1 + \cos(\pi t / T_{max}))`,
    computed recursively as PyTorch does; the sequence equals PyTorch's to the last bit.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        T_max (int): steps in half a period (> 0).
        eta_min (float): minimum learning rate. Default: 0.
        last_epoch (int): index of the last step, -1 to start. Default: -1.
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        _C.CosineAnnealing(T_max, eta_min)  # validates before the optimizer is touched
        super().__init__(optimizer, T_max, eta_min, last_epoch)

    def _schedule(self) -> Any:
        return _C.CosineAnnealing(self.T_max, self.eta_min)


def _set_lrs(optimizer: Optimizer, lrs: list[float]) -> list[Any]:
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        _update_param_group_val(group, "lr", lr)
    return _param_groups_val_list(optimizer, "lr")


def _set_momentums(scheduler: Any, momentums: list[float]) -> None:
    for group, momentum in zip(scheduler.optimizer.param_groups, momentums, strict=True):
        if scheduler.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum


class CosineAnnealingWarmRestarts(_torch.CosineAnnealingWarmRestarts):
    """:class:`torch.optim.lr_scheduler.CosineAnnealingWarmRestarts` (SGDR), including
    fractional ``step(epoch)``; cycle bookkeeping and lrs come from the C++ schedule."""

    def _schedule(self) -> Any:
        return _C.CosineWarmRestarts(self.T_0, self.T_mult, float(self.eta_min))

    def _state(self) -> Any:
        state = _C.WarmRestartsState()
        state.T_cur, state.T_i, state.last_epoch = float(self.T_cur), float(self.T_i), self.last_epoch
        return state

    def get_lr(self) -> list[float]:
        """Compute the learning rate of each param group at the current position in the cycle."""
        _warn_get_lr_called_within_step(self)
        return self._schedule().lr(self._state(), [float(lr) for lr in self.base_lrs])

    def step(self, epoch: float | None = None) -> None:
        """Advance one step, or move to ``epoch`` (fractional values allowed)."""
        state = self._schedule().advance(self._state(), None if epoch is None else float(epoch))
        integral = not isinstance(epoch, float)
        self.T_cur = int(state.T_cur) if integral and state.T_cur.is_integer() else state.T_cur
        self.T_i = int(state.T_i) if state.T_i.is_integer() else state.T_i
        self.last_epoch = state.last_epoch
        with _enable_get_lr_call(self):
            self._last_lr = _set_lrs(self.optimizer, self.get_lr())


def _check_momentum(optimizer: Optimizer, cycle_momentum: bool) -> None:
    if cycle_momentum and "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")


class CyclicLR(_torch.CyclicLR):
    """:class:`torch.optim.lr_scheduler.CyclicLR`; lrs and momentums from the C++ schedule.

    Unlike torch's, every argument is checked before the optimizer's lrs are touched.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Any = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        total, ratio = _C.cycle_shape(float(step_size_up), None if step_size_down is None else float(step_size_down))
        lrs = [float(v) for v in _torch._format_param("base_lr", optimizer, base_lr)]
        _C.Cyclic(lrs, [float(v) for v in _torch._format_param("max_lr", optimizer, max_lr)], total, ratio,
                  mode, float(gamma), scale_fn, scale_mode, False, [], [])
        _check_momentum(optimizer, cycle_momentum)
        super().__init__(optimizer, base_lr, max_lr, step_size_up, step_size_down, mode, gamma, scale_fn,
                         scale_mode, cycle_momentum, base_momentum, max_momentum, last_epoch)

    def _schedule(self) -> Any:
        cycle = self.cycle_momentum
        return _C.Cyclic(
            [float(lr) for lr in self.base_lrs],
            [float(lr) for lr in self.max_lrs],
            self.total_size,
            self.step_ratio,
            self.mode,
            float(self.gamma),
            self._scale_fn_custom,
            self.scale_mode,
            cycle,
            [float(m) for m in self.base_momentums] if cycle else [],
            [float(m) for m in self.max_momentums] if cycle else [],
        )

    def get_lr(self) -> list[float]:
        """Compute the learning rate (and momentum, when cycled) of each param group."""
        _warn_get_lr_called_within_step(self)
        schedule = self._schedule()
        if self.cycle_momentum:
            _set_momentums(self, schedule.momentums(self.last_epoch))
        return schedule.lrs(self.last_epoch)


class OneCycleLR(_torch.OneCycleLR):
    """:class:`torch.optim.lr_scheduler.OneCycleLR`; lrs and momentums from the C++ schedule.

    Unlike torch's, the momentum check comes before the param groups are touched.
    """

    def __init__(self, optimizer: Optimizer, *args: Any, **kwargs: Any) -> None:
        _check_momentum(optimizer, kwargs.get("cycle_momentum", args[6] if len(args) > 6 else True))
        super().__init__(optimizer, *args, **kwargs)

    def get_lr(self) -> list[float]:
        """Compute the learning rate (and momentum, when cycled) of each param group."""
        _warn_get_lr_called_within_step(self)
        schedule = _C.OneCycle(
            self.total_steps, [float(p["end_step"]) for p in self._schedule_phases], self._anneal_func_type
        )
        lrs, momentums = [], []
        for group in self.optimizer.param_groups:
            lr, momentum = schedule.at(
                self.last_epoch,
                float(group["initial_lr"]),
                float(group["max_lr"]),
                float(group["min_lr"]),
                float(group.get("max_momentum", 0.0)),
                float(group.get("base_momentum", 0.0)),
            )
            lrs.append(lr)
            momentums.append(momentum)
        if self.cycle_momentum:
            _set_momentums(self, momentums)
        return lrs


class ReduceLROnPlateau(_torch.ReduceLROnPlateau):
    """:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`; the plateau logic is the C++
    schedule's. Call ``step(metric)`` after each evaluation."""

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one evaluation's metric and reduce the lrs once it has plateaued."""
        current = float(metrics)
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs) and self.default_min_lr is not None:
            self.min_lrs = [self.default_min_lr] * len(groups)
        plateau = _C.Plateau(
            self.mode, float(self.factor), self.patience, float(self.threshold), self.threshold_mode,
            self.cooldown, [float(m) for m in self.min_lrs], float(self.eps),
        )
        state = _C.PlateauState()
        state.best, state.num_bad_epochs = float(self.best), self.num_bad_epochs
        state.cooldown_counter, state.last_epoch = self.cooldown_counter, self.last_epoch
        old = [float(group["lr"]) for group in groups]
        new = plateau.step(state, current, epoch, old)
        self.best, self.num_bad_epochs = state.best, state.num_bad_epochs
        self.cooldown_counter, self.last_epoch = state.cooldown_counter, state.last_epoch
        for group, before, after in zip(groups, old, new, strict=True):
            if after != before:
                _update_param_group_val(group, "lr", after)
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")


class SWALR(_CppSchedule, swa_utils.SWALR):
    """:class:`torch.optim.swa_utils.SWALR`: anneal each lr to its ``swa_lr``.

    Unlike torch's, the arguments are checked before ``swa_lr`` is written into the groups.
    """

    def __init__(
        self, optimizer: Optimizer, swa_lr: float, anneal_epochs: int = 10, anneal_strategy: str = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = [float(v) for v in _torch._format_param("swa_lr", optimizer, swa_lr)]
        if isinstance(anneal_epochs, int):
            _C.SWA(swa_lrs, anneal_epochs, anneal_strategy)
        super().__init__(optimizer, swa_lr, anneal_epochs, anneal_strategy, last_epoch)

    def _schedule(self) -> Any:
        return _C.SWA(
            [float(group["swa_lr"]) for group in self.optimizer.param_groups], self.anneal_epochs, self._anneal_strategy
        )


class SequentialLR(_torch.SequentialLR):
    """:class:`torch.optim.lr_scheduler.SequentialLR`. It has no schedule math of its own: it
    drives its schedulers (steadystep's or torch's) by PyTorch's own recipe."""


class ChainedScheduler(_torch.ChainedScheduler):
    """:class:`torch.optim.lr_scheduler.ChainedScheduler`. It has no schedule math of its own:
    every step steps all of its schedulers in order."""


class WarmupCosineLR(_CppSchedule):
    """Linear warmup, then a half cosine to ``eta_min`` (the schedule of most fine-tuning recipes).

    The lr rises linearly from ``warmup_start_factor * base_lr`` to ``base_lr`` over
    ``warmup_steps``, follows a half cosine down to ``eta_min`` at ``total_steps``, and stays
    there. With the defaults it equals transformers' ``get_cosine_schedule_with_warmup`` up to
    ``total_steps``.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        warmup_steps (int): steps of linear warmup (>= 0).
        total_steps (int): step at which the lr reaches ``eta_min`` (>= warmup_steps, > 0).
        warmup_start_factor (float): fraction of the base lr at step 0, in [0, 1]. Default: 0.
        eta_min (float): final learning rate (>= 0). Default: 0.
        last_epoch (int): index of the last step, -1 to start. Default: -1.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        warmup_start_factor: float = 0.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _C.WarmupCosine(warmup_steps, total_steps, warmup_start_factor, eta_min)
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.warmup_start_factor, self.eta_min = warmup_start_factor, eta_min
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.WarmupCosine(self.warmup_steps, self.total_steps, self.warmup_start_factor, self.eta_min)


class WarmupStableDecayLR(_CppSchedule):
    """Warmup-stable-decay (WSD), the LLM pre-training schedule.

    Linear warmup from ``warmup_start_factor * base_lr`` over ``warmup_steps``, ``stable_steps``
    at ``base_lr``, then a ``"linear"``, ``"cosine"`` or ``"1-sqrt"`` decay over ``decay_steps``
    to ``min_lr_ratio * base_lr``, held after. Equals transformers' ``get_wsd_schedule`` (linear
    warmup) when ``warmup_start_factor == min_lr_ratio``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        warmup_start_factor: float = 0.0,
        min_lr_ratio: float = 0.0,
        decay_type: str = "cosine",
        last_epoch: int = -1,
    ) -> None:
        _C.WarmupStableDecay(warmup_steps, stable_steps, decay_steps, warmup_start_factor, min_lr_ratio, decay_type)
        self.warmup_steps, self.stable_steps, self.decay_steps = warmup_steps, stable_steps, decay_steps
        self.warmup_start_factor, self.min_lr_ratio, self.decay_type = warmup_start_factor, min_lr_ratio, decay_type
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.WarmupStableDecay(
            self.warmup_steps, self.stable_steps, self.decay_steps,
            self.warmup_start_factor, self.min_lr_ratio, self.decay_type,
        )


class InverseSqrtLR(_CppSchedule):
    """Linear warmup, then ``base_lr / sqrt((t + timescale - warmup_steps) / timescale)``.

    ``timescale`` defaults to ``warmup_steps`` (10,000 when that is 0). Equals transformers'
    ``get_inverse_sqrt_schedule``.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
    ) -> None:
        _C.InverseSqrt(warmup_steps, timescale)
        self.warmup_steps, self.timescale = warmup_steps, timescale
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.InverseSqrt(self.warmup_steps, self.timescale)


class ExponentialDecayLR(_CppSchedule):
    """``lr = max(base_lr * decay_rate ** (t / decay_steps), min_lr)``; the exponent is floored
    when ``staircase`` (TensorFlow's exponential decay, with a floor)."""

    def __init__(
        self,
        optimizer: Optimizer,
        decay_rate: float,
        decay_steps: int,
        staircase: bool = False,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _C.ExponentialDecay(decay_rate, decay_steps, staircase, min_lr)
        self.decay_rate, self.decay_steps, self.staircase, self.min_lr = decay_rate, decay_steps, staircase, min_lr
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.ExponentialDecay(self.decay_rate, self.decay_steps, self.staircase, self.min_lr)


class RandomLR(_CppSchedule):
    """A random lr in ``[min_lr, max_lr]`` (log-uniform by default), drawn anew every ``period``
    steps and shared by all param groups. Draws are a hash of ``(seed, step // period)`` in C++:
    the same seed gives the same sequence in C++ and Python, and a restored ``state_dict``
    continues it."""

    def __init__(
        self,
        optimizer: Optimizer,
        min_lr: float,
        max_lr: float,
        period: int = 1,
        log_uniform: bool = True,
        seed: int = 0,
        last_epoch: int = -1,
    ) -> None:
        _C.Random(min_lr, max_lr, period, log_uniform, seed)
        self.min_lr, self.max_lr, self.period, self.log_uniform, self.seed = min_lr, max_lr, period, log_uniform, seed
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.Random(self.min_lr, self.max_lr, self.period, self.log_uniform, self.seed)


class BoundedLR(LRScheduler):
    """Step any ``scheduler`` and keep every lr inside ``[min_lr, max_lr]``.

    The clamped exponential decay of the classic texts is
    ``BoundedLR(ExponentialLR(opt, gamma), min_lr, max_lr)``. Takes no step at construction
    (the wrapped scheduler already did); clamps the current lrs.
    """

    def __init__(self, scheduler: LRScheduler, min_lr: float, max_lr: float) -> None:
        _C.check_bounds(min_lr, max_lr)
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.min_lr, self.max_lr = min_lr, max_lr
        self._clamp()

    def _clamp(self) -> None:
        lrs = _C.clamp_lrs([float(g["lr"]) for g in self.optimizer.param_groups], self.min_lr, self.max_lr)
        self._last_lr = _set_lrs(self.optimizer, lrs)
        self.last_epoch = getattr(self.scheduler, "last_epoch", 0)

    def step(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Step the wrapped scheduler (with its own arguments), then clamp."""
        self.scheduler.step(*args, **kwargs)
        self._clamp()

    def state_dict(self) -> dict[str, Any]:
        """The bounds and the wrapped scheduler's state."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "scheduler")}
        state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        state = dict(state_dict)
        inner = state.pop("scheduler")
        self.__dict__.update(state)
        self.scheduler.load_state_dict(inner)
