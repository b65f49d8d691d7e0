"""steadystep.adaptive_clip_grad_ (AGC) against timm.utils.adaptive_clip_grad itself (a test-only
dependency, requirements-dev.txt), on fresh random inputs.

Tolerances: both compute the same formula with the same ops rounded in the parameter's dtype;
they differ only in the order in which a unit's norm is summed (timm: torch's vector_norm;
steadystep: 16 lanes in fp32, fp64 for fp64). Measured over units of up to 4,096 elements,
torch's own fp32 L1 norm is 2.7e-6 off the exact value, and the clipped grads of the two differ
by at most 4.9e-6 relative (L2: 4.9e-7): fp32 within 1e-5, fp64 within 1e-12 (measured 9e-15).
For bf16 / fp16 the norms are rounded to the dtype, as timm's: bf16 came out bitwise equal
everywhere; an fp16 norm whose fp32 value sits on a rounding boundary may round to the
neighbour, so the ratio moves by one fp16 ulp and a clipped element by at most two (measured),
which is 2^-9 relative, or 2^-23 absolute among subnormals. Inf-norms are exact: bitwise equal.
A unit within rounding of its threshold may be clipped by one and kept by the other; then the
clipped value is g * (max_norm / |g|) with a ratio within the same ulps of 1, inside the same
tolerances.
"""

import copy
import math

import pytest
import torch
from conftest import devices

import steadystep

timm_agc = pytest.importorskip("timm.utils.agc")

TOL = {  # (rtol, atol)
    torch.float64: (1e-12, 0.0),
    torch.float32: (1e-5, 0.0),
    torch.bfloat16: (2.0**-7, 2.0**-132),
    torch.float16: (2.0**-9, 2.0**-23),
}
SHAPES = [(), (1,), (17,), (300,), (8, 5), (64, 200), (16, 3, 3, 3), (32, 16, 5, 5), (4, 1000, 1)]


def assert_agc_close(ours, ref, dtype):
    rtol, atol = TOL[dtype]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def unit_norms(x, norm_type):
    """Norms of x's units (rows along dim 0; the whole tensor for ndim <= 1), shaped to broadcast."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x, norm_type)
    return torch.linalg.vector_norm(x, norm_type, dim=tuple(range(1, x.dim())), keepdim=True)


def make_params(shapes, dtype, device, gen, clip_factor=0.01, eps=1e-3, norm_type=2.0, spread=1.0):
    """Params with grads whose unit norms are their threshold clip_factor * max(|w unit|, eps)
    times 10^u, u uniform in [-spread, spread]: about half the units clipped, half kept."""
    params = []
    for shape in shapes:
        w = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        units = shape[0] if len(shape) > 1 else 1
        target = unit_norms(w, norm_type).clamp(min=eps) * clip_factor
        factor = 10 ** ((torch.rand(units, generator=gen, dtype=torch.float64) * 2 - 1) * spread)
        g = g / unit_norms(g, norm_type) * target * factor.reshape(target.shape)
        p = torch.nn.Parameter(w.to(dtype=dtype, device=device))
        p.grad = g.to(dtype=dtype, device=device)
        params.append(p)
    return params


def units_changed(new, old):
    """How many units `new` changed from `old`, and how many it kept."""
    changed = kept = 0
    for a, b in zip(new, old):
        diff = (a != b).reshape(a.shape[0], -1).any(dim=1) if a.dim() > 1 else (a != b).any().reshape(1)
        changed += int(diff.sum())
        kept += int((~diff).sum())
    return changed, kept


def clone_params(params):
    """Copies of the parameters with copies of their grads (deepcopy drops a Parameter's grad)."""
    out = []
    for p in params:
        q = torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format))
        q.grad = None if p.grad is None else p.grad.clone(memory_format=torch.preserve_format)
        out.append(q)
    return out


def run_both(params, **kwargs):
    ours = clone_params(params)
    ref = clone_params(params)
    steadystep.adaptive_clip_grad_(ours, **kwargs)
    timm_agc.adaptive_clip_grad(ref, **kwargs)
    return [p.grad for p in ours], [p.grad for p in ref]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("clip_factor,eps", [(0.01, 1e-3), (0.1, 1e-3), (0.01, 0.0), (0.02, 10.0)])
