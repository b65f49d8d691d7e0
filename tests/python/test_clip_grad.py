"""steadystep.get_total_norm against torch.nn.utils.get_total_norm itself."""

import math

import pytest
import torch

import steadystep
from conftest import devices

NORMS = [0.5, 1.0, 2.0, 3.0, math.inf]
# Relative tolerance against torch, by dtype. fp32/fp64: both sides accumulate in their
# precision over at most ~1e6 elements in blocks, so rounding stays near 1e-7 (fp32) and 1e-15
# (fp64). fp16/bf16: torch rounds each per-tensor norm to the input dtype before combining,
# we round once at the end: the results differ by a few output ulps (2^-11, 2^-8).
RTOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def torch_rtol(dtype, norm_type):
    """Tolerance against torch's own result. torch takes per-tensor norms, raises them to p
    again and takes the p-th root twice, in fp32: for p outside {1, 2, inf} its error reaches
    1.5e-6 (measured at p=3 against fp64), and x**(1/p) amplifies it by 1/p for p < 1. Ours is
    checked against the exact (fp64) norm at RTOL; against torch the bound widens by that."""
    widen = 1.0 if norm_type in (1.0, 2.0, math.inf) else 4.0 * max(1.0, 1.0 / norm_type)
    return RTOL[dtype] * widen


