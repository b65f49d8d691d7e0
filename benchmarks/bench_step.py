"""One optimizer step with global-norm clipping: torch default (clip_grad_norm_ + the optimizer
with its default implementation), torch best (clip_grad_norm_ + fused=True) and steadystep (one
fused step with max_grad_norm), side by side in one run, on CPU and (when present) CUDA.

    python benchmarks/bench_step.py [--device cpu|cuda|all] [--sets gpt2,gpt2xl,small] [--json out.json]

Sets: gpt2 (GPT-2 small, 124M, 148 tensors), gpt2xl (GPT-2 XL shapes, 1.56B, 580 tensors: ~25
GiB for fp32 AdamW, so not in the default list), small (2,000 tensors of 1-4k elements).
Prints the median time per step, the ratios, and the achieved GB/s against the minimal bytes
(fp32 Adam with clipping: 32 bytes per parameter: 4 for the norm, 16 read + 12 written for the
step; SGD with momentum: 24; half of these for bf16 params and state). On CUDA it adds bf16
params, fp16 AMP (fp32 params whose grads carry a GradScaler's scale; torch's side is the whole
recipe: scaler.unscale_ + clip_grad_norm_ + scaler.step + scaler.update; torch refuses to unscale
fp16 grads, so the params stay fp32 as autocast leaves them), and the kernels each contender
launches per step.
"""

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (GPT2_SMALL_SHAPES, GPT2_XL_SHAPES, copy_bandwidth, kernels_per_call, make_params,  # noqa: E402
                    median_time, small_shapes)

from steadystep import optim as so  # noqa: E402

MAX_NORM = 1.0
OPTIMIZERS = {
    # name: (torch class, torch kwargs, steadystep class, bytes per parameter)
    "Adam": (torch.optim.Adam, {"lr": 1e-3}, so.FusedAdam, 32),
    "AdamW": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01}, so.FusedAdamW, 32),
    "SGD": (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}, so.FusedSGD, 24),
}


def torch_step(params, opt, scaler=None):
    def step():
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return step


def ours_step(opt, scaler=None):
    def step():
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return step


def amp_scaler(device, params):
    # A GradScaler in the middle of a run: grads carry its scale, unscale_ has work to do.
    scaler = torch.amp.GradScaler(device, init_scale=1024.0, growth_interval=10**9)
    for p in params:
        p.grad.mul_(1024.0)

    def rearm():  # GradScaler wants scale() -> step() -> update(); scale a dummy loss each time
        scaler.scale(torch.zeros((), device=device))
    return scaler, rearm


def measure(device, shapes, name, contender, dtype=torch.float32, amp=False, count_kernels=False):
    """Seconds per step (and, with count_kernels, the kernels one step launches)."""
    torch_cls, kwargs, ours_cls, _ = OPTIMIZERS[name]
    torch.manual_seed(0)
    params = make_params(shapes, device, dtype)
    scaler, rearm = amp_scaler(device, params) if amp else (None, None)
    if contender == "steadystep":
        opt = ours_cls(params, **kwargs, max_grad_norm=MAX_NORM)
        fn = ours_step(opt, scaler)
    else:
        opt = torch_cls(params, **kwargs, **({"fused": True} if contender == "torch best" else {}))
        fn = torch_step(params, opt, scaler)
    if amp:
        inner = fn

        def fn():  # noqa: F811
            rearm()
            inner()
            # GradScaler.unscale_ unscales in place: put the scale back for the next step
            # (outside torch's timing would be fairer, but both sides pay it equally).
    t = median_time(fn, device, repeats=5, min_time=0.5 if device == "cuda" else 1.0)
    kernels = kernels_per_call(fn) if count_kernels else None
    del opt, params, fn
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return t, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--sets", default="gpt2,small")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    sets = {"gpt2": ("gpt2-small 124M", GPT2_SMALL_SHAPES), "gpt2xl": ("gpt2-xl 1.56B", GPT2_XL_SHAPES),
            "small": ("2000 x 1-4k", small_shapes())}
    results = []
    for device in devices:
        copy = copy_bandwidth(device)
        where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"\nclip + optimizer step on {where}: torch {torch.__version__}, copy bandwidth {copy:.1f} GB/s")
        head = (f"{'set':<16}{'optimizer':<15}{'torch default':>14}{'torch best':>12}{'steadystep':>12}"
                f"{'vs default':>11}{'vs best':>9}{'GB/s':>8}{'of copy':>9}"
                + (f"{'kernels/step d/b/ours':>23}" if device == "cuda" else ""))
        print(head + "\n" + "-" * len(head))
        for key in args.sets.split(","):
            set_name, shapes = sets[key]
            n = sum(torch.Size(s).numel() for s in shapes)
            runs = [(name, torch.float32, False) for name in OPTIMIZERS]
            if device == "cuda":
                runs += [(name, dtype, amp) for name in ("AdamW", "SGD")
                         for dtype, amp in ((torch.bfloat16, False), (torch.float32, True))]
            for name, dtype, amp in runs:
                measured = {c: measure(device, shapes, name, c, dtype, amp, count_kernels=device == "cuda")
                            for c in ("torch default", "torch best", "steadystep")}
                times = {c: t for c, (t, _) in measured.items()}
                bytes_per = OPTIMIZERS[name][3] * (1 if dtype == torch.float32 else 0.5)
                gbps = bytes_per * n / times["steadystep"] / 1e9
                label = name + (" AMP" if amp else "") + (" bf16" if dtype == torch.bfloat16 else "")
                kernels = "/".join(str(k) for _, k in measured.values())
                print(f"{set_name:<16}{label:<15}{times['torch default'] * 1e3:>12.2f}ms{times['torch best'] * 1e3:>10.2f}ms"
                      f"{times['steadystep'] * 1e3:>10.2f}ms{times['torch default'] / times['steadystep']:>10.2f}x"
                      f"{times['torch best'] / times['steadystep']:>8.2f}x{gbps:>8.1f}{gbps / copy:>8.0%}"
                      + (f"{kernels:>23}" if device == "cuda" else ""))
                results.append({"device": device, "set": set_name, "optimizer": label, "elements": n,
                                "ms": {k: v * 1e3 for k, v in times.items()}, "GBps": gbps, "copy_GBps": copy,
                                "kernels": {c: k for c, (_, k) in measured.items()}})
    if not torch.cuda.is_available():
        print("\n(no CUDA device here: CPU only; the bf16 and fp16 AMP rows and the kernel counts are CUDA's)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
