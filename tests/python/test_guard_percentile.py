"""steadystep.PercentileClip against the reference AutoClip itself (autoclip 0.2.1 from PyPI, a
test-only dependency): ``QuantileClip(params, quantile, history_length, global_threshold=True)``
over 1,000 training steps of a small model with injected finite spikes (targets x1e3).

Two comparisons:
- The reference fed our norm (``torch.nn.utils.clip_grad_norm_``, which it calls, patched to
  clip with torch's own ``clip_grads_with_norm_`` at the norm we took): that isolates the
  algorithm. The history holds the same values in the same dtype (fp32 for fp32/bf16 grads,
  fp64 for fp64), our quantile is torch.quantile's arithmetic (rank q * (n - 1) in the data's
  dtype, floor/ceil, lerp) on the ring, and the coefficient is clip_grads_with_norm_'s
  ``float(max_norm) / (norm + 1e-6)`` in the norm's dtype: thresholds, coefficients, gradients
  and parameters are bitwise equal, in every dtype.
- The reference as published (fp32, fp64): its norm is taken in the grads' dtype by per-tensor
  norms and a stacked norm, ours by steadystep's multi-tensor kernel; the norms differ by the
  rounding of that reduction (a few fp32 ulps, < 1e-6 relative here), and the threshold is a
  quantile of such norms (piecewise linear in them, so within the same relative error) and the
  coefficient a ratio of two: rtol 1e-5 in fp32 (1e-12 in fp64). The gradients are compared
  on a fixed gradient sequence (on a model the two runs would drift apart by that rounding).
"""

import copy
import math

import pytest
import torch

import steadystep
from conftest import devices

autoclip_torch = pytest.importorskip("autoclip.torch")
QuantileClip = autoclip_torch.QuantileClip

STEPS = 1000
SPIKE_STEPS = {5, 60, 61, 200, 333, 500, 501, 502, 777, 950}
# (quantile, history_length): the default (history longer than the run), histories shorter
# than the run (the ring wraps), the extremes of the quantile, a history of one.
CONFIGS = [(0.9, 1000), (0.5, 50), (0.1, 7), (1.0, 13), (0.0, 20), (0.75, 1), (0.37, 64)]
IDS = [f"q={q}-h={h}" for q, h in CONFIGS]
_RING = [0, 1, *range(4, 13)]  # count, last norm, the ring of history_length=9


class Model(torch.nn.Module):
    def __init__(self, dtype, device):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        self.to(dtype=dtype, device=device)


def batches(dtype, device, steps=STEPS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        x = torch.randn(8, 6, generator=gen, dtype=torch.float64)
        y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
        if t in SPIKE_STEPS:
            y = y * 1e3
        yield x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def backward(model, x, y):
    model.zero_grad()
    torch.nn.functional.mse_loss(model.net(x), y).backward()


class FedReference:
    """autoclip's QuantileClip (global mode), clipping with a given norm; records per step the
    threshold it used (from its history before the step) and the coefficient."""

    def __init__(self, params, quantile, history_length):
        self.clip = QuantileClip(params, quantile=quantile, history_length=history_length,
                                 global_threshold=True)
        self.quantile = quantile

    def step(self, norm):
        history = self.clip.state["global_history"]
        self.threshold = math.inf if len(history) == 0 else torch.quantile(history, self.quantile)
        original = torch.nn.utils.clip_grad_norm_

        def clip_grad_norm_(parameters, max_norm):
            self.coef = torch.clamp(float(max_norm) / (norm + 1e-6), max=1.0)
            torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm.clone())
            return norm.clone()

        torch.nn.utils.clip_grad_norm_ = clip_grad_norm_
        try:
            self.clip.step()
        finally:
            torch.nn.utils.clip_grad_norm_ = original


def same_bits(a, b):
    return torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_same_algorithm_on_same_norm(cfg, dtype):
    quantile, history_length = cfg
    m_ref, m_ours = Model(dtype, "cpu"), Model(dtype, "cpu")
    ref = FedReference(m_ref.parameters(), quantile, history_length)
    ours = steadystep.PercentileClip(quantile=quantile, history_length=history_length)
    opt_ref = torch.optim.SGD(m_ref.parameters(), lr=1e-3)
    opt_ours = torch.optim.SGD(m_ours.parameters(), lr=1e-3)
    clipped = 0
    for t, (x, y) in enumerate(batches(dtype, "cpu")):
        backward(m_ref, x, y)
        backward(m_ours, x, y)
        norm = ours.clip_(m_ours.parameters())
        assert norm.dtype == dtype and norm.dim() == 0
        ref.step(norm)
        threshold = torch.tensor(ref.threshold, dtype=torch.float64)
        assert ours.last_threshold.item() == threshold.item(), t
        assert ours.last_norm.item() == norm.item(), t
        assert ours.last_clip_coef.dtype == torch.float64
        assert ours.last_clip_coef.item() == ref.coef.item(), t
        clipped += ours.last_clip_coef.item() < 1
        history = ref.clip.state["global_history"]
        k = len(history)
        assert ours.state[4:4 + k].sort().values.tolist() == history.double().sort().values.tolist(), t
        for a, b in zip(m_ours.parameters(), m_ref.parameters()):
            assert torch.equal(a.grad, b.grad), t
        opt_ref.step()
        opt_ours.step()
    for a, b in zip(m_ours.parameters(), m_ref.parameters()):
        assert torch.equal(a, b)
    assert ours.step_count.item() == STEPS
    if quantile < 1.0:
        assert clipped > 0
    if quantile <= 0.9 and history_length > 1:  # the injected spikes are above the quantile
        assert clipped >= len(SPIKE_STEPS) - 1


