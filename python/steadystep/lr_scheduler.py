"""Learning-rate schedulers for PyTorch whose schedule math is steadystep's C++.

Each class of PyTorch's parity set subclasses the ``torch.optim.lr_scheduler`` class of the same
name: constructor, arguments, validation and ``state_dict`` are PyTorch's (so checkpoints
cross-load and ``isinstance`` checks hold), while ``get_lr`` and the closed form come from
``steadystep._C``, the same code the LibTorch classes run.
"""

import contextlib
import numbers
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

# torch's classes as they are now: a user (or a test suite) may later rebind
# torch.optim.lr_scheduler.X to steadystep's X, and the fallbacks below must still reach torch's.
_TorchCyclicLR = _torch.CyclicLR
_TorchOneCycleLR = _torch.OneCycleLR
_TorchReduceLROnPlateau = _torch.ReduceLROnPlateau
_TorchSWALR = swa_utils.SWALR

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


def _number(owner: str, name: str, value: Any) -> float:
    """``value`` as a float for the C++ schedule. PyTorch's classes take any real number
    (``5.0`` as ``5``); anything else is refused here with a TypeError naming the argument,
    before the optimizer is touched (PyTorch would fail later, at some step)."""
    if not isinstance(value, (str, bytes, bytearray)):
        try:
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"{owner}: {name} must be a real number, got {value!r} ({type(value).__name__})")


def _integer(owner: str, name: str, value: Any) -> int:
    """``value`` as an int for a C++ step count: integers and integral floats (``5.0``)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"{owner}: {name} must be an integer, got {value!r} ({type(value).__name__})")


def _checked_lambda(fn: Any) -> Any:
    """``fn`` whose result must be a real number: PyTorch multiplies the lr by it, which fails
    with a TypeError for None or a string; this names the value instead."""

    def call(epoch: int) -> Any:
        value = fn(epoch)
        if isinstance(value, (str, bytes, bytearray)) or value is None or not hasattr(value, "__float__"):
            raise TypeError(
                f"lr_lambda must return a real number, got {value!r} ({type(value).__name__}) for epoch {epoch}"
            )
        return value

    return call


def _overrides(obj: Any, ours: type, names: tuple[str, ...]) -> bool:
    """Whether ``obj``'s class (a user's subclass) redefines any of the PyTorch hooks ``names``
    that ``ours`` runs in C++; then PyTorch's own Python math runs, so the override counts."""
    cls = type(obj)
    return cls is not ours and any(getattr(cls, n, None) is not getattr(ours, n, None) for n in names)


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


class _CppClosedForm(_CppSchedule):
    """The closed form (``step(epoch)``) from C++, for the classes whose PyTorch counterpart has
    one (PyTorch's ``LambdaLR``, ``MultiplicativeLR`` and ``SWALR`` have none: their
    ``step(epoch)`` runs ``get_lr``, a subclass's override included)."""

    def _get_closed_form_lr(self) -> list[float]:
        return self._schedule().closed_form_lr(self._context())


@contextlib.contextmanager
def _restored_on_error(optimizer: Any) -> Any:
    """Undo what a failed construction wrote into the param groups (``initial_lr``, ``lr``): the
    construction step runs user code (an ``lr_lambda``) that may raise after PyTorch's base class
    has written ``initial_lr``."""
    groups = getattr(optimizer, "param_groups", None)
    saved = [{k: group[k] for k in ("lr", "initial_lr") if k in group} for group in groups or []]
    try:
        yield
    except BaseException:
        for group, before in zip(groups or [], saved):
            group.pop("initial_lr", None)
            group.update(before)
        raise


