"""Scheduler configurations shared by the Python parity tests and the C++ driver tests.

A case is data: a `Spec` (class name, positional and keyword arguments; arguments may be specs
themselves, for SequentialLR, ChainedScheduler and BoundedLR) and how to step it. The same spec
builds torch's class, steadystep's Python class and, through the test driver, steadystep's C++
class. Arguments come from a seeded RNG: every run covers the same randomized ground.
"""

import inspect
import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import swa_utils

import steadystep.lr_scheduler as ss

BASE_LRS = (0.1, 0.03, 1.0)


@dataclass
class Spec:
    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Case:
    spec: Spec
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    steps: int = 10_000
    step_values: list | None = None  # per-step argument of step(): an epoch or a metric

    @property
    def name(self) -> str:
        return self.spec.name


def make_optimizer(kind: str = "sgd", lrs=BASE_LRS) -> torch.optim.Optimizer:
    """An optimizer with one param group per lr (the parity promise is per group)."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0])
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


class _TorchNamespace:
    """torch's schedulers under one roof (SWALR lives in swa_utils)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(swa_utils if name == "SWALR" else torch.optim.lr_scheduler, name)


TORCH = _TorchNamespace()
NO_OPTIMIZER_ARG = {"ChainedScheduler", "BoundedLR"}


