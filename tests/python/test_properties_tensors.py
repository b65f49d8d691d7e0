"""Property-based tests (hypothesis): drawn tensor lists through get_total_norm /
clip_grad_norm_ / clip_grad_value_, and drawn fused optimizer steps, against torch itself.

Bounded and reproducible: derandomize=True (the same examples on every run and machine),
a fixed number of small examples per property (the file runs in well under a minute on 2 cores).
"""

import math

import pytest
import torch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steadystep
from steadystep import optim as so

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KERNEL_ORDERS = [0.5, 1.0, 2.0, 3.5, math.inf]
OTHER_ORDERS = [0.0, -math.inf, -1.0]

# Unit roundoff of each result dtype.
UNIT = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def ours_vs_exact_rtol(tensors, dtype, norm_type):
    """How far our norm may be from the exact one (fp64 over the same values, rounded to the
    result dtype `dtype`). We accumulate fp64 tensors in fp64 and all others in fp32 (~1e-7 per
    block, partials combined in fp64); orders outside {1, 2, inf} go through pow, whose few-ulp
    error x**(1/p) amplifies by 1/p for p < 1. Then one rounding to the result dtype."""
    all_fp64 = all(t.dtype == torch.float64 for t in tensors if t.numel())
    acc = 1e-12 if all_fp64 else 1e-6
    if norm_type not in (1.0, 2.0, math.inf):
        acc *= 4.0 * max(1.0, 1.0 / norm_type)
    return acc + UNIT[dtype]


def torch_vs_exact_rtol(tensors, dtype, norm_type):
    """torch rounds every per-tensor norm to that tensor's dtype, then combines them in the
    result dtype: on top of the accumulation error, a rounding of the least precise input dtype
    and one of the result dtype (each to half an ulp; doubled for the p-th powers and roots)."""
    coarsest = max((UNIT[t.dtype] for t in tensors if t.numel()), default=0.0)
    return ours_vs_exact_rtol(tensors, dtype, norm_type) + 2 * coarsest + 2 * UNIT[dtype]


@st.composite
def tensor_lists(draw, max_count=6, dtypes=DTYPES, nonfinite=True):
    """A list of 1..max_count tensors: shapes with 0- and 1-sized dims, any of the four float
    dtypes, contiguous / transposed / strided-slice / offset views, and maybe one nan or inf."""
    count = draw(st.integers(1, max_count))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    out = []
    for _ in range(count):
        shape = draw(st.lists(st.sampled_from([0, 1, 1, 2, 3, 5, 17]), min_size=1, max_size=3))
        dtype = draw(st.sampled_from(dtypes))
        layout = draw(st.sampled_from(["contiguous", "transposed", "strided", "offset"]))
        if layout == "transposed" and len(shape) >= 2:
            swapped = [shape[-1]] + shape[1:-1] + [shape[0]]
            t = torch.randn(swapped, generator=gen, dtype=torch.float64).transpose(0, -1)
        elif layout == "strided":
            t = torch.randn(shape[:-1] + [shape[-1] * 2], generator=gen, dtype=torch.float64)[..., ::2]
        elif layout == "offset":
            n = math.prod(shape)
            t = torch.randn(n + 1, generator=gen, dtype=torch.float64)[1:].view(shape)
        else:
            t = torch.randn(shape, generator=gen, dtype=torch.float64)
        out.append((t * scale).to(dtype))
    if nonfinite and draw(st.booleans()):
        sized = [t for t in out if t.numel()]
        if sized:
            target = sized[draw(st.integers(0, len(sized) - 1))]
            bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            flat = torch.tensor(draw(st.integers(0, target.numel() - 1)))
            target[torch.unravel_index(flat, target.shape)] = bad
    return out


def for_order(tensors, norm_type):
    # torch's inf norm refuses empty tensors (no identity for max); ours leaves them out (see
    # test_clip_grad.test_inf_norm_skips_empty_tensors). Compare on the non-empty ones.
    return [t for t in tensors if t.numel() or norm_type != math.inf]


def exact_norm(tensors, norm_type):
    flat = [t.double().reshape(-1) for t in tensors if t.numel()]
    if not flat:
        return torch.tensor(0.0, dtype=torch.float64)
    return torch.nn.utils.get_total_norm(flat, norm_type)


