"""Draw learning-rate schedules: ``python -m steadystep.plot NAME [NAME ...] --steps N -o lr.png``.

Any scheduler of :mod:`steadystep.lr_scheduler` that is built from an optimizer and plain
arguments can be drawn; several names overlay on one plot. Scheduler arguments follow as
``--name value`` (Python literals: ``--T_max 100 --milestones [30,60]``); each scheduler takes
the ones its signature has. ``--csv FILE`` writes the numbers (step, then one column per
scheduler and param group).

Example::

    python -m steadystep.plot WarmupCosineLR OneCycleLR --steps 1000 --warmup_steps 100 \\
        --total_steps 1000 --max_lr 0.1 -o lr.png
"""

import argparse
import ast
import csv
import inspect
import sys
import warnings
from typing import Any

import torch

from . import lr_scheduler

# Built from other schedulers, not from plain arguments.
_COMPOSITE = {"SequentialLR", "ChainedScheduler", "BoundedLR", "LRScheduler"}


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as cos or triangular2


def _scheduler_args(cls: type, extra: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_POSITIONAL for p in params.values()):  # forwards to torch's class
        params = inspect.signature(cls.__mro__[1].__init__).parameters
    kwargs = {k: v for k, v in extra.items() if k in params}
    missing = [
        name for name, p in list(params.items())[2:]
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and name not in kwargs
    ]
    if missing:
        raise SystemExit(f"{cls.__name__} needs " + ", ".join(f"--{m}" for m in missing))
    return kwargs


class ArgumentError(ValueError):
    """A scheduler refused the arguments given on the command line."""


def lr_curves(names: list[str], steps: int, lr: float, groups: int, args: dict[str, Any]) -> dict[str, list[list[float]]]:
    """The lr of every param group after construction and after each of `steps` steps."""
    curves = {}
    for name in names:
        cls = getattr(lr_scheduler, name, None)
        if cls is None or name in _COMPOSITE or not isinstance(cls, type):
            plain = sorted(n for n in lr_scheduler.__all__ if n not in _COMPOSITE)
            raise SystemExit(f"unknown or composite scheduler {name!r}; choose from: {', '.join(plain)}")
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
        opt = torch.optim.SGD([{"params": [p], "lr": lr} for p in params], lr=lr, momentum=0.9)
        try:
            sched = cls(opt, **_scheduler_args(cls, args))
        except (TypeError, ValueError) as e:  # the scheduler's own check of an argument
            raise ArgumentError(f"{name}: {e}") from e
        rows = [[g["lr"] for g in opt.param_groups]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                opt.step()
                if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
                    sched.step(1.0)  # a metric that never improves: shows the reductions
                else:
                    sched.step()
                rows.append([g["lr"] for g in opt.param_groups])
        curves[name] = rows
    return curves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m steadystep.plot", description=__doc__.split("\n\n")[0],
        epilog="Scheduler arguments: --<argument> <value>, e.g. --T_max 100 --eta_min 1e-4",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help="scheduler class names")
    parser.add_argument("--steps", type=int, default=1000, help="steps to draw (default 1000)")
    parser.add_argument("--lr", type=float, default=0.1, help="base lr of the optimizer (default 0.1)")
    parser.add_argument("--groups", type=int, default=1, help="param groups (default 1)")
    parser.add_argument("-o", "--output", help="PNG to write (default lr.png unless --csv is given)")
    parser.add_argument("--csv", help="CSV to write")
    opts, rest = parser.parse_known_args(argv)
    if len(rest) % 2:
        parser.error(f"scheduler arguments come in pairs: --name value (got {rest})")
    extra = {}
    for key, value in zip(rest[::2], rest[1::2]):
        if not key.startswith("--"):
            parser.error(f"expected --name before {key!r}")
        extra[key[2:].replace("-", "_")] = _parse_value(value)
    try:
        curves = lr_curves(opts.names, opts.steps, opts.lr, opts.groups, extra)
    except ArgumentError as e:
        parser.error(str(e))

    if opts.csv:
        with open(opts.csv, "w", newline="") as f:
            writer = csv.writer(f)
            header = ["step"] + [f"{n}[{g}]" if opts.groups > 1 else n for n in curves for g in range(opts.groups)]
            writer.writerow(header)
            for step in range(opts.steps + 1):
                writer.writerow([step] + [repr(v) for rows in curves.values() for v in rows[step]])
        print(f"wrote {opts.csv}")
    output = opts.output or (None if opts.csv else "lr.png")
    if output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, rows in curves.items():
            for g in range(opts.groups):
                label = f"{name}[{g}]" if opts.groups > 1 else name
                ax.plot(range(len(rows)), [r[g] for r in rows], label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.set_title(", ".join(curves))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(output, dpi=120)
        print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv[1:])
