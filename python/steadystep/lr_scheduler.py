"""Learning-rate schedulers: ``torch.optim.lr_scheduler`` subclasses whose schedule math is
steadystep's C++ (the same code the LibTorch classes run), with PyTorch's names, arguments and
``state_dict`` layout."""

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, _warn_get_lr_called_within_step

from . import _C

__all__ = ["CosineAnnealingLR"]


class _CppSchedule(LRScheduler):
    """Base of the schedulers whose math is in C++.

    Subclasses keep their hyper-parameters as attributes, under PyTorch's names (so a
    ``state_dict`` of torch's class loads into ours and back), and build the C++ schedule from
    them in :meth:`_schedule`.
    """

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


class CosineAnnealingLR(_CppSchedule):
    r"""Anneal each learning rate along a cosine, as :class:`torch.optim.lr_scheduler.CosineAnnealingLR`.

    .. math::
        \eta_t = \eta_{min} + \frac{1}{2}(\eta_{base} - \eta_{min})
        \left(1 + \cos\left(\frac{t}{T_{max}}\pi\right)\right)

    computed recursively as PyTorch does; the sequence equals PyTorch's to the last bit.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        T_max (int): number of steps in half a period (> 0).
        eta_min (float): minimum learning rate. Default: 0.
        last_epoch (int): index of the last step, -1 to start. Default: -1.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        _C.CosineAnnealing(T_max, eta_min)  # validates before the optimizer is touched
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def _schedule(self) -> Any:
        return _C.CosineAnnealing(self.T_max, self.eta_min)
