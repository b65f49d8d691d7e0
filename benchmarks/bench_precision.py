"""Low precision inside the fused step: step time and optimizer memory (bytes per parameter) of
FusedAdamW's precision options against torch's AdamW, side by side in one run.

    python benchmarks/bench_precision.py [--device cpu|cuda] [--size gpt2|small] [--passes 4] [--steps 3] [--threads N]

Contenders (all AdamW lr 1e-3, weight decay 0.01, no clipping, on the same params and grads):
  fp32 params:  FusedAdamW;  torch AdamW() default, foreach=True, fused=True
  bf16 params:  FusedAdamW plain; + master_weights; + stochastic_rounding; + state_dtype=bf16;
                + master_weights + state_dtype=bf16;  torch AdamW() default, foreach=True, fused=True
`--size gpt2`: GPT-2 small's shapes (124M params, 148 tensors, benchmarks/common.py); `--size
small`: the same layout at width 256, 4 blocks, vocab 8192 (5M params), for a quick run.

Memory is measured from the tensors after the contender's first step: the bytes of its params
plus every tensor in its optimizer state (exp_avg, exp_avg_sq, master_param, the step counters),
divided by the number of parameters. Gradients (the params' dtype) are not counted.

Timing: one fp32 and one bf16 parameter set with fixed random gradients are shared by all
contenders (their values drift under the steps; the work does not depend on them). To hold one
optimizer state at a time (124M params: up to 1.5 GB each), each contender in turn is built,
stepped once (its state is allocated: not timed), timed over `--steps` steps, measured and
freed; `--passes` such passes, each starting one contender later, so that a load change on a
shared machine hits all of them alike. The step time is the median over all timed steps. On a
shared machine with few cores, `--threads 1` gives steadier numbers (a multi-threaded step
doubles whenever another process takes one of its cores).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GPT2_SMALL_SHAPES, gpt2_shapes, sync  # noqa: E402

from steadystep import optim as so  # noqa: E402

KWARGS = {"lr": 1e-3, "weight_decay": 0.01}
BF16 = torch.bfloat16
PLAIN_BF16 = "bf16 FusedAdamW"


SIZES = {"gpt2": GPT2_SMALL_SHAPES, "small": gpt2_shapes(8192, 256, 256, 4)}


def contenders(device: str) -> dict:
    """name: (param dtype, make optimizer from params). Names say the param dtype first."""
    fused = so.FusedAdamW
    torch_fused = {"fused": True}
    out = {
        "fp32 FusedAdamW": (torch.float32, lambda p: fused(p, **KWARGS)),
        PLAIN_BF16: (BF16, lambda p: fused(p, **KWARGS)),
        "bf16 FusedAdamW(master_weights)": (BF16, lambda p: fused(p, **KWARGS, master_weights=True)),
        "bf16 FusedAdamW(stochastic_rounding)": (BF16, lambda p: fused(p, **KWARGS, stochastic_rounding=True)),
        "bf16 FusedAdamW(state_dtype=bf16)": (BF16, lambda p: fused(p, **KWARGS, state_dtype=BF16)),
        "bf16 FusedAdamW(master_weights, state bf16)": (
            BF16, lambda p: fused(p, **KWARGS, master_weights=True, state_dtype=BF16)),
    }
    for dtype, tag in ((BF16, "bf16"), (torch.float32, "fp32")):
        out[f"{tag} torch AdamW() default"] = (dtype, lambda p: torch.optim.AdamW(p, **KWARGS))
        out[f"{tag} torch AdamW(foreach=True)"] = (dtype, lambda p: torch.optim.AdamW(p, **KWARGS, foreach=True))
        out[f"{tag} torch AdamW(fused=True)"] = (dtype, lambda p: torch.optim.AdamW(p, **KWARGS, **torch_fused))
    return out


def optimizer_bytes(params: list[torch.Tensor], opt: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the params and of each kind of state tensor, read from the tensors themselves."""
    out = {"params": sum(p.numel() * p.element_size() for p in params)}
    for p in params:
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
                out[key] = out.get(key, 0) + value.numel() * value.element_size()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="gpt2", choices=sorted(SIZES))
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender per pass")
    parser.add_argument("--only", default="", help="comma-separated substrings: run only matching contenders")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    shapes = SIZES[args.size]
    sets = {}
    for dtype in (torch.float32, BF16):
        params = []
        for shape in shapes:
            p = torch.nn.Parameter((torch.randn(shape, device=device) * 0.02).to(dtype))
            p.grad = (torch.randn(shape, device=device) * 1e-3).to(dtype)
            params.append(p)
        sets[dtype] = params
    n = sum(p.numel() for p in sets[torch.float32])

    table = contenders(device)
    if args.only:
        keep = [s.strip() for s in args.only.split(",") if s.strip()]
        table = {name: c for name, c in table.items() if any(k in name for k in keep)}
    names = list(table)
    samples = {name: [] for name in names}
    memory, failed = {}, {}
    for r in range(args.passes):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name in failed:
                continue
            dtype, make = table[name]
            params = sets[dtype]
            try:
                opt = make(params)
                opt.step()  # allocates the state
            except (RuntimeError, ValueError, TypeError) as e:  # e.g. a torch build without fused CPU bf16
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                continue
            sync(device)
            for _ in range(args.steps):
                start = time.perf_counter()
                opt.step()
                sync(device)
                samples[name].append(time.perf_counter() - start)
            memory[name] = optimizer_bytes(params, opt)
            del opt

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nAdamW step, {args.size} ({n / 1e6:.1f}M params, {len(shapes)} tensors), {where}, torch "
          f"{torch.__version__}; median of {args.passes} passes x {args.steps} steps")
    base = statistics.median(samples[PLAIN_BF16]) if samples.get(PLAIN_BF16) else None
    head = (f"{'contender':<45}{'ms/step':>9}{'min-max':>15}{'vs bf16 fused':>15}{'B/param':>9}"
            "  state tensors (B/param)")
    print(head + "\n" + "-" * len(head))
    for name in names:
        if name in failed:
            print(f"{name:<45}  not run: {failed[name]}")
            continue
        t = statistics.median(samples[name]) * 1e3
        lo, hi = min(samples[name]) * 1e3, max(samples[name]) * 1e3
        parts = memory[name]
        total = sum(parts.values()) / n
        detail = ", ".join(f"{k} {v / n:.2g}" for k, v in parts.items() if v / n >= 0.01)
        rel = f"{t / (base * 1e3) - 1:+.1%}" if base else "-"
        print(f"{name:<45}{t:>9.2f}{f'{lo:.1f}-{hi:.1f}':>15}{rel:>15}{total:>9.2f}  {detail}")
    if base:
        # The fastest step is the one least disturbed by other load: on a shared machine its ratio
        # is the steadier one.
        fastest = min(samples[PLAIN_BF16])
        print("\ncost over the plain bf16 fused step (goal for masters / stochastic rounding: <= +15%):")
        print(f"  {'option':<36}{'median':>8}{'fastest':>9}")
        for name in names:
            if name.startswith("bf16 FusedAdamW(") and samples.get(name):
                print(f"  {name.removeprefix('bf16 FusedAdamW'):<36}"
                      f"{statistics.median(samples[name]) / base - 1:>+8.1%}{min(samples[name]) / fastest - 1:>+9.1%}")


if __name__ == "__main__":
    main()
