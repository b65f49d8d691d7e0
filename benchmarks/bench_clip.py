"""torch.nn.utils.clip_grad_norm_ (its default foreach path) against steadystep.clip_grad_norm_,
side by side in one run, on CPU and (when present) CUDA.

    python benchmarks/bench_clip.py [--device cpu|cuda|all] [--json results.json]

For (a) a GPT-2-small parameter set (124M parameters, 148 tensors) and (b) 2,000 tensors of
1-4k elements, with the norm under max_norm (no clipping) and over it (clipping), it prints the
median time per call, the speedup, the achieved GB/s against the minimal bytes (4 per fp32
element without clipping, 12 with: read for the norm, read and write to scale), the device's
copy bandwidth measured in the same run, and the peak extra memory of one call.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    GPT2_SMALL_SHAPES, copy_bandwidth, human_bytes, make_params, median_time, peak_memory, small_shapes,
)

import steadystep  # noqa: E402


def run_case(name, shapes, device, clipping):
    n = sum(math.prod(s) for s in shapes)
    # No clipping: max_norm far above the norm. Clipping: max_norm shrinks by 0.1% a call, so
    # every call really rescales (a fixed max_norm stops clipping once the norm has reached it).
    def clipper(fn):
        torch.manual_seed(0)
        params = make_params(shapes, device)  # each contender clips its own, equal, gradients
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        state = {"max_norm": norm / 2 if clipping else norm * 10}

        def call():
            fn(params, state["max_norm"])
            if clipping:
                state["max_norm"] *= 0.999
        return call

    torch_fn = clipper(torch.nn.utils.clip_grad_norm_)
    ours_fn = clipper(steadystep.clip_grad_norm_)
    t_torch = median_time(torch_fn, device)
    peak_torch = peak_memory(torch_fn, device)
    del torch_fn
    t_ours = median_time(ours_fn, device)
    peak_ours = peak_memory(ours_fn, device)
    bytes_min = (12 if clipping else 4) * n
    return {
        "device": device, "set": name, "tensors": len(shapes), "elements": n,
        "clipping": clipping, "torch_ms": t_torch * 1e3, "steadystep_ms": t_ours * 1e3,
        "speedup": t_torch / t_ours,
        "torch_GBps": bytes_min / t_torch / 1e9, "steadystep_GBps": bytes_min / t_ours / 1e9,
        "torch_peak": peak_torch, "steadystep_peak": peak_ours,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    results = []
    for device in devices:
        copy = copy_bandwidth(device)
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"\nclip_grad_norm_ on {name}: torch {torch.__version__}, copy bandwidth {copy:.1f} GB/s")
        header = (f"{'set':<16}{'clip':>5}{'torch ms':>10}{'ours ms':>10}{'speedup':>9}"
                  f"{'torch GB/s':>12}{'ours GB/s':>11}{'ours/copy':>10}{'torch peak':>12}{'ours peak':>11}")
        print(header)
        print("-" * len(header))
        for set_name, shapes in [("gpt2-small 124M", GPT2_SMALL_SHAPES), ("2000 x 1-4k", small_shapes())]:
            for clipping in (False, True):
                r = run_case(set_name, shapes, device, clipping)
                r["copy_GBps"] = copy
                results.append(r)
                print(f"{set_name:<16}{'yes' if clipping else 'no':>5}{r['torch_ms']:>10.3f}{r['steadystep_ms']:>10.3f}"
                      f"{r['speedup']:>8.2f}x{r['torch_GBps']:>12.1f}{r['steadystep_GBps']:>11.1f}"
                      f"{r['steadystep_GBps'] / copy:>9.0%} {human_bytes(r['torch_peak']):>11} {human_bytes(r['steadystep_peak']):>10}")
    if not torch.cuda.is_available():
        print("\n(no CUDA device here: CPU only)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