def random_tensors(n, dtype, device, gen):
    """`n` tensors of odd sizes (empty, 1-element, unaligned, > one chunk) and odd layouts."""
    sizes = [17, 0, 1, 2, 3, 5, 255, 1023, 4097, 70_001]
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)] if i < len(sizes) else int(torch.randint(1, 5000, (1,), generator=gen))
        kind = i % 4
        if kind == 0 or size < 4:
            t = torch.randn(size, generator=gen, dtype=torch.float64)
        elif kind == 1:  # offset view: data pointer not 16-byte aligned
            t = torch.randn(size + 1, generator=gen, dtype=torch.float64)[1:]
        elif kind == 2:  # transposed: dense but not contiguous
            t = torch.randn(size // 2, 2, generator=gen, dtype=torch.float64).t()
        else:  # strided slice: not dense
            t = torch.randn(size, 2, generator=gen, dtype=torch.float64)[:, 0]
        out.append((t * float(torch.rand(1, generator=gen)) * 3).to(device=device, dtype=dtype))
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("count", [1, 7, 300])
def test_get_total_norm_matches_torch(device, dtype, norm_type, count):
    gen = torch.Generator().manual_seed(count * 1000 + int(norm_type * 10 if math.isfinite(norm_type) else 99))
    tensors = random_tensors(count, dtype, device, gen)
    ours = steadystep.get_total_norm(tensors, norm_type)
    # torch's foreach inf-norm refuses empty tensors (see test_inf_norm_skips_empty_tensors).
    theirs = torch.nn.utils.get_total_norm([t for t in tensors if t.numel() or norm_type != math.inf], norm_type)
    assert ours.shape == () and ours.dtype == theirs.dtype and ours.device == theirs.device
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=torch_rtol(dtype, norm_type), atol=0)
    if dtype in (torch.float32, torch.float64):
        # Against the exact answer (fp64 over the same values) the 1e-6 / 1e-12 bound holds.
        exact = torch.nn.utils.get_total_norm([t.double() for t in tensors if t.numel()], norm_type)
        torch.testing.assert_close(ours.double(), exact.to(dtype).double(), rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("device", devices())
def test_get_total_norm_many_tensors(device):
    gen = torch.Generator().manual_seed(7)
    tensors = random_tensors(3000, torch.float32, device, gen)
    torch.testing.assert_close(
        steadystep.get_total_norm(tensors), torch.nn.utils.get_total_norm(tensors), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("device", devices())
def test_get_total_norm_mixed_dtypes(device):
    gen = torch.Generator().manual_seed(3)
    tensors = [t.to(dtype) for t, dtype in zip(random_tensors(8, torch.float32, device, gen),
                                              [torch.float16, torch.bfloat16, torch.float32] * 3)]
    ours, theirs = steadystep.get_total_norm(tensors, 2.0), torch.nn.utils.get_total_norm(tensors, 2.0)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=4e-3, atol=0)


def test_inf_norm_skips_empty_tensors():
    # torch.nn.utils.get_total_norm raises for an empty tensor with norm_type=inf ("no identity");
    # a parameter with an empty gradient is legitimate, so ours leaves it out, as every finite p
    # does (max |x| over nothing contributes nothing; |x| >= 0, so 0 is the identity).
    tensors = [torch.randn(10), torch.empty(0)]
    with pytest.raises(RuntimeError):
        torch.nn.utils.get_total_norm(tensors, math.inf)
    assert steadystep.get_total_norm(tensors, math.inf).item() == tensors[0].abs().max().item()
    assert steadystep.get_total_norm([torch.empty(0)], math.inf).item() == 0.0


def test_get_total_norm_empty_list():
    ours = steadystep.get_total_norm([])
    theirs = torch.nn.utils.get_total_norm([])
    assert ours.item() == theirs.item() == 0.0 and ours.dtype == theirs.dtype


def test_get_total_norm_single_tensor_and_generator():
    t = torch.randn(100)
    assert torch.equal(steadystep.get_total_norm(t), steadystep.get_total_norm(x for x in [t]))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_get_total_norm_nonfinite(device, norm_type):
    for bad in [math.nan, math.inf]:
        tensors = [torch.randn(1000, device=device), torch.randn(10, device=device)]
        tensors[0][123] = bad
        ours = steadystep.get_total_norm(tensors, norm_type)
        theirs = torch.nn.utils.get_total_norm(tensors, norm_type)
        assert (ours.isnan().item(), ours.isinf().item()) == (theirs.isnan().item(), theirs.isinf().item())
        with pytest.raises(RuntimeError, match="non-finite"):
            steadystep.get_total_norm(tensors, norm_type, error_if_nonfinite=True)


def test_get_total_norm_other_orders_fall_back_to_torch():
    tensors = [torch.randn(50), torch.randn(7)]
    for p in [0.0, -1.0, -math.inf]:
        torch.testing.assert_close(steadystep.get_total_norm(tensors, p), torch.nn.utils.get_total_norm(tensors, p))


def test_get_total_norm_rejects_sparse():
    with pytest.raises(RuntimeError, match="strided"):
        steadystep.get_total_norm([torch.eye(3).to_sparse()])


# ---- clip_grad_norm_, clip_grads_with_norm_, clip_grad_value_ ------------------------------


def params_with_grads(grads):
    """Two independent parameter lists holding equal copies of `grads`."""
    ours, theirs = [], []
    for g in grads:
        for out in (ours, theirs):
            p = torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype, device=g.device))
            p.grad = g.clone()
            out.append(p)
    return ours, theirs


