"""bf16 weights that stop learning late in a schedule, and the two fused-step options that keep
them learning: ``master_weights=True`` and ``stochastic_rounding=True``.

    python examples/python/low_precision.py [--steps 2000] [--lr 3e-3] [--plot docs/low_precision.png]

A student MLP (16 -> 64 -> 64 -> 1, tanh) regresses a teacher MLP of the same shape on fresh
Gaussian inputs every step, with WarmupCosineLR (5% warmup, cosine to 0). The student's
weights are stored in bf16 (fp32 in the reference run); the forward and backward run in fp32
on the weights as stored (each weight upcast), so the weights' storage and the optimizer's
rounding are the only difference between the runs. Adam moves a weight by at most about ``lr`` a
step; a bf16 weight (8 significant bits) only changes when the step is at least half its ulp:
2**-12 = 0.00024 for 0.0625 <= |w| < 0.125 (the median |w| here is about 0.1), twice that for
each doubling of |w|; near a minimum Adam's steps are well below ``lr``. Round to nearest
throws every smaller step away: as the lr decays, plain bf16 AdamW (steadystep's or torch's)
stops moving more and more weights. An fp32 master copy accumulates the small steps;
stochastic rounding keeps them in expectation.

The table: held-out loss (fp32 forward on the stored weights, 4096 fixed inputs) at the end and
at mid-schedule, and the share of weight elements whose stored value changed over the last
quarter of the steps (the stall, measured directly).
"""

import argparse
import math
import time

import torch

import steadystep

IN, WIDTH = 16, 64
BF16 = torch.bfloat16


def teacher_weights(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(WIDTH, IN, generator=gen) / math.sqrt(IN), torch.randn(WIDTH, generator=gen) * 0.1,
            torch.randn(WIDTH, WIDTH, generator=gen) / math.sqrt(WIDTH), torch.randn(WIDTH, generator=gen) * 0.1,
            torch.randn(1, WIDTH, generator=gen) / math.sqrt(WIDTH)]


def forward(weights, x: torch.Tensor) -> torch.Tensor:
    """fp32 math on the weights as stored (bf16 weights are upcast; their grads come back bf16)."""
    w1, b1, w2, b2, w3 = (w.float() for w in weights)
    h = torch.tanh(torch.nn.functional.linear(x, w1, b1))
    h = torch.tanh(torch.nn.functional.linear(h, w2, b2))
    return torch.nn.functional.linear(h, w3)


def configurations() -> dict:
    """name: (param dtype, make optimizer from (params, lr))."""
    fused = steadystep.optim.FusedAdamW
    return {
        "fp32 FusedAdamW (reference)": (torch.float32, lambda p, lr: fused(p, lr=lr)),
        "bf16 torch AdamW": (BF16, lambda p, lr: torch.optim.AdamW(p, lr=lr)),
        "bf16 FusedAdamW": (BF16, lambda p, lr: fused(p, lr=lr)),
        "bf16 FusedAdamW(master_weights)": (BF16, lambda p, lr: fused(p, lr=lr, master_weights=True)),
        "bf16 FusedAdamW(stochastic_rounding)": (BF16, lambda p, lr: fused(p, lr=lr, stochastic_rounding=True)),
        "bf16 FusedAdamW(master_weights, state bf16)": (
            BF16, lambda p, lr: fused(p, lr=lr, master_weights=True, state_dtype=BF16)),
    }