def build(spec: Spec, module: Any, optimizer: torch.optim.Optimizer) -> Any:
    """The scheduler `spec` describes, from `module` (TORCH or steadystep.lr_scheduler)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, Spec):
            return build(value, module, optimizer)
        if isinstance(value, list) and value and isinstance(value[0], Spec):
            return [resolve(v) for v in value]
        return value

    cls = getattr(module, spec.name)
    args = [resolve(a) for a in spec.args]
    kwargs = {k: resolve(v) for k, v in spec.kwargs.items()}
    if spec.name in NO_OPTIMIZER_ARG:
        return cls(*args, **kwargs)
    return cls(optimizer, *args, **kwargs)


def as_kwargs(spec: Spec) -> dict:
    """Every argument of `spec` by name, defaults filled in (what the C++ driver reads)."""
    init = getattr(ss, spec.name).__init__
    if spec.name == "OneCycleLR":  # ours forwards *args to torch's: read torch's signature
        init = torch.optim.lr_scheduler.OneCycleLR.__init__
    bound = inspect.signature(init)
    if spec.name in NO_OPTIMIZER_ARG:
        bound = bound.bind(None, *spec.args, **spec.kwargs)
    else:
        bound = bound.bind(None, None, *spec.args, **spec.kwargs)
    bound.apply_defaults()
    out = {"__name__": spec.name}
    for key, value in list(bound.arguments.items())[1:]:
        if isinstance(value, Spec):
            value = as_kwargs(value)
        elif isinstance(value, list) and value and isinstance(value[0], Spec):
            value = [as_kwargs(v) for v in value]
        out[key] = value
    return out


def run(case: Case, module: Any, steps: int | None = None) -> list[list[float]]:
    """lr and momentum (or beta1) of every group after construction and after each step."""
    opt = make_optimizer(case.optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(case.spec, module, opt)
        rows = [row(opt)]
        for i in range(steps or case.steps):
            opt.step()
            if case.step_values is None:
                sched.step()
            else:
                sched.step(case.step_values[i])
            rows.append(row(opt))
    return rows


def row(opt: torch.optim.Optimizer) -> list[float]:
    lrs = [float(g["lr"]) for g in opt.param_groups]
    moms = [float(g["momentum"]) if "momentum" in g else float(g["betas"][0]) for g in opt.param_groups]
    return lrs + moms


def parity_cases(seed: int = 0, steps: int = 10_000) -> list[Case]:
    """Randomized configurations of every class of PyTorch's set."""
    r = random.Random(seed)
    T_max, T_0, T_mult = r.randint(5, 300), r.randint(3, 50), r.randint(1, 3)
    step_size, gamma = r.randint(1, 50), r.uniform(0.3, 0.95)
    milestones = sorted(r.sample(range(1, 5000), 6)) + [r.randint(1, 100)] * 2
    up, down = r.randint(5, 400), r.randint(5, 400)
    const_factor, const_iters = r.uniform(0.05, 1.0), r.randint(1, 100)
    lin_start, lin_end, lin_iters = r.uniform(0.05, 1), r.uniform(0, 1), r.randint(1, 500)
    poly_iters, poly_power = r.randint(1, 5000), r.uniform(0.5, 3)
    eta_min = r.uniform(0, 0.01)
    patience, cooldown = r.randint(0, 10), r.randint(0, 5)
    swa_epochs = r.randint(0, 50)
    phase = r.uniform(0, 10)
    metric = [math.sin(i / 50 + phase) + 2.0 for i in range(steps)]
    rising = [1.0 - 1.0 / (i + 1) for i in range(steps)]
    epochs = [i * 0.37 for i in range(steps)]
    return [
        Case(Spec("LambdaLR", (lambda e: 1.0 / (1 + 0.01 * e),)), steps=steps),
        Case(Spec("LambdaLR", ([lambda e: 0.99**e, lambda e: 1.0, lambda e: math.cos(e)],)), steps=steps),
        Case(Spec("MultiplicativeLR", (lambda e: 0.9995,)), steps=steps),
        Case(Spec("StepLR", (step_size, gamma)), steps=steps),
        Case(Spec("MultiStepLR", (milestones, gamma)), steps=steps),
        Case(Spec("ConstantLR", (const_factor, const_iters)), steps=steps),
        Case(Spec("LinearLR", (lin_start, lin_end, lin_iters)), steps=steps),
        Case(Spec("ExponentialLR", (0.9995,)), steps=steps),
        Case(Spec("PolynomialLR", (poly_iters, poly_power)), steps=steps),
        Case(Spec("CosineAnnealingLR", (T_max, eta_min)), steps=steps),
        Case(Spec("CosineAnnealingWarmRestarts", (T_0, T_mult, 1e-4)), steps=steps),
        Case(Spec("CosineAnnealingWarmRestarts", (T_0, 2, 0.0)), steps=steps, step_values=epochs),
        Case(Spec("CyclicLR", (0.01, [0.1, 0.05, 2.0], up, down, "triangular")), steps=steps),
        Case(Spec("CyclicLR", (0.01, 0.1, up, None, "triangular2")), steps=steps),
        Case(Spec("CyclicLR", (0.01, 0.1, up, down, "exp_range"), {"gamma": 0.9999}), "adam", steps=steps),
        Case(
            Spec("CyclicLR", (0.01, 0.1, up), {"scale_fn": lambda x: 1 / (1 + x), "scale_mode": "iterations"}),
            steps=steps,
        ),
        Case(Spec("OneCycleLR", ([0.3, 0.1, 2.0],), {"total_steps": steps}), steps=steps),
        Case(
            Spec(
                "OneCycleLR",
                (0.5,),
                {"epochs": 100, "steps_per_epoch": steps // 100, "pct_start": 0.25, "anneal_strategy": "linear",
                 "three_phase": True},
            ),
            "adam",
            steps=steps,
        ),
        Case(
            Spec("ReduceLROnPlateau", (), {"patience": patience, "cooldown": cooldown, "min_lr": 1e-5}),
            steps=steps,
            step_values=metric,
        ),
        Case(Spec("ReduceLROnPlateau", ("max", 0.5, 3, 0.01, "abs", 2, [0.0, 1e-3, 0.1])), steps=steps,
             step_values=rising),
        Case(Spec("SWALR", (0.05, swa_epochs, "cos")), steps=steps),
        Case(Spec("SWALR", ([0.05, 0.01, 0.2], 10, "linear")), steps=steps),
        Case(
            Spec(
                "SequentialLR",
                ([Spec("LinearLR", (0.1,), {"total_iters": 50}), Spec("CosineAnnealingLR", (T_max,)),
                  Spec("ExponentialLR", (0.999,))], [50, 50 + T_max]),
            ),
            steps=steps,
        ),
        Case(
            Spec("ChainedScheduler",
                 ([Spec("ConstantLR", (0.2, 30)), Spec("ExponentialLR", (0.9995,)), Spec("StepLR", (700,))],)),
            steps=steps,
        ),
    ]


def extra_cases(steps: int = 2000) -> list[Case]:
    """The extra schedules (C++ vs Python; their formulas are tested in test_lr_scheduler.py)."""
    return [
        Case(Spec("WarmupCosineLR", (100, 1500, 0.05, 1e-4)), steps=steps),
        Case(Spec("WarmupStableDecayLR", (50, 500, 700, 0.1, 0.1, "1-sqrt")), steps=steps),
        Case(Spec("WarmupStableDecayLR", (50, 500, 700), {"decay_type": "linear"}), steps=steps),
        Case(Spec("InverseSqrtLR", (200,)), steps=steps),
        Case(Spec("ExponentialDecayLR", (0.5, 100, True, 1e-3)), steps=steps),
        Case(Spec("RandomLR", (1e-4, 1e-1, 7, True, 123)), steps=steps),
        Case(Spec("RandomLR", (1e-3, 1e-1), {"log_uniform": False, "seed": 9}), steps=steps),
        Case(Spec("BoundedLR", (Spec("ExponentialLR", (0.99,)), 0.005, 0.5)), steps=steps),
        Case(Spec("BoundedLR", (Spec("CyclicLR", (0.001, 1.0, 50)), 0.01, 0.3)), steps=steps),
    ]
