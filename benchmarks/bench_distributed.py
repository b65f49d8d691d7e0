"""clip_grad_norm_ and the clip + AdamW step on FSDP2 with 1,000 DTensors: torch against
steadystep, side by side in one run.

    python benchmarks/bench_distributed.py [--nproc 2] [--tensors 1000] [--json results.json]
    torchrun --nproc_per_node 2 benchmarks/bench_distributed.py [...]        (the same)

Run plainly, the script launches itself under torchrun (`--standalone`, `--nproc` ranks).
Backend: gloo on CPU, or NCCL with one GPU per rank (by LOCAL_RANK) when CUDA is present
(`--device cpu` forces CPU). A module of `--tensors` parameters of 1-4k elements
(`common.small_shapes`) is sharded with `fully_shard` (each parameter and gradient a DTensor,
Shard(0) over all ranks); the gradients are fixed random values.

Contenders, each on its own copy of the same parameters and gradients:
- clip: `torch.nn.utils.clip_grad_norm_` (default and foreach=True: per-tensor norms, a stack,
  the reductions DTensor asks for) against `steadystep.clip_grad_norm_` (the local kernel on every
  shard, one all-reduce), with max_norm far above the norm (no clipping) and below it (clipping).
- step: `torch.nn.utils.clip_grad_norm_` + `torch.optim.AdamW` (default + default; foreach=True
  clip + foreach=True or fused=True AdamW) against `steadystep.optim.FusedAdamW(max_grad_norm)`.

Each timed call starts after a barrier and ends when its collectives have finished (a device
synchronize on CUDA); the table shows the median over `--repeats` calls after `--warmup` calls,
the slowest rank's median, from rank 0 (a contender slower than `--budget` / `--repeats` seconds a
call gets fewer repeats, at least 3). The norms of the two clips are checked equal first. A last
line splits steadystep's norm into the op under it (local shards prepared beforehand: the local
kernel and the one all-reduce) and the Python that prepares its arguments from the DTensors.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import small_shapes  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks when launched plainly")
    parser.add_argument("--tensors", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="calls before timing (at least 2)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds of timed calls per contender, at most (fewer repeats, at least 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", help="write the results here (rank 0)")
    return parser.parse_args()


def launch_self(args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               str(Path(__file__).resolve()), *sys.argv[1:]]
    return subprocess.call(command)


def main():
    args = parse_args()
    if "RANK" not in os.environ:
        sys.exit(launch_self(args))

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    import steadystep

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if use_cuda and local_world > torch.cuda.device_count():  # NCCL wants a GPU per rank
        if local_rank == 0:
            gpus = torch.cuda.device_count()
            print(f"{local_world} ranks need {local_world} GPUs, this machine has {gpus}: use "
                  + (f"--nproc {gpus} or " if gpus else "") + "--device cpu", file=sys.stderr)
        sys.exit(2)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    shapes = small_shapes(args.tensors)

    def sharded_params():
        """A fresh FSDP2 module with the same parameters and gradients on every call."""
        torch.manual_seed(0)
        module = torch.nn.Module()
        module.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes)
        module.to(device)
        fully_shard(module, mesh=mesh)
        params = list(module.parameters())
        gen = torch.Generator().manual_seed(1 + rank)  # each rank its own shard's gradient
        for p in params:
            local = torch.randn(p.to_local().shape, generator=gen).to(device)
            p.grad = DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
        return module, params

    def full(t):
        return t.full_tensor() if isinstance(t, DTensor) else t

    def wait():
        if use_cuda:
            torch.cuda.synchronize()

    def time_calls(fn):
        """Median seconds per call on this rank; the caller takes the slowest rank's."""
        # A contender that takes seconds a call gets fewer warmup calls and repeats (at least 2 and 3),
        # the same on every rank; the last warmup call is the one to go by (the first creates the
        # optimizer state).
        spent = 0.0
        for i in range(max(args.warmup, 2)):
            start = time.perf_counter()
            fn()
            wait()
            once = slowest(time.perf_counter() - start)
            spent += once
            if i >= 1 and spent > args.budget / 2:
                break
        repeats = min(args.repeats, max(3, int(args.budget / once)))
        samples = []
        for _ in range(repeats):
            dist.barrier()
            wait()
            start = time.perf_counter()
            fn()
            wait()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples), repeats

    def slowest(seconds):
        value = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value.item()

    _, grads_probe = sharded_params()
    norm = float(full(torch.nn.utils.get_total_norm([p.grad for p in grads_probe])))
    elements = sum(p.numel() for p in grads_probe)
    del grads_probe

    results = []

    def record(kind, case, contender, fn):
        try:
            median, repeats = time_calls(fn)
            seconds, error = slowest(median), None
        except Exception as exc:  # a contender torch cannot run here is shown, not fatal
            seconds, repeats, error = float("nan"), 0, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            dist.barrier()
        results.append({"kind": kind, "case": case, "contender": contender, "ms": seconds * 1e3,
                        "repeats": repeats, "error": error})
        if rank == 0 and error:
            print(f"  {kind} {case} {contender}: {error}", file=sys.stderr, flush=True)

    # Both clips give the same norm (checked before timing anything).
    _, p_torch = sharded_params()
    _, p_ours = sharded_params()
    n_torch = full(torch.nn.utils.clip_grad_norm_(p_torch, norm / 2))
    try:
        n_ours = full(steadystep.clip_grad_norm_(p_ours, norm / 2))
        rel = abs(float(n_torch) - float(n_ours)) / float(n_torch)
        clipped_rel = max(float((full(a.grad) - full(b.grad)).abs().max()) for a, b in zip(p_torch, p_ours)) / norm
    except Exception as exc:
        n_ours = rel = clipped_rel = float("nan")
        if rank == 0:
            print(f"steadystep.clip_grad_norm_ failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        dist.barrier()
    del p_torch, p_ours

    for clipping in (False, True):
        case = "clipping" if clipping else "no clipping"
        clips = [("torch (default)", torch.nn.utils.clip_grad_norm_),
                 ("torch (foreach)", functools.partial(torch.nn.utils.clip_grad_norm_, foreach=True)),
                 ("steadystep", steadystep.clip_grad_norm_)]
        for contender, clip in clips:
            _, params = sharded_params()
            state = {"max_norm": norm / 2 if clipping else norm * 10}

            def call(clip=clip, params=params, state=state):
                clip(params, state["max_norm"])
                if clipping:  # shrink, so that every call really rescales
                    state["max_norm"] *= 0.999
            record("clip", case, contender, call)
            del params

    # Where steadystep's clip time goes: its norm from the DTensors, against the op under it on local
    # shards prepared beforehand (the local kernel and the one all-reduce, without the Python before it).
    _, params = sharded_params()
    grads = [p.grad for p in params]
    record("norm", "breakdown", "steadystep.get_total_norm", lambda: steadystep.get_total_norm(grads))
    if world > 1 and hasattr(torch.ops.steadystep, "get_total_norm_sharded"):
        with torch.no_grad():
            shards = [g.to_local() for g in grads]
        groups = [mesh.get_group(0).group_name]
        record("norm", "breakdown", "op alone", lambda: torch.ops.steadystep.get_total_norm_sharded(
            shards, [0] * len(shards), groups, [1], None, 2.0, False))
    del params, grads

    # torch: clip_grad_norm_ then the step; the default pair, and foreach clip with foreach / fused AdamW.
    step_contenders = [
        ("torch AdamW (default)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01), {}),
        ("torch AdamW (foreach)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=True),
         {"foreach": True}),
        ("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True),
         {"foreach": True}),
        ("steadystep FusedAdamW", lambda ps: steadystep.optim.FusedAdamW(ps, lr=1e-3, weight_decay=0.01,
                                                                          max_grad_norm=1.0), None),
    ]
    for contender, make, clip_first in step_contenders:
        _, params = sharded_params()
        try:
            optimizer = make(params)
        except Exception as exc:
            results.append({"kind": "step", "case": "max_grad_norm 1", "contender": contender, "ms": float("nan"),
                            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
            continue

        def step(optimizer=optimizer, params=params, clip_first=clip_first):
            if clip_first is not None:
                torch.nn.utils.clip_grad_norm_(params, 1.0, **clip_first)
            optimizer.step()
        record("step", "max_grad_norm 1", contender, step)
        del optimizer, params

    if rank == 0:
        where = torch.cuda.get_device_name() if use_cuda else "CPU, 1 thread per rank"
        print(f"\nFSDP2, {world} ranks, {dist.get_backend()} on {where}; {args.tensors} DTensors, {elements} elements; "
              f"torch {torch.__version__}; median of up to {args.repeats} calls "
              f"after {args.warmup}, slowest rank")
        print(f"norms: torch {float(n_torch):.6g}, steadystep {float(n_ours):.6g} (rel {rel:.1e}); "
              f"clipped grads differ by {clipped_rel:.1e} of the norm")
        header = f"{'':<6}{'case':<17}{'contender':<24}{'ms':>10}{'speedup':>10}{'repeats':>9}"
        print(header)
        print("-" * len(header))
        for kind, case in [("clip", "no clipping"), ("clip", "clipping"), ("step", "max_grad_norm 1")]:
            rows = [r for r in results if r["kind"] == kind and r["case"] == case]
            ours = next(r["ms"] for r in rows if r["contender"].startswith("steadystep"))
            for r in rows:
                r["speedup_of_steadystep"] = r["ms"] / ours if not r["contender"].startswith("steadystep") else None
                speedup = f"{r['speedup_of_steadystep']:.2f}x" if r["speedup_of_steadystep"] else ""
                ms = f"{r['ms']:.3f}" if r["error"] is None else "error"
                print(f"{kind:<6}{case:<17}{r['contender']:<24}{ms:>10}{speedup:>10}{r.get('repeats', 0):>9}")
        print("(speedup: that contender's time over steadystep's)")
        for kind, case in [("clip", "no clipping"), ("clip", "clipping"), ("step", "max_grad_norm 1")]:
            rows = [r for r in results if r["kind"] == kind and r["case"] == case and r["error"] is None]
            ours = [r["ms"] for r in rows if r["contender"].startswith("steadystep")]
            theirs = [r for r in rows if not r["contender"].startswith("steadystep")]
            if ours and theirs:
                best = min(theirs, key=lambda r: r["ms"])
                print(f"{kind} ({case}): {best['ms'] / ours[0]:.2f}x over torch's fastest, {best['contender']}")
        breakdown = {r["contender"]: r["ms"] for r in results if r["kind"] == "norm" and r["error"] is None}
        if len(breakdown) == 2:
            print(f"steadystep.get_total_norm on the DTensors {breakdown['steadystep.get_total_norm']:.3f} ms, of which "
                  f"the op under it (local norm + one all-reduce, shards prepared) {breakdown['op alone']:.3f} ms")
        if args.json:
            meta = {"world_size": world, "backend": dist.get_backend(), "device": where, "tensors": args.tensors,
                    "elements": elements, "torch": torch.__version__, "repeats": args.repeats,
                    "norm_rel_diff": rel, "clipped_rel_diff": clipped_rel}
            Path(args.json).write_text(json.dumps([dict(meta, **r) for r in results], indent=2))
            print(f"wrote {args.json}")
    dist.barrier()  # no rank tears gloo down while a peer still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