def check_norm(ours, theirs, tensors, norm_type):
    assert ours.shape == theirs.shape == ()
    assert ours.dtype == theirs.dtype and ours.device == theirs.device
    exact = exact_norm(tensors, norm_type)
    dtype = ours.dtype
    if not torch.isfinite(exact):
        # nan in, nan out; inf in (no nan), inf out: both sides.
        assert (ours.isnan().item(), ours.isinf().item()) == (theirs.isnan().item(), theirs.isinf().item())
        assert (ours.isnan().item(), ours.isinf().item()) == (exact.isnan().item(), exact.isinf().item())
        return
    if norm_type <= 0:
        # Orders the kernels leave to vector_norm: both sides take the same path (counts for
        # 0, a min for -inf, exact up to one rounding; -1 through pow).
        torch.testing.assert_close(ours, theirs, rtol=4e-6, atol=0)
        return
    top = torch.finfo(dtype).max
    if exact.item() > top * (1 - 2 * UNIT[dtype]):
        assert ours.isinf() or ours.item() >= top * (1 - 4 * UNIT[dtype])  # overflow of the result dtype
        return
    rtol = ours_vs_exact_rtol(tensors, dtype, norm_type)
    torch.testing.assert_close(ours.double(), exact.to(dtype).double(), rtol=rtol, atol=0)
    if torch.isfinite(theirs):
        tol = rtol + torch_vs_exact_rtol(tensors, dtype, norm_type)
        torch.testing.assert_close(ours.double(), theirs.double(), rtol=tol, atol=0)


@settings(max_examples=80, **SETTINGS)
@given(tensors=tensor_lists(), norm_type=st.sampled_from(KERNEL_ORDERS + OTHER_ORDERS))
def test_get_total_norm_matches_torch(tensors, norm_type):
    tensors = for_order(tensors, norm_type)
    if norm_type < 0 and any(t.numel() == 0 for t in tensors):
        # Negative orders have no identity either: both refuse an empty tensor, as torch does.
        with pytest.raises(RuntimeError, match="empty tensor"):
            torch.nn.utils.get_total_norm(tensors, norm_type)
        with pytest.raises(RuntimeError, match="empty tensor"):
            steadystep.get_total_norm(tensors, norm_type)
        return
    theirs = torch.nn.utils.get_total_norm(tensors, norm_type)
    ours = steadystep.get_total_norm(tensors, norm_type)
    check_norm(ours, theirs, tensors, norm_type)


def same_layout_copy(g):
    """A copy of `g` with its layout: transposed stays transposed, a strided slice stays a
    (non-dense) slice of a larger buffer."""
    if g.is_contiguous() or (g.dim() >= 2 and g.transpose(0, -1).is_contiguous()):
        return g.clone()  # preserve_format keeps the strides
    view = torch.zeros(g.shape[:-1] + (g.shape[-1] * 2,), dtype=g.dtype)[..., ::2]
    view.copy_(g)
    return view


def params_for(grads):
    ours, theirs = [], []
    for g in grads:
        for out in (ours, theirs):
            p = torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype))
            p.grad = same_layout_copy(g)
            out.append(p)
    return ours, theirs


@settings(max_examples=60, **SETTINGS)
@given(
    grads=tensor_lists(),
    norm_type=st.sampled_from([1.0, 2.0, math.inf, 3.5]),
    ratio=st.sampled_from([0.05, 0.7, 1.5, 20.0]),
)
def test_clip_grad_norm_matches_torch(grads, norm_type, ratio):
    grads = for_order(grads, norm_type)
    ours, theirs = params_for(grads)
    exact = exact_norm(grads, norm_type)
    max_norm = float(exact) * ratio if torch.isfinite(exact) and exact > 0 else 1.0
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    got = steadystep.clip_grad_norm_(ours, max_norm, norm_type)
    check_norm(got, want, grads, norm_type)
    if not torch.isfinite(want) and torch.isfinite(exact):
        return  # torch's result overflowed where the exact norm did not: its grads are not a reference
    # Given norms within `tol`, the two coefficients max_norm / (norm + 1e-6) (rounded to the
    # norm's dtype) differ by tol plus one rounding of that dtype, and each grad by one more
    # rounding of its own dtype.
    tol = 2 * torch_vs_exact_rtol(grads, got.dtype, norm_type) + 2 * UNIT[got.dtype]
    for p, q in zip(ours, theirs):
        assert p.grad.shape == q.grad.shape
        torch.testing.assert_close(
            p.grad.double(), q.grad.double(), rtol=tol + UNIT[p.grad.dtype], atol=1e-30, equal_nan=True
        )


@settings(max_examples=40, **SETTINGS)
@given(grads=tensor_lists(), clip=st.sampled_from([0.0, 1e-3, 0.5, 2.0]))
def test_clip_grad_value_matches_torch(grads, clip):
    ours, theirs = params_for(grads)
    steadystep.clip_grad_value_(ours, clip)
    torch.nn.utils.clip_grad_value_(theirs, clip)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, equal_nan=True)  # bit for bit


# ---- fused steps ------------------------------------------------------------------------


