"""Every CUDA path of steadystep once, at small sizes, for compute-sanitizer (`make gpu-check`,
scripts/gpu_check.sh): the norms of every order and dtype, clip by norm and by value, AGC, and
the fused Adam/AdamW/SGD steps with each option (clip, amsgrad, masters, stochastic rounding,
bf16 state, GradScaler, the non-finite skip, each guard policy).

The shapes cross the launch bookkeeping: an empty tensor, lengths that are not a multiple of a
16-byte vector, exactly one chunk (65,536) and one more, a view one element into its storage
(misaligned for vector loads), more tensors than one launch takes (110), and one tensor of more
chunks than one launch's 320 blocks. Each result is compared with the same call on the CPU,
whose kernels the test suite holds to torch bit for bit, so that a run under the sanitizer also
says the numbers are right; the tolerances allow for the other summation order of the norm
(a few fp32 ulps, carried into the update through the clip coefficient).

    python tests/python/cuda_sanitize_cases.py          # exits 1 on a mismatch
    compute-sanitizer --tool memcheck python tests/python/cuda_sanitize_cases.py
    python tests/python/cuda_sanitize_cases.py --device cpu   # the script's own check, no GPU
"""

import math
import sys

import torch

import steadystep
from steadystep import optim

CHUNK, BLOCKS_PER_LAUNCH = 65536, 320
SHAPES = [(0,), (1,), (3,), (CHUNK,), (CHUNK + 1,), (257, 255)] + [(17,)] * 120
LARGE = (BLOCKS_PER_LAUNCH * CHUNK + 7,)
TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-12, 1e-14), torch.float16: (2e-3, 1e-5),
             torch.bfloat16: (1.6e-2, 1e-5), torch.complex64: (1e-5, 1e-6)}
DEVICE = "cpu" if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cpu" else "cuda"
failures: list[str] = []


def tensors(dtype, shapes=SHAPES, large=False, seed=0, scale=1.0):
    """CPU tensors of `shapes` (and one misaligned view, and optionally LARGE), fresh random."""
    gen = torch.Generator().manual_seed(seed)
    out = [(torch.randn(s, generator=gen, dtype=torch.float32) * scale).to(dtype) for s in shapes]
    out.append((torch.randn(1001, generator=gen) * scale).to(dtype)[1:])  # storage offset 1
    if large:
        out.append((torch.randn(LARGE, generator=gen) * scale).to(dtype))
    return out