class LambdaLR(_CppSchedule, _torch.LambdaLR):
    """:class:`torch.optim.lr_scheduler.LambdaLR`: ``lr = base_lr * lr_lambda(epoch)``.

    An ``lr_lambda`` that returns something other than a real number raises a TypeError naming
    the value; when that happens at construction, the param groups are left as they were."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Any, last_epoch: int = -1) -> None:
        with _restored_on_error(optimizer):
            super().__init__(optimizer, lr_lambda, last_epoch)

    def _schedule(self) -> Any:
        return _C.Lambda([_checked_lambda(f) for f in self.lr_lambdas], len(self.optimizer.param_groups))


class MultiplicativeLR(_CppSchedule, _torch.MultiplicativeLR):
    """:class:`torch.optim.lr_scheduler.MultiplicativeLR`: ``lr *= lr_lambda(epoch)`` each step."""

    def _schedule(self) -> Any:
        return _C.Multiplicative([_checked_lambda(f) for f in self.lr_lambdas], len(self.optimizer.param_groups))


class StepLR(_CppClosedForm, _torch.StepLR):
    """:class:`torch.optim.lr_scheduler.StepLR`: ``lr *= gamma`` every ``step_size`` steps.

    ``step_size`` may be any real number > 0, as in PyTorch (``2.5`` decays at steps 5, 10, ...).
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        _C.Step(_number("StepLR", "step_size", step_size), _number("StepLR", "gamma", gamma))
        super().__init__(optimizer, step_size, gamma, last_epoch)

    def _schedule(self) -> Any:
        return _C.Step(float(self.step_size), float(self.gamma))


class MultiStepLR(_CppClosedForm, _torch.MultiStepLR):
    """:class:`torch.optim.lr_scheduler.MultiStepLR`: ``lr *= gamma`` at each milestone."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1) -> None:
        milestones = list(milestones)  # an iterator is read once, here
        _C.MultiStep([_number("MultiStepLR", "milestones", m) for m in milestones],
                     _number("MultiStepLR", "gamma", gamma))
        super().__init__(optimizer, milestones, gamma, last_epoch)

    def _schedule(self) -> Any:
        return _C.MultiStep([float(m) for m in self.milestones.elements()], float(self.gamma))


class ConstantLR(_CppClosedForm, _torch.ConstantLR):
    """:class:`torch.optim.lr_scheduler.ConstantLR`: ``lr * factor`` for ``total_iters`` steps."""

    def __init__(self, optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1) -> None:
        _C.Constant(_number("ConstantLR", "factor", factor), _number("ConstantLR", "total_iters", total_iters))
        super().__init__(optimizer, factor, total_iters, last_epoch)

    def _schedule(self) -> Any:
        return _C.Constant(float(self.factor), float(self.total_iters))


class LinearLR(_CppClosedForm, _torch.LinearLR):
    """:class:`torch.optim.lr_scheduler.LinearLR`: the lr factor moves linearly from
    ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    def __init__(
        self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        _C.Linear(_number("LinearLR", "start_factor", start_factor), _number("LinearLR", "end_factor", end_factor),
                  _number("LinearLR", "total_iters", total_iters))
        super().__init__(optimizer, start_factor, end_factor, total_iters, last_epoch)

    def _schedule(self) -> Any:
        return _C.Linear(float(self.start_factor), float(self.end_factor), float(self.total_iters))


class ExponentialLR(_CppClosedForm, _torch.ExponentialLR):
    """:class:`torch.optim.lr_scheduler.ExponentialLR`: ``lr *= gamma`` every step."""

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1) -> None:
        _C.Exponential(_number("ExponentialLR", "gamma", gamma))
        super().__init__(optimizer, gamma, last_epoch)

    def _schedule(self) -> Any:
        return _C.Exponential(float(self.gamma))