@st.composite
def fused_cases(draw):
    kind = draw(st.sampled_from(["adam", "adamw", "sgd"]))
    shapes = draw(
        st.lists(st.lists(st.sampled_from([0, 1, 2, 3, 7, 33]), min_size=1, max_size=3), min_size=1, max_size=4)
    )
    if kind == "sgd":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        hyper = dict(
            lr=draw(st.sampled_from([1e-3, 1e-2, 0.1])),
            momentum=momentum,
            dampening=draw(st.sampled_from([0.0, 0.1])) if momentum else 0.0,
            nesterov=draw(st.booleans()) if momentum else False,
            weight_decay=draw(st.sampled_from([0.0, 0.01])),
            maximize=draw(st.booleans()),
        )
        if hyper["nesterov"]:
            hyper["dampening"] = 0.0
    else:
        hyper = dict(
            lr=draw(st.sampled_from([1e-3, 1e-2])),
            betas=draw(st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9)])),
            eps=draw(st.sampled_from([1e-8, 1e-6])),
            weight_decay=draw(st.sampled_from([0.0, 0.01, 0.1])),
            amsgrad=draw(st.booleans()),
            maximize=draw(st.booleans()),
        )
    clip = dict(
        max_grad_norm=draw(st.sampled_from([None, 0.1, 1.0, 100.0])),
        norm_type=draw(st.sampled_from([1.0, 2.0, math.inf])),
    )
    steps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    bad_step = draw(st.sampled_from([None, 0, 1, 2]))  # a step whose grads hold a nan/inf
    bad = draw(st.sampled_from([math.nan, math.inf]))
    # Layouts torch accepts for grads: strides unlike the param's (transposed) and non-dense
    # views (a strided slice).
    layouts = draw(st.lists(st.sampled_from(["contiguous", "transposed", "strided"]), min_size=4, max_size=4))
    return kind, shapes, hyper, clip, steps, seed, bad_step, bad, layouts


def with_layout(g, layout):
    if layout == "transposed" and g.dim() >= 2:
        return g.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided":
        view = torch.zeros(g.shape[:-1] + (g.shape[-1] * 2,), dtype=g.dtype)[..., ::2]
        return view.copy_(g)
    return g.clone()


def make_pair(kind, params_ours, params_theirs, hyper, clip):
    if kind == "sgd":
        return so.FusedSGD(params_ours, **hyper, **clip), torch.optim.SGD(params_theirs, **hyper)
    if kind == "adamw":
        return so.FusedAdamW(params_ours, **hyper, **clip), torch.optim.AdamW(params_theirs, **hyper)
    return so.FusedAdam(params_ours, **hyper, **clip), torch.optim.Adam(params_theirs, **hyper)


def assert_close_scaled(a, b, rtol):
    # Relative to the tensor's scale: each side rounds (FMA, fusion) by ~eps * |value|.
    scale = b.abs().max().item() if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(scale, 1e-30))


@settings(max_examples=50, **SETTINGS)
@given(case=fused_cases())
def test_fused_step_matches_clip_then_torch_optimizer(case):
    """Fused step with clipping and the non-finite guard equals torch's recipe: clip_grad_norm_,
    then the optimizer's step, except that a step whose gradient norm is not finite is skipped
    (skip_nonfinite=True, the default): parameters, state and step counts unchanged."""
    kind, shapes, hyper, clip, steps, seed, bad_step, bad, layouts = case
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen) for s in shapes]
    ours_p = [torch.nn.Parameter(t.clone()) for t in init]
    theirs_p = [torch.nn.Parameter(t.clone()) for t in init]
    ours, theirs = make_pair(kind, ours_p, theirs_p, hyper, clip)
    taken = 0
    for step in range(steps):
        grads = [torch.randn(s, generator=gen) * 3 for s in shapes]
        sized = [g for g in grads if g.numel()]
        if step == bad_step and sized:
            sized[-1].view(-1)[0] = bad
        for p, q, g, layout in zip(ours_p, theirs_p, grads, layouts):
            p.grad, q.grad = with_layout(g, layout), g.clone()
        ours.step()
        # Empty grads contribute nothing (torch's inf norm refuses them: see for_order).
        sized_p = [q for q in theirs_p if q.numel()]
        if clip["max_grad_norm"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(sized_p, clip["max_grad_norm"], clip["norm_type"])
        else:
            norm = torch.nn.utils.get_total_norm([q.grad for q in sized_p], clip["norm_type"])
        if torch.isfinite(norm):
            theirs.step()
            taken += 1
        torch.testing.assert_close(ours.last_grad_norm, norm, rtol=1e-5, atol=0, equal_nan=True)
    assert int(ours.skipped_steps) == steps - taken
    for p, q in zip(ours_p, theirs_p):
        assert_close_scaled(p.detach(), q.detach(), 1e-5)
        if taken:
            for key, value in theirs.state[q].items():
                if isinstance(value, torch.Tensor):
                    assert_close_scaled(ours.state[p][key].float(), value.float(), 1e-5)