def train(dtype, make, steps: int, lr: float, every: int) -> dict:
    """One run: held-out loss every `every` steps, share of weights changed per window, final numbers."""
    teacher = teacher_weights(1)
    gen = torch.Generator().manual_seed(2)
    x_val = torch.randn(4096, IN, generator=gen)
    with torch.no_grad():
        y_val = forward(teacher, x_val)
    params = [torch.nn.Parameter(w.to(dtype)) for w in teacher_weights(3)]
    torch.manual_seed(0)  # the stochastic-rounding seed is drawn from torch's generator
    opt = make(params, lr)
    sched = steadystep.lr_scheduler.WarmupCosineLR(opt, max(1, steps // 20), steps)
    data = torch.Generator().manual_seed(5)
    n = sum(p.numel() for p in params)

    def val_loss() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(forward(params, x_val), y_val).item()

    def snapshot() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).clone() for p in params])

    log = {"step": [0], "loss": [val_loss()], "lr": [opt.param_groups[0]["lr"]], "changed": [float("nan")]}
    window = snapshot()
    quarter, late = steps - steps // 4, None
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = torch.randn(256, IN, generator=data)
        with torch.no_grad():
            y = forward(teacher, x)
        loss = torch.nn.functional.mse_loss(forward(params, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step == quarter:
            late = snapshot()
        if step % every == 0 or step == steps:
            now = snapshot()
            log["step"].append(step)
            log["loss"].append(val_loss())
            log["lr"].append(opt.param_groups[0]["lr"])
            log["changed"].append((now != window).sum().item() / n)
            window = now
    log["seconds"] = time.perf_counter() - start
    log["late_changed"] = (snapshot() != late).sum().item() / n if late is not None else float("nan")
    mid = min(range(len(log["step"])), key=lambda i: abs(log["step"][i] - steps // 2))
    log["mid_loss"], log["final_loss"] = log["loss"][mid], log["loss"][-1]
    return log


def plot(runs: dict, path: str, steps: int, lr: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ["k", "tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple"]
    styles = ["--", "-", "-", "-", "-", ":"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True, height_ratios=[3, 1.6, 1])
    for (name, log), color, style in zip(runs.items(), colors, styles):
        axes[0].plot(log["step"], log["loss"], style, color=color, lw=1.3, label=name)
        axes[1].plot(log["step"][1:], [100 * c for c in log["changed"][1:]], style, color=color, lw=1.1)
    first = next(iter(runs.values()))
    axes[2].plot(first["step"][1:], first["lr"][1:], color="k", lw=1)
    median = torch.cat([w.abs().reshape(-1) for w in teacher_weights(3)]).median().item()
    half_ulp = 2.0 ** (math.floor(math.log2(median)) - 8)
    axes[2].axhline(half_ulp, color="gray", lw=0.8, ls="--")
    axes[2].text(steps * 0.02, half_ulp, f" half a bf16 ulp at the median |w| ({median:.2f}): {half_ulp:.2g}",
                 va="bottom", fontsize=8, color="gray")
    axes[2].set_yscale("log")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("held-out loss (log)")
    axes[0].set_title(f"teacher-student MLP, bf16 weights, AdamW lr {lr:g} + WarmupCosineLR, {steps} steps",
                      fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("% of weights changed\nin the window")
    axes[2].set_ylabel("lr")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--every", type=int, default=0, help="log every N steps (default: steps / 100)")
    parser.add_argument("--plot", default=None, help="write the loss curves to this PNG")
    args = parser.parse_args()
    every = args.every or max(1, args.steps // 100)
    torch.set_num_threads(1)  # a tiny model: threads only add noise

    runs = {}
    print(f"{'configuration':<46}{'final loss':>12}{'mid loss':>11}{'late changed':>14}{'time':>8}")
    for name, (dtype, make) in configurations().items():
        log = runs[name] = train(dtype, make, args.steps, args.lr, every)
        print(f"{name:<46}{log['final_loss']:>12.4e}{log['mid_loss']:>11.4e}"
              f"{100 * log['late_changed']:>13.1f}%{log['seconds']:>7.1f}s")
    ref = runs["fp32 FusedAdamW (reference)"]["final_loss"]
    print(f"\nfinal loss / fp32 reference: " + ", ".join(
        f"{name.removeprefix('bf16 ')} {log['final_loss'] / ref:.2f}x" for name, log in runs.items()
        if not name.startswith("fp32")))
    if args.plot:
        plot(runs, args.plot, args.steps, args.lr)


if __name__ == "__main__":
    main()
