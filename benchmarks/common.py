"""Shared pieces of the Python benchmarks: parameter sets, timing, bandwidth, peak memory."""

import statistics
import time
from typing import Callable

import torch

def gpt2_shapes(vocab: int, context: int, width: int, blocks: int) -> list[tuple[int, ...]]:
    """A GPT-2's parameter shapes: token and position embeddings, `blocks` blocks of (ln_1,
    attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj), final layer norm."""
    shapes = [(vocab, width), (context, width)]
    for _ in range(blocks):
        shapes += [(width,), (width,), (width, 3 * width), (3 * width,), (width, width), (width,),
                   (width,), (width,), (width, 4 * width), (4 * width,), (4 * width, width), (width,)]
    return shapes + [(width,), (width,)]


GPT2_SMALL_SHAPES = gpt2_shapes(50257, 1024, 768, 12)  # 124M parameters, 148 tensors
GPT2_XL_SHAPES = gpt2_shapes(50257, 1024, 1600, 48)  # 1.56B parameters, 580 tensors


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


def kernels_per_call(fn: Callable[[], object]) -> int:
    """CUDA kernels one call of `fn` launches (torch.profiler; copies and memsets not counted)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset")))


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
