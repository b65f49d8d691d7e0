"""Cost of one scheduler step(): steadystep's C++ classes (Google Benchmark) beside torch's
Python classes and steadystep's Python classes, in one run.

    python benchmarks/bench_schedulers.py [--build build] [--json out.json]
"""

import argparse
import json
import subprocess
import sys
import timeit
import warnings
from pathlib import Path

import torch

import steadystep.lr_scheduler as ss

T = torch.optim.lr_scheduler
HUGE = 1 << 40
SCHEDULERS = {  # name in the C++ benchmark -> (torch factory, steadystep factory)
    "CosineAnnealingLR": (lambda o: T.CosineAnnealingLR(o, 1000), lambda o: ss.CosineAnnealingLR(o, 1000)),
    "StepLR": (lambda o: T.StepLR(o, 30), lambda o: ss.StepLR(o, 30)),
    "OneCycleLR": (lambda o: T.OneCycleLR(o, 0.1, total_steps=HUGE), lambda o: ss.OneCycleLR(o, 0.1, total_steps=HUGE)),
    "CyclicLR": (lambda o: T.CyclicLR(o, 0.01, 0.1), lambda o: ss.CyclicLR(o, 0.01, 0.1)),
    "WarmupCosineLR": (None, lambda o: ss.WarmupCosineLR(o, 1000, HUGE)),
}


def python_step_ns(factory, groups: int) -> float:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=0.1, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = factory(opt)
        timer = timeit.Timer(sched.step)
        n, _ = timer.autorange()
        best = min(timer.repeat(repeat=5, number=n)) / n
    return best * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="CMake build directory")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    binary = Path(args.build) / "benchmarks" / "bench_scheduler_step"
    print(f"running {binary} ...", file=sys.stderr)
    out = subprocess.run([str(binary), "--benchmark_format=json", "--benchmark_min_time=0.2"],
                         check=True, capture_output=True, text=True).stdout
    cpp = {}
    for b in json.loads(out)["benchmarks"]:
        name, groups = b["name"].removeprefix("BM_").split("/")
        cpp[(name, int(groups))] = b["cpu_time"]  # ns per step

    rows = []
    for (name, groups), cpp_ns in sorted(cpp.items()):
        torch_factory, ss_factory = SCHEDULERS[name]
        torch_ns = python_step_ns(torch_factory, groups) if torch_factory else float("nan")
        ss_ns = python_step_ns(ss_factory, groups)
        rows.append({"scheduler": name, "groups": groups, "cpp_ns": cpp_ns, "cpp_ns_per_group": cpp_ns / groups,
                     "torch_python_ns": torch_ns, "steadystep_python_ns": ss_ns})

    print(f"\nscheduler step() cost, torch {torch.__version__}, CPU (lower is better)")
    head = f"{'scheduler':<20} {'groups':>6} {'C++ ns':>9} {'C++ ns/group':>13} {'torch py ns':>12} {'steadystep py ns':>17} {'torch/C++':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["torch_python_ns"] / r["cpp_ns"]
        print(f"{r['scheduler']:<20} {r['groups']:>6} {r['cpp_ns']:>9.0f} {r['cpp_ns_per_group']:>13.0f} "
              f"{r['torch_python_ns']:>12.0f} {r['steadystep_python_ns']:>17.0f} {ratio:>9.0f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