def grads_for(count, dtype, device, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [t * scale for t in random_tensors(count, dtype, device, gen)]


def assert_grads_match(ours, theirs, dtype, norm_type=2.0):
    # After clipping, each gradient equals torch's up to one rounding of the result: the
    # coefficients come from norms that agree to torch_rtol, and each element is multiplied once.
    for p, q in zip(ours, theirs):
        rtol = torch_rtol(dtype, norm_type) * 2 + torch.finfo(dtype).eps
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("clipping", [True, False], ids=["clipped", "unclipped"])
def test_clip_grad_norm_matches_torch(device, dtype, norm_type, clipping):
    grads = grads_for(60, dtype, device, seed=17)
    ours, theirs = params_with_grads(grads)
    norm = torch.nn.utils.get_total_norm([g for g in grads if g.numel() or norm_type != math.inf], norm_type)
    max_norm = float(norm) * (0.3 if clipping else 3.0)
    got = steadystep.clip_grad_norm_(ours, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_([p for p in theirs if p.grad.numel() or norm_type != math.inf],
                                          max_norm, norm_type)
    torch.testing.assert_close(got.double(), want.double(), rtol=torch_rtol(dtype, norm_type), atol=0)
    if dtype in (torch.float32, torch.float64):
        exact = torch.nn.utils.get_total_norm([g.double() for g in grads if g.numel()], norm_type)
        torch.testing.assert_close(got.double(), exact.to(dtype).double(), rtol=RTOL[dtype], atol=0)
    if not clipping and torch.isfinite(norm):  # (fp16 L1 norms of these grads overflow to inf)
        for p, g in zip(ours, grads):
            assert torch.equal(p.grad, g)  # untouched, bit for bit
    assert_grads_match(ours, theirs, dtype, norm_type)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("count", [1, 300, 3000])
def test_clip_grad_norm_many_tensors(device, count):
    ours, theirs = params_with_grads(grads_for(count, torch.float32, device, seed=count, scale=10.0))
    got = steadystep.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert_grads_match(ours, theirs, torch.float32)


@pytest.mark.parametrize("device", devices())
def test_clip_grads_with_norm_is_bit_identical_given_the_norm(device):
    for dtype in [torch.float32, torch.float64, torch.float16, torch.bfloat16]:
        grads = grads_for(40, dtype, device, seed=3, scale=5.0)
        ours, theirs = params_with_grads(grads)
        total = torch.nn.utils.get_total_norm(grads)
        steadystep.clip_grads_with_norm_(ours, 1.0, total)
        torch.nn.utils.clip_grads_with_norm_(theirs, 1.0, total)
        for p, q in zip(ours, theirs):
            assert torch.equal(p.grad, q.grad), dtype


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_clip_grad_norm_nonfinite_scales_like_torch(device, bad):
    grads = grads_for(7, torch.float32, device, seed=5)
    grads[0][3] = bad
    ours, theirs = params_with_grads(grads)
    got = steadystep.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert (got.isnan().item(), got.isinf().item()) == (want.isnan().item(), want.isinf().item())
    for p, q in zip(ours, theirs):  # nan norm: all nan; inf norm: 0, and inf * 0 = nan
        torch.testing.assert_close(p.grad, q.grad, equal_nan=True, rtol=0, atol=0)
    ours2, _ = params_with_grads(grads)
    before = [p.grad.clone() for p in ours2]
    with pytest.raises(RuntimeError, match="non-finite"):
        steadystep.clip_grad_norm_(ours2, 1.0, error_if_nonfinite=True)
    for p, b in zip(ours2, before):
        assert torch.equal(p.grad.nan_to_num(), b.nan_to_num())  # the error comes first


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_clip_grad_value_matches_torch(device, dtype):
    grads = grads_for(50, dtype, device, seed=11, scale=3.0)
    grads[2][0], grads[9][1] = math.nan, math.inf
    ours, theirs = params_with_grads(grads)
    steadystep.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        assert torch.equal(p.grad.nan_to_num(), q.grad.nan_to_num())
        assert torch.equal(p.grad.isnan(), q.grad.isnan())


def test_mixed_dtypes_and_parameters_without_grad():
    grads = [torch.randn(100, dtype=d) * 4 for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)]
    ours, theirs = params_with_grads(grads)
    ours.append(torch.nn.Parameter(torch.ones(3)))  # no grad: skipped
    theirs.append(torch.nn.Parameter(torch.ones(3)))
    got = steadystep.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert got.dtype == want.dtype == torch.float64
    # torch rounds the per-tensor norms of the bf16 grad to bf16 (2^-8) before combining them;
    # we accumulate in fp32 and round once: against torch, bf16's rounding; against fp64, tight.
    torch.testing.assert_close(got, want, rtol=RTOL[torch.bfloat16], atol=0)
    exact = torch.cat([g.double() for g in grads]).norm()
    torch.testing.assert_close(got, exact, rtol=1e-6, atol=0)
    for p, q in zip(ours[:4], theirs[:4]):  # torch's coefficient carries that bf16 rounding too
        torch.testing.assert_close(p.grad, q.grad, rtol=RTOL[torch.bfloat16], atol=0)
    assert ours[4].grad is None


def test_empty_parameters():
    assert steadystep.clip_grad_norm_([], 1.0).item() == 0.0
    p = torch.nn.Parameter(torch.ones(2))
    assert steadystep.clip_grad_norm_([p], 1.0).item() == 0.0  # no grads at all
    with pytest.warns(UserWarning, match="empty generator"):
        steadystep.clip_grad_norm_((q for q in []), 1.0)
    steadystep.clip_grad_value_([p], 1.0)


def test_single_tensor_and_generator_inputs():
    p = torch.nn.Parameter(torch.zeros(10))
    p.grad = torch.full((10,), 3.0)
    norm = steadystep.clip_grad_norm_(p, 1.0)
    assert norm.item() == pytest.approx(3.0 * math.sqrt(10))
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    steadystep.clip_grad_value_((q for q in [p]), 0.1)
    assert p.grad.abs().max().item() <= torch.tensor(0.1).item()  # 0.1 in fp32


def test_bad_arguments_change_nothing():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.randn(4)
    before = p.grad.clone()
    with pytest.raises(ValueError, match="max_norm"):
        steadystep.clip_grad_norm_([p], -1.0)
    with pytest.raises(ValueError, match="clip_value"):
        steadystep.clip_grad_value_([p], -0.5)
    q = torch.nn.Parameter(torch.zeros(3, 3))
    q.grad = torch.eye(3).to_sparse()
    with pytest.raises(RuntimeError, match="strided"):
        steadystep.clip_grad_norm_([p, q], 1.0)
    assert torch.equal(p.grad, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_clip_does_not_synchronize():
    ps = [torch.nn.Parameter(torch.zeros(n, device="cuda")) for n in (1000, 70001, 3)]
    for p in ps:
        p.grad = torch.randn_like(p) * 10
    steadystep.clip_grad_norm_(ps, 1.0)  # warm up: load kernels, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        norm = steadystep.clip_grad_norm_(ps, 1.0)
        steadystep.clip_grad_norm_(ps, 1e9)  # the unclipped path too
        steadystep.get_total_norm([p.grad for p in ps], 3.0)
        steadystep.clip_grad_value_(ps, 0.1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert norm.device.type == "cuda"


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="no CUDA device on this machine")
def test_grads_on_cpu_and_cuda_are_grouped_like_torch():
    grads = [torch.randn(1000) * 3, torch.randn(500, device="cuda") * 3]
    ours, theirs = params_with_grads(grads)
    got = steadystep.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert got.device == want.device == torch.device("cpu")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


# ---- orders, complex grads, autograd, layouts, meta (issue 11, items 10-13, 23) ------------

ORDERS = [0.0, 0.5, 1.0, 2.0, 3.5, math.inf, -math.inf, -1.0, -2.0, math.nan]


@pytest.mark.parametrize("norm_type", ORDERS)
@pytest.mark.parametrize("count", [1, 2, 5])
def test_every_order_matches_torch_for_one_and_many_tensors(norm_type, count):
    # Zeros included: p = 0 counts the tensors with a nonzero element (torch takes the norm of the
    # per-tensor norms with the same order), also for one tensor, where it once counted elements.
    gen = torch.Generator().manual_seed(count)
    tensors = [torch.randn(7, generator=gen) * (i + 1) for i in range(count)]
    tensors[0][2] = 0.0
    if count > 1:
        tensors[1].zero_()
    ours = steadystep.get_total_norm(tensors, norm_type)
    theirs = torch.nn.utils.get_total_norm(tensors, norm_type)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == ()
    torch.testing.assert_close(ours, theirs, rtol=4e-6, atol=0, equal_nan=True)
    if norm_type == 0.0:
        assert ours.item() == sum(1 for t in tensors if t.any())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_grads_norm_is_real_and_clipped_like_torch(dtype):
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(30, generator=gen, dtype=dtype) * 3, torch.randn(5, 2, generator=gen) * 2]
    for norm_type in [1.0, 2.0, math.inf, 3.0]:
        ours_norm = steadystep.get_total_norm(grads, norm_type)
        theirs_norm = torch.nn.utils.get_total_norm(grads, norm_type)
        assert ours_norm.dtype == theirs_norm.dtype == grads[0].real.dtype
        torch.testing.assert_close(ours_norm, theirs_norm, rtol=4e-6, atol=0)
        ours, theirs = params_with_grads(grads)
        got = steadystep.clip_grad_norm_(ours, 1.0, norm_type)
        want = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type)
        torch.testing.assert_close(got, want, rtol=4e-6, atol=0)
        for p, q in zip(ours, theirs):
            assert p.grad.dtype == q.grad.dtype
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=0)
    single = steadystep.get_total_norm(grads[0])
    assert single.dtype == grads[0].real.dtype