def grad_sequence(dtype, steps=STEPS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(31, 17), (64,), (5, 3, 7)]
    for t in range(steps):
        scale = 0.12 * math.exp(0.3 * torch.randn((), generator=gen).item())
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) * scale for s in shapes]
        if t in SPIKE_STEPS:
            grads[t % len(grads)] *= 1e3
        yield [g.to(dtype) for g in grads]


def holder(grads):
    ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    return ps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_reference_as_published(cfg, dtype):
    quantile, history_length = cfg
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    ref = None
    ours = steadystep.PercentileClip(quantile=quantile, history_length=history_length)
    for t, grads in enumerate(grad_sequence(dtype)):
        ps = holder(grads)
        if ref is None:
            ref = QuantileClip(ps, quantile=quantile, history_length=history_length, global_threshold=True)
        else:
            ref.parameter_groups[0]["params"] = ps
        history = ref.state["global_history"]
        threshold = math.inf if len(history) == 0 else torch.quantile(history, quantile).item()
        ref.step()
        ref_norm = ref.state["global_history"][-1].item()
        mine = [g.clone() for g in grads]
        norm = ours.clip_grads_(mine)
        assert norm.item() == pytest.approx(ref_norm, rel=rtol, abs=0), t
        assert ours.last_threshold.item() == pytest.approx(threshold, rel=rtol, abs=0), t
        coef = min(threshold / (ref_norm + 1e-6), 1.0)
        assert ours.last_clip_coef.item() == pytest.approx(coef, rel=rtol, abs=0), t
        for a, p in zip(mine, ps):
            torch.testing.assert_close(a, p.grad, rtol=rtol, atol=0)


def test_non_finite_norms_as_the_reference():
    """A nan norm enters the history as in autoclip: the threshold (so every coefficient and
    gradient) is nan until it leaves the history; an inf norm zeroes the step's finite entries
    and gives torch.quantile's inf/nan thresholds while it is in the history."""
    dtype, quantile, history_length = torch.float32, 0.5, 5
    ours = steadystep.PercentileClip(quantile=quantile, history_length=history_length)
    ref = None
    for t, grads in enumerate(grad_sequence(dtype, steps=40)):
        if t == 10:
            grads[1][3] = float("nan")
        if t == 25:
            grads[0][2, 2] = float("inf")
        ps = holder(grads)
        mine = [g.clone() for g in grads]
        norm = ours.clip_grads_(mine)
        if ref is None:
            ref = FedReference(ps, quantile, history_length)
        else:
            ref.clip.parameter_groups[0]["params"] = ps
        ref.step(norm)
        threshold = torch.tensor(ref.threshold, dtype=torch.float64)
        assert same_bits(ours.last_threshold, threshold), t
        assert same_bits(ours.last_clip_coef, ref.coef.double()), t
        if 10 < t <= 10 + history_length:
            assert ours.last_threshold.isnan(), t
        for a, p in zip(mine, ps):
            assert same_bits(a, p.grad), t


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("cfg", [(0.9, 1000), (0.3, 17)], ids=["long", "wrapping"])
def test_resume_equals_uninterrupted(cfg, device):
    steps = 300
    whole = steadystep.PercentileClip(*cfg)
    first = steadystep.PercentileClip(*cfg)
    resumed = None
    for t, grads in enumerate(grad_sequence(torch.float32, steps=steps)):
        grads = [g.to(device) for g in grads]
        g_whole = [g.clone() for g in grads]
        norm_whole = whole.clip_grads_(g_whole)
        if t < 150:
            clip = first
        else:
            if resumed is None:
                saved = copy.deepcopy(first.state_dict())
                first.clip_grads_([torch.full_like(g, 7.0) for g in grads])  # the original goes on
                resumed = steadystep.PercentileClip(*cfg)
                resumed.load_state_dict(saved)
            clip = resumed
        norm = clip.clip_grads_(grads)
        assert torch.equal(norm, norm_whole)
        for a, b in zip(grads, g_whole):
            assert torch.equal(a, b)
        assert torch.equal(clip.state, whole.state), t
    assert whole.step_count.item() == steps