class PolynomialLR(_CppClosedForm, _torch.PolynomialLR):
    """:class:`torch.optim.lr_scheduler.PolynomialLR`: ``lr = base_lr * (1 - t/total_iters)**power``."""

    def __init__(self, optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        _C.Polynomial(_number("PolynomialLR", "total_iters", total_iters), _number("PolynomialLR", "power", power))
        super().__init__(optimizer, total_iters, power, last_epoch)

    def _schedule(self) -> Any:
        return _C.Polynomial(float(self.total_iters), float(self.power))


class CosineAnnealingLR(_CppClosedForm, _torch.CosineAnnealingLR):
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
        # validates before the optimizer is touched
        _C.CosineAnnealing(_number("CosineAnnealingLR", "T_max", T_max),
                           _number("CosineAnnealingLR", "eta_min", eta_min))
        super().__init__(optimizer, T_max, eta_min, last_epoch)

    def _schedule(self) -> Any:
        return _C.CosineAnnealing(float(self.T_max), float(self.eta_min))


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

    # PyTorch's hooks a subclass may override (the C++ schedule knows only the built-in modes).
    _HOOKS = ("scale_fn", "_init_scale_fn", "_triangular_scale_fn", "_triangular2_scale_fn", "_exp_range_scale_fn")

    def get_lr(self) -> list[float]:
        """Compute the learning rate (and momentum, when cycled) of each param group."""
        if _overrides(self, CyclicLR, CyclicLR._HOOKS):
            return _TorchCyclicLR.get_lr(self)
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

    _HOOKS = ("_anneal_func", "_annealing_cos", "_annealing_linear")

    def _anneal_strategy(self) -> str | None:
        """"cos" or "linear" when the C++ schedule computes what PyTorch's ``_anneal_func``
        would, else None (a subclass's override, or a legacy ``anneal_func`` of unknown kind)."""
        if _overrides(self, OneCycleLR, OneCycleLR._HOOKS):
            return None
        if hasattr(self, "_anneal_func_type"):
            return self._anneal_func_type if self._anneal_func_type in ("cos", "linear") else None
        # A state from before PyTorch 2.2 stores the function itself as `anneal_func`.
        fn = getattr(getattr(self, "anneal_func", None), "__func__", getattr(self, "anneal_func", None))
        if fn is _TorchOneCycleLR._annealing_cos:
            return "cos"
        if fn is _TorchOneCycleLR._annealing_linear:
            return "linear"
        return None

    def get_lr(self) -> list[float]:
        """Compute the learning rate (and momentum, when cycled) of each param group."""
        strategy = self._anneal_strategy()
        if strategy is None:  # PyTorch's own math, which raises what PyTorch raises
            return _TorchOneCycleLR.get_lr(self)
        _warn_get_lr_called_within_step(self)
        schedule = _C.OneCycle(self.total_steps, [float(p["end_step"]) for p in self._schedule_phases], strategy)
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
    schedule's. Call ``step(metric)`` after each evaluation. A subclass's ``_reduce_lr`` is
    called as PyTorch calls it; one that redefines ``_is_better`` or ``in_cooldown`` runs
    PyTorch's ``step``."""

    _HOOKS = ("_is_better", "in_cooldown")

    def _plateau(self) -> Any:
        return _C.Plateau(
            self.mode, float(self.factor), self.patience, float(self.threshold), self.threshold_mode,
            self.cooldown, [float(m) for m in self.min_lrs], float(self.eps),
        )

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one evaluation's metric and reduce the lrs once it has plateaued."""
        integral = all(isinstance(v, int) for v in (self.patience, self.cooldown, self.num_bad_epochs,
                                                    self.cooldown_counter))
        if not integral or _overrides(self, ReduceLROnPlateau, ReduceLROnPlateau._HOOKS):
            # Counters the C++ state cannot hold (float patience) or a user's hooks: PyTorch's step.
            return _TorchReduceLROnPlateau.step(self, metrics, epoch)
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        # PyTorch's order: last_epoch, best and the counters are updated before a reduction,
        # which may raise (a param group added since construction with a list of min_lrs).
        self.last_epoch = epoch
        state = _C.PlateauState()
        state.best, state.num_bad_epochs = float(self.best), self.num_bad_epochs
        state.cooldown_counter, state.last_epoch = self.cooldown_counter, 0
        due = self._plateau().observe(state, current, None)
        if state.best != self.best:
            self.best = state.best
        self.num_bad_epochs, self.cooldown_counter = state.num_bad_epochs, state.cooldown_counter
        if due:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _reduce_lr(self, epoch: Any) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs) and self.default_min_lr is not None:
            self.min_lrs = [self.default_min_lr] * len(groups)
        old = [float(group["lr"]) for group in groups]
        new = self._plateau().reduce(old)  # PyTorch's RuntimeError when the group counts differ
        for group, before, after in zip(groups, old, new, strict=True):
            if after != before:
                _update_param_group_val(group, "lr", after)


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

    _HOOKS = ("_linear_anneal", "_cosine_anneal", "_get_initial_lr")

    def _schedule(self) -> Any:
        return _C.SWA(
            [float(group["swa_lr"]) for group in self.optimizer.param_groups], self.anneal_epochs, self._anneal_strategy
        )

    def get_lr(self) -> list[float]:
        """Compute the next learning rate of each param group."""
        builtin = {"cos": _TorchSWALR._cosine_anneal, "linear": _TorchSWALR._linear_anneal}
        if (
            _overrides(self, SWALR, SWALR._HOOKS)
            or getattr(self, "anneal_func", None) is not builtin.get(getattr(self, "_anneal_strategy", None))
            or not isinstance(self.anneal_epochs, int)
        ):
            return _TorchSWALR.get_lr(self)
        return super().get_lr()