def check(name, got, want, dtype):
    rtol, atol = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    try:
        torch.testing.assert_close(got.cpu(), want, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as error:
        failures.append(f"{name}: {str(error).splitlines()[0]}")


def norms():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        grads = tensors(dtype, large=dtype == torch.float32)
        on_cuda = [g.to(DEVICE) for g in grads]
        for order in (2.0, 1.0, math.inf, -math.inf, 0.0, 3.5):
            # -inf has no identity: torch refuses an empty tensor, and so do we.
            keep = [i for i, g in enumerate(grads) if g.numel() or order != -math.inf]
            want = steadystep.get_total_norm([grads[i] for i in keep], order)
            got = steadystep.get_total_norm([on_cuda[i] for i in keep], order)
            check(f"get_total_norm {dtype} p={order}", got, want,
                  torch.float64 if dtype == torch.float64 else torch.float32)


def params_with_grads(dtype, device, seed=0, large=False, grad_scale=1.0):
    values = tensors(dtype, large=large, seed=seed)
    grads = tensors(dtype, large=large, seed=seed + 1, scale=grad_scale)
    params = []
    for v, g in zip(values, grads):
        p = torch.nn.Parameter(v.clone().to(device))
        p.grad = g.clone().to(device)
        params.append(p)
    return params


def clipping():
    for dtype in (torch.float32, torch.bfloat16):
        for max_norm in (1.0, 1e9):  # clips; leaves the grads as they are
            cpu, gpu = params_with_grads(dtype, "cpu", large=True), params_with_grads(dtype, DEVICE, large=True)
            check(f"clip_grad_norm_ {dtype} {max_norm}", steadystep.clip_grad_norm_(gpu, max_norm),
                  steadystep.clip_grad_norm_(cpu, max_norm), torch.float32)
            for p, q in zip(gpu, cpu):
                check(f"clip_grad_norm_ grads {dtype} {max_norm}", p.grad, q.grad, dtype)
        cpu, gpu = params_with_grads(dtype, "cpu"), params_with_grads(dtype, DEVICE)
        steadystep.clip_grad_value_(cpu, 0.1)
        steadystep.clip_grad_value_(gpu, 0.1)
        for p, q in zip(gpu, cpu):
            check(f"clip_grad_value_ {dtype}", p.grad, q.grad, dtype)
        cpu, gpu = params_with_grads(dtype, "cpu"), params_with_grads(dtype, DEVICE)
        steadystep.adaptive_clip_grad_(cpu, 0.01)
        steadystep.adaptive_clip_grad_(gpu, 0.01)
        for p, q in zip(gpu, cpu):
            check(f"adaptive_clip_grad_ {dtype}", p.grad, q.grad, dtype)


def guards():
    return {"zscore": lambda: [steadystep.ZScoreClip(warmup_steps=2)],
            "percentile": lambda: [steadystep.PercentileClip(0.9, 4)],
            "spike-skip": lambda: [steadystep.SpikeSkip(max_norm=100.0, warmup_steps=2)],
            "agc": lambda: [steadystep.AdaptiveGradClip()]}


OPTIMIZERS = {
    "adamw fp32 clip": (torch.float32, lambda p: optim.FusedAdamW(p, lr=1e-2, max_grad_norm=1.0)),
    "adam fp32 amsgrad maximize": (torch.float32, lambda p: optim.FusedAdam(p, lr=1e-2, amsgrad=True, maximize=True,
                                                                           weight_decay=0.1, max_grad_norm=1.0)),
    "adamw fp32 bf16 state": (torch.float32, lambda p: optim.FusedAdamW(p, lr=1e-2, state_dtype=torch.bfloat16)),
    "adamw bf16 plain": (torch.bfloat16, lambda p: optim.FusedAdamW(p, lr=1e-2, max_grad_norm=1.0)),
    "adamw bf16 masters": (torch.bfloat16, lambda p: optim.FusedAdamW(p, lr=1e-2, master_weights=True)),
    "adamw bf16 stochastic": (torch.bfloat16, lambda p: optim.FusedAdamW(p, lr=1e-2, stochastic_rounding=True)),
    "adamw bf16 masters+state": (torch.bfloat16, lambda p: optim.FusedAdamW(p, lr=1e-2, master_weights=True,
                                                                           state_dtype=torch.bfloat16)),
    "adam fp16 masters amsgrad": (torch.float16, lambda p: optim.FusedAdam(p, lr=1e-2, master_weights=True,
                                                                          amsgrad=True)),
    "sgd fp32 momentum": (torch.float32, lambda p: optim.FusedSGD(p, lr=1e-2, momentum=0.9, max_grad_norm=1.0)),
    "sgd fp32 nesterov": (torch.float32, lambda p: optim.FusedSGD(p, lr=1e-2, momentum=0.9, nesterov=True,
                                                                 weight_decay=0.1)),
    "sgd bf16 masters": (torch.bfloat16, lambda p: optim.FusedSGD(p, lr=1e-2, momentum=0.9, master_weights=True)),
    "sgd bf16 stochastic": (torch.bfloat16, lambda p: optim.FusedSGD(p, lr=1e-2, momentum=0.9,
                                                                    stochastic_rounding=True)),
}
for _name, _make in guards().items():
    OPTIMIZERS[f"adamw fp32 guard {_name}"] = (
        torch.float32, lambda p, _make=_make: optim.FusedAdamW(p, lr=1e-2, guard=_make()))


def run_steps(make, dtype, device, steps=3, inf_at=1, scaler=False, large=False):
    params = params_with_grads(dtype, device, large=large)
    torch.manual_seed(0)  # the stochastic-rounding seed is drawn here: the same on both devices
    opt = make(params)
    amp = torch.amp.GradScaler(device, init_scale=256.0, growth_interval=1) if scaler else None
    for step in range(steps):
        grads = tensors(dtype, seed=10 + step, large=large)
        for p, g in zip(params, grads):
            p.grad = (g * (256.0 if scaler else 1.0)).to(device)
        if step == inf_at:
            params[4].grad.view(-1)[0] = math.inf  # a skipped step
        if amp is not None:
            amp.scale(torch.zeros((), device=device))
            amp.step(opt)
            amp.update()
        else:
            opt.step()
    return params, opt


def fused_steps():
    for name, (dtype, make) in OPTIMIZERS.items():
        large = name == "adamw fp32 clip"
        gpu, opt_gpu = run_steps(make, dtype, DEVICE, large=large)
        cpu, opt_cpu = run_steps(make, dtype, "cpu", large=large)
        check(f"{name}: skipped steps", opt_gpu.skipped_steps, opt_cpu.skipped_steps, torch.float32)
        for p, q in zip(gpu, cpu):
            check(f"{name}: params", p.detach(), q.detach(), dtype)
            for key, value in opt_cpu.state[q].items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    check(f"{name}: state {key}", opt_gpu.state[p][key], value, value.dtype)
    for dtype in (torch.float16, torch.float32):
        make = lambda p: optim.FusedAdam(p, lr=1e-2, max_grad_norm=1.0)  # noqa: E731
        gpu, _ = run_steps(make, dtype, DEVICE, scaler=True)
        cpu, _ = run_steps(make, dtype, "cpu", scaler=True)
        for p, q in zip(gpu, cpu):
            check(f"adam {dtype} GradScaler: params", p.detach(), q.detach(), dtype)


def main() -> int:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    for part in (norms, clipping, fused_steps):
        part()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        print(f"{part.__name__}: done")
    for failure in failures:
        print("MISMATCH", failure)
    print(f"{len(failures)} mismatch(es) against the CPU")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