def test_options_checked_as_autoclip():
    for kwargs in (dict(quantile=1.5), dict(quantile=-0.1), dict(history_length=0), dict(history_length=-3)):
        with pytest.raises(ValueError) as want:
            QuantileClip([torch.nn.Parameter(torch.ones(2))], global_threshold=True, **kwargs)
        with pytest.raises(ValueError, match=str(want.value).replace(".", r"\.")):
            steadystep.PercentileClip(**kwargs)
    with pytest.raises(TypeError, match="QuantileClip history_length must be an int."):
        steadystep.PercentileClip(history_length=10.0)
    with pytest.raises(TypeError, match="QuantileClip quantile value must be a float or a tensor."):
        steadystep.PercentileClip(quantile="0.9")
    # The op checks its arguments too.
    with pytest.raises(ValueError, match="QuantileClip quantile value must be between 0.0 and 1.0."):
        torch.ops.steadystep.percentile_clip_([torch.ones(3)], torch.zeros(6, dtype=torch.float64), 2.0, 2)
    with pytest.raises(ValueError, match="must be a 1-D float64 tensor of 6 elements"):
        torch.ops.steadystep.percentile_clip_([torch.ones(3)], torch.zeros(7, dtype=torch.float64), 0.5, 2)


def test_no_host_sync_in_step():
    """Every decision is tensor math: the step works on meta tensors, where nothing can be read."""
    clip = steadystep.PercentileClip(quantile=0.8, history_length=3)
    grads = [torch.empty(s, device="meta") for s in [(31, 17), (64,)]]
    for _ in range(5):
        norm = clip.clip_grads_(grads)
    assert norm.device.type == "meta" and clip.state.device.type == "meta"


def test_given_norm_and_empty_grads():
    """total_norm given (e.g. the global norm over ranks) replaces the local one."""
    clip = steadystep.PercentileClip(quantile=0.5, history_length=4)
    g = [torch.ones(4)]
    clip.clip_grads_(g, total_norm=torch.tensor(2.0))
    assert clip.last_norm.item() == 2.0 and clip.last_threshold.item() == math.inf
    clip.clip_grads_(g, total_norm=torch.tensor(8.0))
    assert clip.last_threshold.item() == 2.0
    assert clip.last_clip_coef.item() == torch.tensor(2.0 / (8.0 + 1e-6), dtype=torch.float32).item()
    assert torch.equal(g[0], torch.ones(4) * clip.last_clip_coef.float())
    assert steadystep.PercentileClip().clip_([]).item() == 0.0


def cpp_test_norms(steps=1000):
    """tests/cpp/test_guard_policies.cpp's norm sequence (fp32), spikes x1e3 at 5, 60, 61, 333, 777."""
    norms = []
    for t in range(steps):
        n = 2.0 * math.exp(0.3 * math.sin(0.7 * t) + 0.1 * math.cos(2.3 * t))
        if t in (5, 60, 61, 333, 777):
            n *= 1e3
        norms.append(torch.tensor(n, dtype=torch.float32))
    return norms


@pytest.mark.parametrize("cfg", [(0.9, 1000), (0.5, 50), (0.1, 7)], ids=["default", "h50", "h7"])
def test_cpp_test_sequence(cfg):
    """The Python class on the given-norm sequence the GoogleTest runs the C++ class on, against
    autoclip fed the same norms: thresholds and coefficients to the last bit."""
    ours = steadystep.PercentileClip(*cfg)
    p = torch.nn.Parameter(torch.zeros(3))
    ref = FedReference([p], *cfg)
    for t, n in enumerate(cpp_test_norms()):
        p.grad = torch.full((3,), 1.5)
        ours.clip_grads_([], total_norm=n)
        ref.step(n)
        assert ours.last_threshold.item() == torch.tensor(ref.threshold).double().item(), t
        assert ours.last_clip_coef.item() == ref.coef.item(), t


def test_compiled_step_matches_eager():
    """The op under torch.compile: the composite is traced into ATen ops and Inductor generates
    its own code for them, and its aten.lerp is not ATen's kernel (which switches formulas at
    weight 0.5), so an fp32 threshold may land one fp32 ulp off; the norm history (the ring)
    and the step count stay bitwise, the threshold, coefficient and gradients within 2 ulps."""
    eager, compiled = (steadystep.PercentileClip(quantile=0.7, history_length=9) for _ in range(2))
    fn = torch.compile(lambda clip, grads: clip.clip_grads_(grads))
    ulps = dict(rtol=2 * 2**-23, atol=0)
    for t, grads in enumerate(grad_sequence(torch.float32, steps=40)):
        other = [g.clone() for g in grads]
        assert torch.equal(eager.clip_grads_(grads), fn(compiled, other)), t
        for a, b in zip(grads, other):
            torch.testing.assert_close(b, a, **ulps)
        assert torch.equal(eager.state[_RING], compiled.state[_RING]), t
        torch.testing.assert_close(compiled.state, eager.state, **ulps)
        assert compiled.last_clip_coef.item() < 1 or eager.last_clip_coef.item() == 1, t
    assert compiled.step_count.item() == 40
