"""Learning-rate schedulers for PyTorch whose schedule math is steadystep's C++.

Each class of PyTorch's parity set subclasses the ``torch.optim.lr_scheduler`` class of the same
name: constructor, arguments, validation and ``state_dict`` are PyTorch's (so checkpoints
cross-load and ``isinstance`` checks hold), while ``get_lr`` and the closed form come from
``steadystep._C``, the same code the LibTorch classes run.
"""

from typing import Any

from torch.optim import lr_scheduler as _torch
from torch.optim.lr_scheduler import LRScheduler, _warn_get_lr_called_within_step

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