def test_norm_has_no_autograd_history():
    x = torch.randn(10, requires_grad=True)
    y = torch.randn(3, 3, requires_grad=True)
    for norm_type in [0.0, 2.0, 3.5, math.inf]:
        ours = steadystep.get_total_norm([x * 2, y], norm_type)
        theirs = torch.nn.utils.get_total_norm([x * 2, y], norm_type)
        assert ours.grad_fn is None and theirs.grad_fn is None and not ours.requires_grad
    # Grads that are themselves part of a graph (create_graph=True): clipped in place, as torch
    # does under no_grad, and the returned norm has no history.
    grads = []
    for _ in range(2):
        w = torch.randn(4, requires_grad=True)
        (g,) = torch.autograd.grad((w**3).sum(), w, create_graph=True)
        grads.append(g)
    ours, theirs = params_with_grads(grads)
    for p, g in zip(ours, grads):
        p.grad = g * 1.0  # still requires grad
    got = steadystep.clip_grad_norm_(ours, 0.1)
    want = torch.nn.utils.clip_grad_norm_(theirs, 0.1)
    assert got.grad_fn is None
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad.detach(), q.grad.detach(), rtol=1e-6, atol=0)


def test_clip_grad_value_when_a_device_holds_only_strided_views():
    # Every grad a non-dense view: no grad for the multi-tensor kernel (the empty call used to fail).
    grads = [torch.randn(6, 4) * 5, torch.randn(8, 3) * 5]
    ours, theirs = params_with_grads([g[:, ::2] for g in grads])
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.clone()[:, ::2], g.clone()[:, ::2]
    steadystep.clip_grad_value_(ours, 1.0)
    torch.nn.utils.clip_grad_value_(theirs, 1.0)
    for p, q in zip(ours, theirs):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("bad", ["sparse", "complex"])