def test_matches_timm(device, dtype, norm_type, clip_factor, eps):
    gen = torch.Generator().manual_seed(hash((str(dtype), norm_type, clip_factor, eps)) % 2**31)
    params = make_params(SHAPES, dtype, device, gen, clip_factor, eps, norm_type)
    before = [p.grad.clone() for p in params]
    ours, ref = run_both(params, clip_factor=clip_factor, eps=eps, norm_type=norm_type)
    assert_agc_close(ours, ref, dtype)
    changed, kept = units_changed(ref, before)
    assert changed > 10 and kept > 10  # the test exercises both the clip and the keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mostly_bitwise_equal(dtype):
    """Same formula, same roundings: beyond the ulps of the norm, the results are the same bits."""
    gen = torch.Generator().manual_seed(7)
    params = make_params([(256, 64), (128, 32, 3, 3), (1000,)], dtype, "cpu", gen)
    ours, ref = run_both(params)
    equal = sum(int((a == b).sum()) for a, b in zip(ours, ref))
    total = sum(a.numel() for a in ours)
    assert equal / total > (0.99 if dtype == torch.bfloat16 else 0.3)


def test_edge_values_match_timm():
    """Zero weights (eps floor), zero grads (1e-6 floor), nan and inf in grads and weights."""
    w = torch.randn(6, 4, dtype=torch.float64)
    g = torch.randn(6, 4, dtype=torch.float64)
    w[0] = 0.0
    g[1] = 0.0
    g[2, 1] = math.nan
    g[3, 2] = math.inf
    w[4, 0] = math.nan
    w[5, 3] = math.inf
    p = torch.nn.Parameter(w)
    p.grad = g
    for norm_type in (2.0, 1.0, math.inf):
        ours, ref = run_both([p], norm_type=norm_type)
        torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
def test_non_contiguous_matches_timm(layout):
    gen = torch.Generator().manual_seed(3)
    (p,) = make_params([(16, 8, 3, 3)] if layout == "channels_last" else [(40, 30)], torch.float32, "cpu", gen)
    if layout == "channels_last":
        p.data = p.data.contiguous(memory_format=torch.channels_last)
        p.grad = p.grad.contiguous(memory_format=torch.channels_last)
    else:
        p.data = p.data.t().contiguous().t()
        p.grad = p.grad.t().contiguous().t()
    grad = p.grad
    ours, ref = run_both([p])
    assert_agc_close(ours, ref, torch.float32)
    steadystep.adaptive_clip_grad_([p])
    assert p.grad is grad  # in place


def test_signature_and_inputs_like_timm():
    gen = torch.Generator().manual_seed(5)
    (p, q) = make_params([(10, 4), (10,)], torch.float32, "cpu", gen)
    r = torch.nn.Parameter(torch.randn(3))  # no grad: skipped
    (ref_p,) = clone_params([p])
    grad = p.grad
    steadystep.adaptive_clip_grad_(p)  # a single tensor
    timm_agc.adaptive_clip_grad(ref_p)
    assert p.grad is grad
    assert_agc_close([p.grad], [ref_p.grad], torch.float32)
    steadystep.adaptive_clip_grad_(x for x in [q, r])  # a generator, defaults positional-compatible
    steadystep.adaptive_clip_grad_([], 0.01, 1e-3, 2.0)
    assert r.grad is None


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"clip_factor": 0.0}, "clip_factor must be > 0, got 0"),
        ({"clip_factor": -1.0}, "clip_factor must be > 0, got -1"),
        ({"eps": -1e-3}, "eps must be >= 0, got -0.001"),
        ({"norm_type": 0.0}, "norm_type must be > 0 or inf, got 0"),
        ({"norm_type": -math.inf}, "norm_type must be > 0 or inf"),
    ],
)
def test_bad_arguments_raise_and_modify_nothing(kwargs, message):
    gen = torch.Generator().manual_seed(1)
    params = make_params([(4, 3), (5,)], torch.float32, "cpu", gen)
    before = [p.grad.clone() for p in params]
    with pytest.raises(ValueError, match=message):
        steadystep.adaptive_clip_grad_(params, **kwargs)
    for p, b in zip(params, before):
        assert torch.equal(p.grad, b)


