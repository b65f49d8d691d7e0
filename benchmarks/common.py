"""Shared pieces of the Python benchmarks: parameter sets, timing, bandwidth, peak memory."""

import statistics
import time
from typing import Callable

import torch

# GPT-2 small (124M parameters, 148 tensors): token and position embeddings, 12 blocks of
# (ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj), final layer norm.
GPT2_SMALL_SHAPES = [(50257, 768), (1024, 768)]
for _ in range(12):
    GPT2_SMALL_SHAPES += [(768,), (768,), (768, 2304), (2304,), (768, 768), (768,),
                          (768,), (768,), (768, 3072), (3072,), (3072, 768), (768,)]
GPT2_SMALL_SHAPES += [(768,), (768,)]


def small_shapes(count: int = 2000, seed: int = 0) -> list[tuple[int]]:
    """`count` tensors of 1k to 4k elements."""
    gen = torch.Generator().manual_seed(seed)
    return [(int(n),) for n in torch.randint(1024, 4097, (count,), generator=gen)]


def make_params(shapes, device: str, dtype=torch.float32, grad_scale: float = 1.0) -> list[torch.nn.Parameter]:
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, device=device, dtype=dtype) * 0.02)
        p.grad = torch.randn(shape, device=device, dtype=dtype) * grad_scale
        params.append(p)
    return params


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: str, repeats: int = 7, min_time: float = 0.2) -> float:
    """Median seconds per call over `repeats` batches, each long enough to time well."""
    fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - start, 1e-6)
    inner = max(1, int(min_time / repeats / once))
    samples = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def copy_bandwidth(device: str, elements: int = 64 * 2**20) -> float:
    """GB/s of a plain device copy (read + write) of `elements` fp32 values: the roofline."""
    x = torch.randn(elements, device=device)
    y = torch.empty_like(x)
    t = median_time(lambda: y.copy_(x), device)
    return 2 * 4 * elements / t / 1e9


def peak_memory(fn: Callable[[], object], device: str) -> int:
    """Bytes allocated at the peak of one call beyond what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.cpu_memory_usage else 0
        peak = max(peak, current)
    return peak


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