class SequentialLR(_torch.SequentialLR):
    """:class:`torch.optim.lr_scheduler.SequentialLR`. It has no schedule math of its own: it
    drives its schedulers (steadystep's or torch's) by PyTorch's own recipe."""


class ChainedScheduler(_torch.ChainedScheduler):
    """:class:`torch.optim.lr_scheduler.ChainedScheduler`. It has no schedule math of its own:
    every step steps all of its schedulers in order."""


class WarmupCosineLR(_CppClosedForm):
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
        _C.WarmupCosine(_integer("WarmupCosineLR", "warmup_steps", warmup_steps),
                        _integer("WarmupCosineLR", "total_steps", total_steps),
                        _number("WarmupCosineLR", "warmup_start_factor", warmup_start_factor),
                        _number("WarmupCosineLR", "eta_min", eta_min))
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.warmup_start_factor, self.eta_min = warmup_start_factor, eta_min
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.WarmupCosine(int(self.warmup_steps), int(self.total_steps), float(self.warmup_start_factor),
                               float(self.eta_min))


class WarmupStableDecayLR(_CppClosedForm):
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
        _C.WarmupStableDecay(
            _integer("WarmupStableDecayLR", "warmup_steps", warmup_steps),
            _integer("WarmupStableDecayLR", "stable_steps", stable_steps),
            _integer("WarmupStableDecayLR", "decay_steps", decay_steps),
            _number("WarmupStableDecayLR", "warmup_start_factor", warmup_start_factor),
            _number("WarmupStableDecayLR", "min_lr_ratio", min_lr_ratio), decay_type,
        )
        self.warmup_steps, self.stable_steps, self.decay_steps = warmup_steps, stable_steps, decay_steps
        self.warmup_start_factor, self.min_lr_ratio, self.decay_type = warmup_start_factor, min_lr_ratio, decay_type
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.WarmupStableDecay(
            int(self.warmup_steps), int(self.stable_steps), int(self.decay_steps),
            float(self.warmup_start_factor), float(self.min_lr_ratio), self.decay_type,
        )