def test_mismatched_lists_raise_and_modify_nothing():
    w = [torch.randn(4, 3), torch.randn(5)]
    g = [torch.randn(4, 3) * 10, torch.randn(6)]
    before = [x.clone() for x in g]
    op = torch.ops.steadystep.adaptive_clip_grad_
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \[6\] but params\[1\] has shape \[5\]"):
        op(w, g, 0.01, 1e-3, 2.0)
    with pytest.raises(ValueError, match="params and grads must have the same length, got 1 params and 2 grads"):
        op(w[:1], g, 0.01, 1e-3, 2.0)
    with pytest.raises(ValueError, match=r"grads\[0\] has dtype Double but params\[0\] has dtype Float"):
        op(w[:1], [g[0].double()], 0.01, 1e-3, 2.0)
    with pytest.raises(RuntimeError, match=r"params\[0\] has dtype Int"):
        op([w[0].int()], [g[0].int()], 0.01, 1e-3, 2.0)
    for x, b in zip(g, before):
        assert torch.equal(x, b)


def test_meta_tensors():
    w = [torch.empty(4, 3, device="meta")]
    torch.ops.steadystep.adaptive_clip_grad_(w, [torch.empty(4, 3, device="meta")], 0.01, 1e-3, 2.0)
    with pytest.raises(ValueError, match="clip_factor must be > 0"):
        torch.ops.steadystep.adaptive_clip_grad_(w, [torch.empty(4, 3, device="meta")], 0.0, 1e-3, 2.0)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(self.norm(x))


def batches(steps, dtype):
    gen = torch.Generator().manual_seed(11)
    for step in range(steps):
        x = torch.randn(16, 3, 6, 6, generator=gen, dtype=dtype)
        y = torch.randint(0, 4, (16,), generator=gen)
        if step % 97 == 0:
            x = x * 1e3  # a spike: every unit clipped hard
        yield x, y


def train(model, clip, steps, dtype, check=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for x, y in batches(steps, dtype):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if check is not None:
            check(model)
        clip(model.parameters(), clip_factor=0.02)
        opt.step()
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_1000_steps_matches_timm(dtype):
    """1,000 SGD steps of a small conv net, AGC every step, with loss spikes: at every step the
    clipped gradients equal timm's for the same raw gradients, and two runs, one clipped by each,
    end with the same parameters (fp64: the run is long but its rounding stays far below 1e-9)."""
    torch.manual_seed(0)
    model = TinyNet().to(dtype)
    stats = {"clipped": 0, "kept": 0, "steps": 0}

    def compare(m):
        ref = clone_params(m.parameters())
        before = [p.grad.clone() for p in m.parameters()]
        ours = clone_params(m.parameters())
        timm_agc.adaptive_clip_grad(ref, clip_factor=0.02)
        steadystep.adaptive_clip_grad_(ours, clip_factor=0.02)
        assert_agc_close([p.grad for p in ours], [p.grad for p in ref], dtype)
        changed, kept = units_changed([p.grad for p in ref], before)
        stats["clipped"] += changed
        stats["kept"] += kept
        stats["steps"] += 1

    train(copy.deepcopy(model), steadystep.adaptive_clip_grad_, 1000, dtype, check=compare)
    assert stats["steps"] == 1000 and stats["clipped"] > 0 and stats["kept"] > 0
    if dtype == torch.float64:
        ours = train(copy.deepcopy(model), steadystep.adaptive_clip_grad_, 1000, dtype)
        ref = train(copy.deepcopy(model), timm_agc.adaptive_clip_grad, 1000, dtype)
        for a, b in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_compiled_matches_eager():
    """Under torch.compile(fullgraph=True) the op is one graph node: the same bits as eager."""
    gen = torch.Generator().manual_seed(2)
    params = make_params([(16, 8, 3, 3), (16,), (10, 16)], torch.float32, "cpu", gen)
    eager = clone_params(params)
    compiled = clone_params(params)
    steadystep.adaptive_clip_grad_(eager, clip_factor=0.01)

    @torch.compile(fullgraph=True)
    def clip(ps):
        steadystep.adaptive_clip_grad_(ps, clip_factor=0.01)

    clip(compiled)
    for a, b in zip(eager, compiled):
        assert torch.equal(a.grad, b.grad)
    changed, kept = units_changed([p.grad for p in compiled], [p.grad for p in params])
    assert changed > 0 and kept > 0
