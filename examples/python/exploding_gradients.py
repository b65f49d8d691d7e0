"""The demo's story in plain PyTorch: steadystep.optim.FusedAdamW and
steadystep.lr_scheduler.WarmupCosineLR drop into an ordinary training loop.

    python examples/python/exploding_gradients.py [--steps 600] [--lr 0.02] [--device cpu]

A deep ReLU MLP without normalisation regresses a synthetic target; two of 8192 training
targets are inf (corrupted records), so some batches have exploding, non-finite gradients.
torch's AdamW (with or without warmup) is poisoned by the first such batch; FusedAdamW with
max_grad_norm skips those steps on the device and converges. Then the same two records x1000
(large but finite spikes: nothing to skip as non-finite), FusedAdamW + WarmupCosineLR four ways:
no clipping, max_grad_norm, guard=ZScoreClip(), max_grad_norm with guard=SpikeSkip().
"""

import argparse
import math

import torch

import steadystep


def make_model(device):
    torch.manual_seed(0)
    layers, width = [], 16
    for _ in range(8):
        linear = torch.nn.Linear(width, 64)
        torch.nn.init.normal_(linear.weight, 0.0, 1.5 / math.sqrt(width))
        torch.nn.init.zeros_(linear.bias)
        layers += [linear, torch.nn.ReLU()]
        width = 64
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers).to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(123)
    target = lambda x: torch.sin(x[:, :4].sum(1, keepdim=True)) + 0.1 * x[:, 4:5]  # noqa: E731
    x = torch.randn(8192, 16)
    y = target(x)
    y_spike = y.clone()
    y[[1000, 7000]] = math.inf  # corrupted records
    y_spike[[1000, 7000]] *= 1e3  # the same records, finite
    x_val = torch.randn(1024, 16)
    x, y, x_val = x.to(args.device), y.to(args.device), x_val.to(args.device)
    y_spike = y_spike.to(args.device)
    y_val = target(x_val)
    warmup = args.steps // 6

    fused = steadystep.optim.FusedAdamW
    configs = {  # name: (make optimizer, schedule, targets)
        "AdamW, constant lr": lambda p: (torch.optim.AdamW(p, lr=args.lr), None, y),
        "AdamW + WarmupCosineLR": lambda p: (torch.optim.AdamW(p, lr=args.lr), "cosine", y),
        "FusedAdamW(max_grad_norm) + WarmupCosineLR": lambda p: (
            fused(p, lr=args.lr, max_grad_norm=1.0), "cosine", y),
        # finite spikes, all + WarmupCosineLR
        "spikes: FusedAdamW, no clipping": lambda p: (fused(p, lr=args.lr), "cosine", y_spike),
        "spikes: FusedAdamW(max_grad_norm)": lambda p: (
            fused(p, lr=args.lr, max_grad_norm=1.0), "cosine", y_spike),
        "spikes: FusedAdamW(guard=ZScoreClip)": lambda p: (
            fused(p, lr=args.lr, guard=steadystep.ZScoreClip()), "cosine", y_spike),
        "spikes: FusedAdamW(max_grad_norm, SpikeSkip)": lambda p: (
            fused(p, lr=args.lr, max_grad_norm=1.0, guard=steadystep.SpikeSkip()), "cosine", y_spike),
    }
    print(f"{'configuration':<46} {'val loss':>10} {'skipped':>8}  verdict")
    for name, make in configs.items():
        if name == "spikes: FusedAdamW, no clipping":
            print("finite spikes (the 2 records x1000), all + WarmupCosineLR:")
        model = make_model(args.device)
        opt, schedule, targets = make(model.parameters())
        sched = steadystep.lr_scheduler.WarmupCosineLR(opt, warmup, args.steps) if schedule else None
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            start = torch.nn.functional.mse_loss(model(x_val), y_val).item()
        for _ in range(args.steps):
            idx = torch.randint(0, len(x), (128,), generator=gen).to(args.device)
            loss = torch.nn.functional.mse_loss(model(x[idx]), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()
        with torch.no_grad():
            final = torch.nn.functional.mse_loss(model(x_val), y_val).item()
        skipped = int(opt.skipped_steps) if isinstance(opt, steadystep.optim.FusedAdamW) else 0
        verdict = ("converged" if math.isfinite(final) and final < 0.2 * start
                   else "DIVERGED" if not math.isfinite(final) or final >= 0.5 * start else "undecided")
        print(f"{name:<46} {final:>10.4g} {skipped:>8}  {verdict}")


if __name__ == "__main__":
    main()