class InverseSqrtLR(_CppClosedForm):
    """Linear warmup, then ``base_lr / sqrt((t + timescale - warmup_steps) / timescale)``.

    ``timescale`` defaults to ``warmup_steps`` (10,000 when that is 0). Equals transformers'
    ``get_inverse_sqrt_schedule``.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
    ) -> None:
        _C.InverseSqrt(_integer("InverseSqrtLR", "warmup_steps", warmup_steps),
                       None if timescale is None else _integer("InverseSqrtLR", "timescale", timescale))
        self.warmup_steps, self.timescale = warmup_steps, timescale
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.InverseSqrt(int(self.warmup_steps), None if self.timescale is None else int(self.timescale))


class ExponentialDecayLR(_CppClosedForm):
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
        _C.ExponentialDecay(_number("ExponentialDecayLR", "decay_rate", decay_rate),
                            _integer("ExponentialDecayLR", "decay_steps", decay_steps), bool(staircase),
                            _number("ExponentialDecayLR", "min_lr", min_lr))
        self.decay_rate, self.decay_steps, self.staircase, self.min_lr = decay_rate, decay_steps, staircase, min_lr
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.ExponentialDecay(float(self.decay_rate), int(self.decay_steps), bool(self.staircase),
                                   float(self.min_lr))


def _seed(seed: Any) -> int:
    """A seed as ``torch.manual_seed`` takes it: an int in [-2**63, 2**64), negatives mapped to
    ``2**64 + seed`` (so C++'s ``uint64_t`` of the same value draws the same sequence)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"RandomLR: seed must be an integer, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"RandomLR: seed must be in [-2**63, 2**64), got {seed}")
    return seed % 2**64


class RandomLR(_CppClosedForm):
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
        _C.Random(_number("RandomLR", "min_lr", min_lr), _number("RandomLR", "max_lr", max_lr),
                  _integer("RandomLR", "period", period), bool(log_uniform), _seed(seed))
        self.min_lr, self.max_lr, self.period, self.log_uniform, self.seed = min_lr, max_lr, period, log_uniform, seed
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.Random(float(self.min_lr), float(self.max_lr), _integer("RandomLR", "period", self.period),
                         bool(self.log_uniform), _seed(self.seed))


class BoundedLR(LRScheduler):
    """Step any ``scheduler`` and keep every lr inside ``[min_lr, max_lr]``.

    The clamped exponential decay of the classic texts is
    ``BoundedLR(ExponentialLR(opt, gamma), min_lr, max_lr)``. Takes no step at construction
    (the wrapped scheduler already did); clamps the current lrs. Inside ``SequentialLR`` it
    behaves as the scheduler it wraps, clamped: SequentialLR's undo of the construction step,
    its first step and its restart at a milestone all reach the wrapped scheduler.
    """

    def __init__(self, scheduler: LRScheduler, min_lr: float, max_lr: float) -> None:
        _C.check_bounds(_number("BoundedLR", "min_lr", min_lr), _number("BoundedLR", "max_lr", max_lr))
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"BoundedLR: scheduler must be a scheduler with an `optimizer`, got {scheduler!r}")
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.min_lr, self.max_lr = min_lr, max_lr
        self._step_count = getattr(scheduler, "_step_count", 1)
        self._clamp()

    # SequentialLR's recursive undo walks `_schedulers`; the wrapped scheduler's counters are
    # the ones to undo (a property, so it is not part of the state_dict).
    @property
    def _schedulers(self) -> list[Any]:
        return [self.scheduler]

    @property
    def last_epoch(self) -> int:  # type: ignore[override]
        """The wrapped scheduler's ``last_epoch``."""
        return getattr(self.scheduler, "last_epoch", 0)

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        self.scheduler.last_epoch = value

    @property
    def base_lrs(self) -> list[Any]:  # type: ignore[override]
        """The wrapped scheduler's base lrs."""
        return getattr(self.scheduler, "base_lrs", [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups])

    def _clamp(self) -> None:
        lrs = _C.clamp_lrs([float(g["lr"]) for g in self.optimizer.param_groups], float(self.min_lr),
                           float(self.max_lr))
        self._last_lr = _set_lrs(self.optimizer, lrs)

    def get_lr(self) -> list[float]:
        """The wrapped scheduler's next lrs, clamped."""
        return _C.clamp_lrs([float(lr) for lr in self.scheduler.get_lr()], float(self.min_lr), float(self.max_lr))

    def step(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Step the wrapped scheduler (with its own arguments), then clamp."""
        self.scheduler.step(*args, **kwargs)
        self._step_count = getattr(self.scheduler, "_step_count", self._step_count + 1)
        self._clamp()

    def _initial_step(self) -> None:
        self.scheduler._initial_step()
        self._step_count = getattr(self.scheduler, "_step_count", 1)
        self._clamp()

    def _update_lr(self, epoch: int | None = None) -> None:
        # SequentialLR restarts a scheduler at its milestone with `_update_lr(0)`.
        self.scheduler._update_lr(epoch)
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
        state.pop("last_epoch", None)  # written by older versions; now the wrapped scheduler's
        self.__dict__.update(state)
        self.scheduler.load_state_dict(inner)
