"""Fused optimizers: global-norm clipping and the Adam/AdamW/SGD update in one multi-tensor
step, with a guard that lets no non-finite gradient touch the weights.

``FusedAdam``, ``FusedAdamW`` and ``FusedSGD`` are :class:`torch.optim.Optimizer` subclasses with
torch's constructor arguments (and ``state_dict`` layout: checkpoints load into torch's
optimizers and back), plus keyword-only ``max_grad_norm=None, norm_type=2.0,
skip_nonfinite=True``. A step is one C++ op, ``torch.ops.steadystep.fused_adam_`` /
``fused_sgd_``: a norm pass over all gradients of all groups, then one update pass per group.
Nothing is read back to the host: the norm (``last_grad_norm``) and the count of skipped steps
(``skipped_steps``) stay tensors on the device. ``torch.amp.GradScaler.step`` hands its scale and
``found_inf`` to the step, which unscales inside the same passes.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _C

__all__ = ["FusedAdam", "FusedAdamW", "FusedSGD"]


class _FusedOptimizer(Optimizer):
    """What FusedAdam and FusedSGD share: the clipping settings, the AMP hand-over, the device
    counters and the lazily placed step counts."""

    @staticmethod
    def _check_fused_args(name: str, max_grad_norm: float | None, norm_type: float, differentiable: bool) -> None:
        # Before Optimizer.__init__: a bad argument leaves nothing half-built.
        _C.check_clip_settings(None if max_grad_norm is None else float(max_grad_norm), float(norm_type))
        if differentiable:
            raise ValueError(f"{name} does not support differentiable=True")

    def _init_fused(self, max_grad_norm: float | None, norm_type: float, skip_nonfinite: bool) -> None:
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.norm_type = float(norm_type)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.last_grad_norm: Tensor | None = None
        self._skipped_steps: Tensor | None = None
        # GradScaler.step() sets self.grad_scale / self.found_inf and lets the step unscale.
        self._step_supports_amp_scaling = True

    @property
    def skipped_steps(self) -> Tensor:
        """Steps skipped because of non-finite gradients (an int64 device tensor, no sync)."""
        if self._skipped_steps is None:
            return torch.zeros((), dtype=torch.int64)
        return self._skipped_steps

    def _step_state(self, p: Tensor, state: dict) -> Tensor:
        # torch keeps `step` as a CPU tensor in its non-fused optimizers; ours lives beside the
        # param so that the kernels read and advance it on the device.
        step = state.get("step")
        if step is None:
            step = state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        elif not isinstance(step, Tensor) or step.device != p.device or step.dtype != torch.float32:
            step = state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device)
        return step

    def _controls(self, device: torch.device) -> tuple[Tensor | None, Tensor | None, Tensor]:
        if self._skipped_steps is None:
            self._skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None), self._skipped_steps

    @staticmethod
    def _evaluate(closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _finish(self, norm: Tensor) -> None:
        self.last_grad_norm = norm if norm.numel() else None


class FusedAdam(_FusedOptimizer):
    r"""Adam (AdamW with ``decoupled_weight_decay=True``) with global-norm clipping, fused.

    The update equals ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, norm_type)``
    followed by :class:`torch.optim.Adam` with the same arguments, to fp32 rounding; fp16/bf16
    params keep their state in their own dtype and do the math in fp32, as torch's
    ``fused=True`` does. With ``skip_nonfinite`` (the default), a step whose gradient norm is inf
    or nan leaves every param and state tensor bit-identical, does not advance ``step``, and
    adds one to :attr:`skipped_steps` — decided on the device.

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: as
            :class:`torch.optim.Adam`.
        foreach, capturable, fused: accepted for compatibility (the step is always fused).
        differentiable: must be False.
        max_grad_norm (float, optional): clip the norm of all gradients (all groups together)
            to this value; None (default) does not clip.
        norm_type (float): order of the norm (> 0 or inf). Default: 2.
        skip_nonfinite (bool): skip steps with a non-finite gradient norm. Default: True.
            The guard reads the norm, so it runs the norm pass (4 bytes per fp32 parameter)
            even without ``max_grad_norm``; turn both off for a bare fused Adam step.
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
    ) -> None:
        _C.check_adam(float(lr), float(betas[0]), float(betas[1]), float(eps), float(weight_decay))
        self._check_fused_args("FusedAdam", max_grad_norm, norm_type, differentiable)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)
        self._init_fused(max_grad_norm, norm_type, skip_nonfinite)

    # NOTE [torch.compile]: the step is one fused op already; inside a compiled function it runs
    # eagerly (a graph break), so dynamo need not trace the optimizer's Python bookkeeping.
    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One fused step (clip, guard, update) over all param groups."""
        loss = self._evaluate(closure)
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes = [], [], [], [], [], [], []
        for group in self.param_groups:
            count = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"] and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                if group["amsgrad"]:
                    max_exp_avg_sqs.append(state["max_exp_avg_sq"])
                steps.append(self._step_state(p, state))
                count += 1
            sizes.append(count)
        if not params:
            return loss
        if any(g["amsgrad"] for g in self.param_groups) and len(max_exp_avg_sqs) != len(params):
            # Groups without amsgrad hold a placeholder; their kernels never read it.
            max_exp_avg_sqs = [self.state[p].get("max_exp_avg_sq", s) for p, s in zip(params, exp_avg_sqs)]
        grad_scale, found_inf, skipped = self._controls(params[0].device)
        groups = self.param_groups
        norm = torch.ops.steadystep.fused_adam_(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes,
            [float(g["lr"]) for g in groups], [float(g["betas"][0]) for g in groups],
            [float(g["betas"][1]) for g in groups], [float(g["eps"]) for g in groups],
            [float(g["weight_decay"]) for g in groups], [bool(g["amsgrad"]) for g in groups],
            [bool(g["maximize"]) for g in groups], [bool(g["decoupled_weight_decay"]) for g in groups],
            self.max_grad_norm, self.norm_type, self.skip_nonfinite, grad_scale, found_inf, skipped,
        )
        self._finish(norm)
        return loss


class FusedAdamW(FusedAdam):
    r""":class:`FusedAdam` with decoupled weight decay and AdamW's defaults, the fused
    counterpart of :class:`torch.optim.AdamW` (``weight_decay=1e-2``)."""

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
            max_grad_norm=max_grad_norm, norm_type=norm_type, skip_nonfinite=skip_nonfinite,
        )


class FusedSGD(_FusedOptimizer):
    r"""SGD (momentum, dampening, nesterov, weight decay, maximize) with global-norm clipping,
    fused; equals ``clip_grad_norm_`` followed by :class:`torch.optim.SGD` to fp32 rounding.

    Besides torch's ``momentum_buffer`` each param's state holds a device ``step`` count (the
    first successful step initialises the buffer from the gradient, as torch does).

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as :class:`torch.optim.SGD`.
        foreach, fused: accepted for compatibility. differentiable: must be False.
        max_grad_norm, norm_type, skip_nonfinite: as :class:`FusedAdam`.
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
    ) -> None:
        _C.check_sgd(float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov))
        self._check_fused_args("FusedSGD", max_grad_norm, norm_type, differentiable)
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused,
        )
        super().__init__(params, defaults)
        self._init_fused(max_grad_norm, norm_type, skip_nonfinite)

    def _sgd_step_state(self, p: Tensor, state: dict) -> Tensor:
        if "step" not in state:
            # A buffer from torch's SGD means its first step has been taken.
            buffer = state.get("momentum_buffer")
            state["step"] = torch.full((), 0.0 if buffer is None else 1.0, dtype=torch.float32, device=p.device)
        return self._step_state(p, state)

    # NOTE [torch.compile]: the step is one fused op already; inside a compiled function it runs
    # eagerly (a graph break), so dynamo need not trace the optimizer's Python bookkeeping.
    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One fused step (clip, guard, update) over all param groups."""
        loss = self._evaluate(closure)
        params, grads, buffers, steps, sizes = [], [], [], [], []
        for group in self.param_groups:
            count = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                step = self._sgd_step_state(p, state)
                if group["momentum"] != 0 and state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                buffers.append(state.get("momentum_buffer", p.grad))  # placeholder when momentum == 0
                steps.append(step)
                count += 1
            sizes.append(count)
        if not params:
            return loss
        grad_scale, found_inf, skipped = self._controls(params[0].device)
        groups = self.param_groups
        norm = torch.ops.steadystep.fused_sgd_(
            params, grads, buffers, steps, sizes,
            [float(g["lr"]) for g in groups], [float(g["momentum"]) for g in groups],
            [float(g["dampening"]) for g in groups], [float(g["weight_decay"]) for g in groups],
            [bool(g["nesterov"]) for g in groups], [bool(g["maximize"]) for g in groups],
            self.max_grad_norm, self.norm_type, self.skip_nonfinite, grad_scale, found_inf, skipped,
        )
        self._finish(norm)
        return loss