def test_clip_grad_value_raises_like_torch_before_changing_anything(bad):
    dense = torch.nn.Parameter(torch.zeros(5))
    dense.grad = torch.randn(5) * 10
    other = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.complex64 if bad == "complex" else torch.float32))
    other.grad = torch.randn(3, 3, dtype=torch.complex64) * 10 if bad == "complex" else (torch.eye(3) * 10).to_sparse()
    strided_view = torch.nn.Parameter(torch.zeros(4))
    strided_view.grad = (torch.randn(4, 2) * 10)[:, 0]
    params = [dense, strided_view, other]
    before = [p.grad.clone() for p in params]
    with pytest.raises(NotImplementedError):
        torch.nn.utils.clip_grad_value_([other], 1.0)  # what torch raises (nothing else changes)
    for p, b in zip(params, before):
        assert torch.equal(p.grad.to_dense(), b.to_dense())
    with pytest.raises(NotImplementedError):
        steadystep.clip_grad_value_(params, 1.0)
    for p, b in zip(params, before):
        assert torch.equal(p.grad.to_dense(), b.to_dense())  # nothing clamped before the error


def test_sparse_grads_raise_not_implemented_like_torch():
    p = torch.nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.eye(3).to_sparse()
    for fn in (torch.nn.utils.clip_grad_norm_, steadystep.clip_grad_norm_):
        with pytest.raises(NotImplementedError):
            fn([p], 1.0)


