"""Scheduler configurations shared by the parity tests and the C++ golden-file generator.

Each case builds the same scheduler from a module (``torch.optim.lr_scheduler`` or
``steadystep.lr_scheduler``) and says how to step it. Arguments come from a seeded RNG, so every
run covers the same (randomized) ground and a failure can be reproduced.
"""

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.optim import swa_utils

import steadystep.lr_scheduler as ss

BASE_LRS = (0.1, 0.03, 1.0)


def make_optimizer(kind: str = "sgd", lrs=BASE_LRS) -> torch.optim.Optimizer:
    """An optimizer with one param group per lr (the parity promise is per group)."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0])
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def torch_module(name: str) -> Any:
    return swa_utils if name == "SWALR" else torch.optim.lr_scheduler


@dataclass
class Case:
    name: str  # class name, in both modules
    build: Callable[[Any, torch.optim.Optimizer], Any]  # (module, optimizer) -> scheduler
    step: Callable[[Any, int], None] = lambda s, i: s.step()
    optimizer: str = "sgd"
    steps: int = 10_000


def parity_cases(seed: int = 0) -> list[Case]:
    """One randomized configuration of every class of PyTorch's set."""
    r = random.Random(seed)
    T_max, T_0, T_mult = r.randint(5, 300), r.randint(3, 50), r.randint(1, 3)
    step_size, gamma = r.randint(1, 50), r.uniform(0.3, 0.95)
    milestones = sorted(r.sample(range(1, 5000), 6)) + [r.randint(1, 100)] * 2
    up, down = r.randint(5, 400), r.randint(5, 400)
    total = 10_000
    metric_phase = r.uniform(0, 10)
    # Every random argument is drawn here, once, so that both modules see the same values.
    const_factor, const_iters = r.uniform(0.05, 1.0), r.randint(1, 100)
    lin_start, lin_end, lin_iters = r.uniform(0.05, 1), r.uniform(0, 1), r.randint(1, 500)
    poly_iters, poly_power = r.randint(1, 5000), r.uniform(0.5, 3)
    eta_min = r.uniform(0, 0.01)
    patience, cooldown = r.randint(0, 10), r.randint(0, 5)
    swa_epochs = r.randint(0, 50)
    return [
        Case("LambdaLR", lambda m, o: m.LambdaLR(o, lambda e: 1.0 / (1 + 0.01 * e))),
        Case("LambdaLR", lambda m, o: m.LambdaLR(o, [lambda e: 0.99**e, lambda e: 1.0, lambda e: math.cos(e)])),
        Case("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9995)),
        Case("StepLR", lambda m, o: m.StepLR(o, step_size, gamma)),
        Case("MultiStepLR", lambda m, o: m.MultiStepLR(o, milestones, gamma)),
        Case("ConstantLR", lambda m, o: m.ConstantLR(o, const_factor, const_iters)),
        Case("LinearLR", lambda m, o: m.LinearLR(o, lin_start, lin_end, lin_iters)),
        Case("ExponentialLR", lambda m, o: m.ExponentialLR(o, 0.9995)),
        Case("PolynomialLR", lambda m, o: m.PolynomialLR(o, poly_iters, poly_power)),
        Case("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, T_max, eta_min)),
        Case("CosineAnnealingWarmRestarts", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0, T_mult, 1e-4)),
        Case(
            "CosineAnnealingWarmRestarts",
            lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0, 2, 0.0),
            step=lambda s, i: s.step(i * 0.37),
        ),
        Case("CyclicLR", lambda m, o: m.CyclicLR(o, 0.01, [0.1, 0.05, 2.0], up, down, "triangular")),
        Case("CyclicLR", lambda m, o: m.CyclicLR(o, 0.01, 0.1, up, None, "triangular2")),
        Case("CyclicLR", lambda m, o: m.CyclicLR(o, 0.01, 0.1, up, down, "exp_range", gamma=0.9999), optimizer="adam"),
        Case(
            "CyclicLR",
            lambda m, o: m.CyclicLR(o, 0.01, 0.1, up, scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations"),
        ),
        Case("OneCycleLR", lambda m, o: m.OneCycleLR(o, [0.3, 0.1, 2.0], total_steps=total)),
        Case(
            "OneCycleLR",
            lambda m, o: m.OneCycleLR(
                o, 0.5, epochs=100, steps_per_epoch=100, pct_start=0.25, anneal_strategy="linear", three_phase=True
            ),
            optimizer="adam",
        ),
        Case(
            "ReduceLROnPlateau",
            lambda m, o: m.ReduceLROnPlateau(o, patience=patience, cooldown=cooldown, min_lr=1e-5),
            step=lambda s, i: s.step(math.sin(i / 50 + metric_phase) + 2.0),
        ),
        Case(
            "ReduceLROnPlateau",
            lambda m, o: m.ReduceLROnPlateau(o, "max", 0.5, 3, 0.01, "abs", 2, [0.0, 1e-3, 0.1]),
            step=lambda s, i: s.step(1.0 - 1.0 / (i + 1)),
        ),
        Case("SWALR", lambda m, o: m.SWALR(o, 0.05, swa_epochs, "cos")),
        Case("SWALR", lambda m, o: m.SWALR(o, [0.05, 0.01, 0.2], 10, "linear")),
        Case(
            "SequentialLR",
            lambda m, o: m.SequentialLR(
                o, [m.LinearLR(o, 0.1, total_iters=50), m.CosineAnnealingLR(o, T_max), m.ExponentialLR(o, 0.999)],
                [50, 50 + T_max],
            ),
        ),
        Case(
            "ChainedScheduler",
            lambda m, o: m.ChainedScheduler([m.ConstantLR(o, 0.2, 30), m.ExponentialLR(o, 0.9995), m.StepLR(o, 700)]),
        ),
    ]


def build(case: Case, module: Any, optimizer: torch.optim.Optimizer) -> Any:
    if module is torch.optim.lr_scheduler:
        module = _TorchNamespace()
    return case.build(module, optimizer)


class _TorchNamespace:
    """torch's schedulers under one roof (SWALR lives in swa_utils)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch_module(name), name)


def run(case: Case, module: Any, steps: int | None = None) -> list[list[float]]:
    """lr (and momentum or beta1) of every group after construction and after each step."""
    import warnings

    opt = make_optimizer(case.optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(case, module, opt)
        rows = [_row(opt)]
        for i in range(steps or case.steps):
            opt.step()
            case.step(sched, i)
            rows.append(_row(opt))
    return rows


def _row(opt: torch.optim.Optimizer) -> list[float]:
    lrs = [float(g["lr"]) for g in opt.param_groups]
    moms = [float(g["momentum"]) if "momentum" in g else float(g["betas"][0]) for g in opt.param_groups]
    return lrs + moms


STEADYSTEP = ss
