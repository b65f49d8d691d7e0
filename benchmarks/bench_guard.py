"""The guarded fused step against the plain one and against the published references: one AdamW
step with a gradient guard, side by side in one run, on the 124M set (GPT-2 small shapes), CPU
(and CUDA when present).

    python benchmarks/bench_guard.py [--device cpu|cuda] [--rounds 12] [--steps 3] [--quick]

Contenders (all AdamW lr 1e-3, weight decay 0.01, on the same params and grads):
  (a) FusedAdamW(max_grad_norm=1.0)                      the plain fused step with clipping
  (b) FusedAdamW(guard=ZScoreClip())
  (c) FusedAdamW(guard=PercentileClip())
  (d) FusedAdamW(max_grad_norm=1.0, guard=SpikeSkip())
  (e) FusedAdamW(guard=[SpikeSkip(), ZScoreClip()])
  (f) zclip.ZClip().step(holder) + torch.optim.AdamW(fused=True)   ZClip's reference code
  (f') the same with torch.optim.AdamW() as it comes (CPU default: the single-tensor loop)
  (g) autoclip QuantileClip(global_threshold=True).step() + torch.optim.AdamW(fused=True)
torch's AdamW with fused=True is its fastest CPU implementation (benchmarks/bench_step.py's
"torch best"). The grads are fixed random values with a global norm of 0.5 (no clipping needed:
the steady state of a healthy run; no policy clips or skips, none skips a write), the fused steps
leave them as they are (write_back_grads=False). Every contender first runs past its policy's
warmup (ZClip / ZScoreClip 25 steps, SpikeSkip 64); then `--rounds` rounds each time `--steps`
steps of every contender in turn (interleaved, so a load change on a shared machine hits all of
them alike; each round starts one contender later); the per-step time is the median over the rounds. Last, the guard's own cost, which
the 124M step's run-to-run noise hides: the same fused contenders (a)-(e) on one 8-element
parameter (the step is then the policy math and the op's fixed cost), median µs per step.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GPT2_SMALL_SHAPES, make_params, median_time, sync  # noqa: E402

import steadystep  # noqa: E402
from steadystep import optim as so  # noqa: E402

KWARGS = {"lr": 1e-3, "weight_decay": 0.01}
GRAD_NORM = 0.5
ZCLIP_DEFAULT = "(f') zclip.ZClip + AdamW() default"


def contenders(params, device, references=True):
    """name: (step function, warmup steps)."""
    def fused(**kw):
        opt = so.FusedAdamW(params, **KWARGS, **kw)
        return opt.step

    out = {
        "(a) FusedAdamW(max_grad_norm=1)": (fused(max_grad_norm=1.0), 3),
        "(b) FusedAdamW(guard=ZScoreClip)": (fused(guard=steadystep.ZScoreClip()), 30),
        "(c) FusedAdamW(guard=PercentileClip)": (fused(guard=steadystep.PercentileClip()), 3),
        "(d) FusedAdamW(mgn=1, guard=SpikeSkip)": (fused(max_grad_norm=1.0, guard=steadystep.SpikeSkip()), 70),
        "(e) FusedAdamW(guard=[SpikeSkip, ZScoreClip])": (
            fused(guard=[steadystep.SpikeSkip(), steadystep.ZScoreClip()]), 70),
    }
    if not references:
        return out
    try:
        from zclip import ZClip

        holder = torch.nn.Module()  # what ZClip.step wants: .parameters() and .modules()
        holder.params = torch.nn.ParameterList(params)
        zclip, opt_f = ZClip(), torch.optim.AdamW(params, **KWARGS, fused=True)

        def zclip_step():
            zclip.step(holder)
            opt_f.step()
        out["(f) zclip.ZClip + AdamW(fused)"] = (zclip_step, 30)
        zclip_d, opt_d = ZClip(), torch.optim.AdamW(params, **KWARGS)

        def zclip_default_step():
            zclip_d.step(holder)
            opt_d.step()
        out[ZCLIP_DEFAULT] = (zclip_default_step, 30)
    except ImportError:
        print("(f) skipped: pip install zclip==1.0.0")
    try:
        from autoclip.torch import QuantileClip

        clipper = QuantileClip(params, global_threshold=True)
        opt_g = torch.optim.AdamW(params, **KWARGS, fused=True)

        def autoclip_step():
            clipper.step()
            opt_g.step()
        out["(g) autoclip QuantileClip + AdamW(fused)"] = (autoclip_step, 3)
    except ImportError:
        print("(g) skipped: pip install autoclip==0.2.1")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    parser.add_argument("--quick", action="store_true", help="5 rounds of 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 5, 2
    device = args.device
    torch.manual_seed(0)
    params = make_params(GPT2_SMALL_SHAPES, device)
    n = sum(p.numel() for p in params)
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        for p in params:
            p.grad.mul_(GRAD_NORM / norm)
    steps = contenders(params, device)
    for fn, warmup in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.rounds):
        # each round starts at the next contender: no one always runs first or after the slowest
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = steps[name][0]
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / args.steps)
    ms = {name: statistics.median(s) * 1e3 for name, s in samples.items()}
    spread = {name: (min(s) * 1e3, max(s) * 1e3) for name, s in samples.items()}

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nguarded AdamW step, gpt2-small 124M ({n / 1e6:.1f}M params, {len(params)} tensors), {where}, "
          f"torch {torch.__version__}; median of {args.rounds} rounds x {args.steps} steps, grad norm {GRAD_NORM}")
    base = ms["(a) FusedAdamW(max_grad_norm=1)"]
    head = f"{'contender':<46}{'ms/step':>10}{'min-max':>16}{'vs (a)':>9}"
    print(head + "\n" + "-" * len(head))
    for name, t in ms.items():
        lo, hi = spread[name]
        print(f"{name:<46}{t:>10.2f}{f'{lo:.1f}-{hi:.1f}':>16}{t / base - 1:>+9.1%}")
    print()
    zclip_name = "(f) zclip.ZClip + AdamW(fused)"
    if zclip_name in ms:
        b = ms['(b) FusedAdamW(guard=ZScoreClip)']
        print(f"ZScoreClip fused (b) vs ZClip + AdamW(fused) (f): {ms[zclip_name] / b:.2f}x,"
              f" vs ZClip + AdamW() default (f'): {ms[ZCLIP_DEFAULT] / b:.2f}x"
              "  (goal >= 2x)")
    auto_name = "(g) autoclip QuantileClip + AdamW(fused)"
    if auto_name in ms:
        print(f"PercentileClip fused (c) vs autoclip + AdamW(fused) (g): "
              f"{ms[auto_name] / ms['(c) FusedAdamW(guard=PercentileClip)']:.2f}x")
    worst = max(t / base - 1 for name, t in ms.items() if name[1] in "bcde")
    print(f"guarded (b-e) over plain fused (a): worst {worst:+.1%}  (goal <= +3%)")

    tiny = make_params([(8,)], device)
    tiny[0].grad.mul_(GRAD_NORM / torch.linalg.vector_norm(tiny[0].grad))
    small = contenders(tiny, device, references=False)
    us = {}
    for name, (fn, warmup) in small.items():
        for _ in range(warmup):
            fn()
        us[name] = median_time(fn, device, repeats=7, min_time=0.3) * 1e6
    print(f"\nthe guard's own cost: the fused step on one 8-element parameter, median µs/step")
    for name, t in us.items():
        extra = t - us["(a) FusedAdamW(max_grad_norm=1)"]
        print(f"{name:<46}{t:>10.1f} µs  {extra:>+8.1f} µs vs (a) = {extra / 1e3 / base:>+7.2%} of the 124M step")


if __name__ == "__main__":
    main()