@pytest.mark.parametrize("norm_type", [0.0, 1.0, 2.0, 3.5, math.inf, -math.inf])
def test_meta_tensors_give_meta_results(norm_type):
    tensors = [torch.empty(3, 4, device="meta"), torch.empty(5, device="meta", dtype=torch.float16),
               torch.empty(7, 2, device="meta").t()]
    ours = steadystep.get_total_norm(tensors, norm_type)
    theirs = torch.nn.utils.get_total_norm(tensors, norm_type)
    assert ours.is_meta and ours.shape == theirs.shape == () and ours.dtype == theirs.dtype
    params = []
    for t in tensors:
        p = torch.nn.Parameter(torch.empty_like(t))
        p.grad = torch.empty_like(t)
        params.append(p)
    got = steadystep.clip_grad_norm_(params, 1.0, norm_type)
    assert got.is_meta and got.dtype == torch.float32
    steadystep.clip_grad_value_(params, 1.0)
    steadystep.clip_grads_with_norm_(params, 1.0, got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
def test_norm_accuracy_as_the_readme_states(dtype, norm_type):
    # README, "Parity": our norm is accumulated in fp32 per chunk, combined in fp64 and rounded
    # once to the result dtype. fp32 lists: within 5e-7 of the exact norm (measured <= 2.6e-7 over
    # these draws) and within 2e-6 of torch's (whose fp32 L1 over many tensors is up to 1.3e-6
    # off). fp16/bf16 lists: the exact norm rounded once (unit roundoff u = 2^-11 / 2^-8, plus
    # fp32 accumulation), where torch rounds each per-tensor norm to fp16/bf16 before combining
    # (measured up to 1.3 u off): the two differ by up to 2 u.
    u = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
    ours_bound, torch_bound = (5e-7, 2e-6) if dtype == torch.float32 else (u + 1e-6, 2 * u + 1e-6)
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        count = int(torch.randint(1, 50, (1,), generator=gen))
        tensors = [
            (torch.randn(int(torch.randint(1, 3000, (1,), generator=gen)), generator=gen) * 0.2).to(dtype)
            for _ in range(count)
        ]
        exact = torch.nn.utils.get_total_norm([t.double() for t in tensors], norm_type)
        ours = steadystep.get_total_norm(tensors, norm_type).double()
        theirs = torch.nn.utils.get_total_norm(tensors, norm_type).double()
        assert ((ours - exact).abs() / exact).item() <= ours_bound
        assert ((ours - theirs).abs() / exact).item() <= torch_bound
        if dtype != torch.float32:
            assert ((theirs - exact).abs() / exact).item() <= 2 * u


@pytest.mark.parametrize("norm_type", [2.0, 1, 0.5, math.inf])
def test_error_if_nonfinite_message_is_torchs(norm_type):
    tensors = [torch.tensor([1.0, math.nan])]
    messages = []
    for fn in (torch.nn.utils.get_total_norm, steadystep.get_total_norm):
        with pytest.raises(RuntimeError) as info:
            fn(tensors, norm_type, error_if_nonfinite=True)
        messages.append(str(info.value).splitlines()[0])
    assert messages[0] == messages[1]  # e.g. "The total norm of order 2.0 for gradients ..."
