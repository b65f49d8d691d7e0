"""steadystep.ZScoreClip against the reference ZClip itself (zclip 1.0.0 from PyPI, a test-only
dependency), over 1,000 steps with injected spikes, in every mode and clip option.

Two comparisons:
- The reference as published: its norm is taken in the grads' dtype by per-tensor norms and a
  stacked sum; ours by steadystep's multi-tensor kernel in fp32 (fp64 for fp64 grads). The two
  norms differ by the rounding of that reduction (a few fp32 ulps: relative 1e-6 at most for
  these sizes), and everything downstream is a smooth function of the norms (grads vary by
  ~30% from step to step, so (norm - mean) is never a catastrophic cancellation), hence rtol
  1e-5 for fp32 (1e-12 for fp64). Spike decisions must agree exactly.
- The reference fed with our norm (its _compute_grad_norm patched): that isolates the
  algorithm, which is fp64 arithmetic on both sides in the same order of operations (the
  warmup sums as left folds, `var ** 0.5` as C's pow), so the EMA statistics agree to the last
  fp64 bit (asserted to 1e-14, which also allows Python >= 3.12, whose sum() of floats is
  compensated) and the clipped gradients after warmup are bitwise equal.
"""

import copy
import math

import pytest
import torch

import steadystep
from conftest import devices

zclip = pytest.importorskip("zclip")

STEPS = 1000
SHAPES = [(31, 17), (64,), (5, 3, 7)]
SPIKE_STEPS = {5, 60, 61, 200, 333, 500, 501, 502, 777, 950}

CONFIGS = [
    dict(mode="zscore", clip_option="adaptive_scaling", max_grad_norm=None),
    dict(mode="zscore", clip_option="mean", max_grad_norm=5.0),
    dict(mode="percentile", max_grad_norm=None),
    dict(mode="zscore", clip_option="adaptive_scaling", clip_factor=0.8, skip_update_on_spike=True,
         max_grad_norm=None, warmup_steps=10, alpha=0.9),
    dict(mode="percentile", skip_update_on_spike=True, max_grad_norm=3.0, z_thresh=2.0),
    dict(),  # zclip's defaults: max_grad_norm=1.0 caps almost every step
]


def grad_sequence(dtype, device, steps=STEPS, seed=0):
    """Gradients with a norm around 2 that wanders (lognormal, ~30%) and a few spikes x1e3."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        scale = 0.12 * math.exp(0.3 * torch.randn((), generator=gen).item())
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) * scale for s in SHAPES]
        if t in SPIKE_STEPS:
            grads[t % len(grads)] *= 1e3
        yield [g.to(dtype=dtype, device=device) for g in grads]


class Holder(torch.nn.Module):
    def __init__(self, dtype, device):
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(s, dtype=dtype, device=device))
                                          for s in SHAPES])

    def set_grads(self, grads):
        for p, g in zip(self.ps, grads):
            p.grad = g.clone()


def recording_reference(cfg, patch_norm=None):
    """zclip.ZClip, recording per step: (spike threshold or None, coefficient it applies)."""
    ref = zclip.ZClip(**cfg)
    log = {}
    compute_clip_val = ref._compute_clip_val

    def clip_val(norm):
        log["threshold"] = compute_clip_val(norm)
        return log["threshold"]

    apply = ref.apply_in_place_clipping

    def apply_clipping(module, global_norm, max_global_norm):
        # The coefficient as the reference computes it (zclip.py apply_in_place_clipping).
        log["coef"] = (max_global_norm / (global_norm + 1e-6)) if global_norm > max_global_norm else 1.0
        apply(module, global_norm, max_global_norm)

    ref._compute_clip_val = clip_val
    ref.apply_in_place_clipping = apply_clipping
    if patch_norm is not None:
        ref._compute_grad_norm = lambda model: patch_norm()
    return ref, log


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_matches_reference(cfg, dtype):
    ref, log = recording_reference(cfg)
    ours = steadystep.ZScoreClip(**cfg)
    warmup = max(ours.warmup_steps, 1)
    m_ref, m_ours = Holder(dtype, "cpu"), Holder(dtype, "cpu")
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    spikes = 0
    for t, grads in enumerate(grad_sequence(dtype, "cpu")):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        log.clear()
        n_ref = ref.step(m_ref)
        n_ours = ours.step(m_ours)
        assert n_ours.dtype == dtype and n_ours.dim() == 0
        assert n_ours.item() == pytest.approx(n_ref, rel=rtol), t
        assert ours.last_norm.item() == pytest.approx(n_ref, rel=rtol), t
        if t + 1 >= warmup:
            assert ours.mean.item() == pytest.approx(ref.mean, rel=rtol), t
            assert ours.var.item() == pytest.approx(ref.var, rel=rtol), t
        spike = t >= warmup and log["threshold"] is not None
        assert bool(ours.last_spike) == spike, t
        spikes += spike
        if t >= warmup:
            assert ours.last_clip_coef.item() == pytest.approx(log["coef"], rel=rtol), t
        for a, b in zip(m_ours.ps, m_ref.ps):
            torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=0)
    assert ours.step_count.item() == STEPS
    # The injected spikes after warmup are caught (percentile mode also flags natural outliers).
    assert spikes >= len([s for s in SPIKE_STEPS if s >= warmup])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("cfg", CONFIGS[:5], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_same_algorithm_on_same_norm(cfg, dtype):
    """The reference given our norm: statistics to fp64 rounding, clipped grads bitwise."""
    ours = steadystep.ZScoreClip(**cfg)
    ref, log = recording_reference(cfg, patch_norm=lambda: ours.last_norm.item())
    warmup = max(ours.warmup_steps, 1)
    m_ref, m_ours = Holder(dtype, "cpu"), Holder(dtype, "cpu")
    for t, grads in enumerate(grad_sequence(dtype, "cpu")):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        log.clear()
        ours.step(m_ours)  # first: the reference reads the norm we took
        ref.step(m_ref)
        if t + 1 >= warmup:
            assert ours.mean.item() == pytest.approx(ref.mean, rel=1e-14, abs=0), t
            assert ours.var.item() == pytest.approx(ref.var, rel=1e-13, abs=0), t
        if t >= warmup:
            assert ours.last_clip_coef.item() == pytest.approx(log["coef"], rel=1e-14, abs=0), t
            assert bool(ours.last_spike) == (log["threshold"] is not None), t
            for a, b in zip(m_ours.ps, m_ref.ps):
                assert torch.equal(a.grad, b.grad), t
        else:
            # Warmup: torch's clip_grad_norm_ with its own norm, in the grads' dtype: for bf16
            # the norm (so the coefficient) may round to the neighbouring bf16 value, then the
            # product rounds again: two bf16 ulps (2 * 2**-7) relative.
            tol = dict(rtol=2 * 2**-7, atol=0) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=0)
            for a, b in zip(m_ours.ps, m_ref.ps):
                torch.testing.assert_close(a.grad, b.grad, **tol)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3], CONFIGS[4]], ids=["zscore", "skip", "percentile"])
def test_resume_equals_uninterrupted(cfg, device):
    steps = 300
    whole = steadystep.ZScoreClip(**cfg)
    first = steadystep.ZScoreClip(**cfg)
    resumed = None
    for t, grads in enumerate(grad_sequence(torch.float32, device, steps=steps)):
        g_whole = [g.clone() for g in grads]
        norm_whole = whole.clip_grads_(g_whole)
        if t < 150:
            clip = first
        else:
            if resumed is None:
                saved = copy.deepcopy(first.state_dict())
                first.clip_grads_([torch.full_like(g, 7.0) for g in grads])  # the original goes on
                resumed = steadystep.ZScoreClip(warmup_steps=1, mode="percentile")
                resumed.load_state_dict(saved)
            clip = resumed
        norm = clip.clip_grads_(grads)
        assert torch.equal(norm, norm_whole)
        for a, b in zip(grads, g_whole):
            assert torch.equal(a, b)
        assert torch.equal(clip.state, whole.state), t
    assert whole.step_count.item() == steps


def test_no_host_sync_in_step():
    """Every decision is tensor math: the step works on meta tensors, where nothing can be read."""
    clip = steadystep.ZScoreClip(warmup_steps=3)
    grads = [torch.empty(s, device="meta") for s in SHAPES]
    for _ in range(5):
        norm = clip.clip_grads_(grads)
    assert norm.device.type == "meta" and clip.state.device.type == "meta"


def test_options_checked_as_zclip():
    with pytest.raises(ValueError, match="mode must be either 'zscore' or 'percentile'."):
        steadystep.ZScoreClip(mode="median")
    with pytest.raises(ValueError, match="clip_option must be either 'mean' or 'adaptive_scaling'"):
        steadystep.ZScoreClip(clip_option="max")
    assert steadystep.ZScoreClip(mode="Percentile", clip_option="anything").clip_option is None
    with pytest.raises(ValueError, match="mode must be either"):
        torch.ops.steadystep.zscore_clip_([torch.ones(3)], torch.zeros(7, dtype=torch.float64), 0.97, 2.5,
                                          None, 1e-6, 1, "x", "mean", 1.0, False)
    with pytest.raises(ValueError, match="must be a 1-D float64 tensor of 31 elements"):
        torch.ops.steadystep.zscore_clip_([torch.ones(3)], torch.zeros(7, dtype=torch.float64), 0.97, 2.5,
                                          None, 1e-6, 25, "zscore", "mean", 1.0, False)


def test_given_norm_and_empty_grads():
    """total_norm given (e.g. the global norm over ranks) replaces the local one."""
    clip = steadystep.ZScoreClip(warmup_steps=1, max_grad_norm=None)
    g = [torch.ones(4)]
    clip.clip_grads_(g, total_norm=torch.tensor(2.0))
    assert clip.last_norm.item() == 2.0 and clip.mean.item() == 2.0 and clip.var.item() == 0.0
    norm = steadystep.ZScoreClip().clip_([])
    assert norm.item() == 0.0


def cpp_test_norms(steps=1000):
    """tests/cpp/test_guard.cpp's norm sequence (fp32), spikes x1e3 at 5, 60, 61, 333, 777."""
    norms = []
    for t in range(steps):
        n = 2.0 * math.exp(0.3 * math.sin(0.7 * t) + 0.1 * math.cos(2.3 * t))
        if t in (5, 60, 61, 333, 777):
            n *= 1e3
        norms.append(torch.tensor(n, dtype=torch.float32))
    return norms


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_cpp_test_sequence(cfg):
    """The Python class on the given-norm sequence that the GoogleTest (tests/cpp/test_guard.cpp)
    runs the C++ class on, against zclip fed the same norms: coefficients and statistics
    equal to the last bit (both classes are the same op; this pins the Python side of it)."""
    ours = steadystep.ZScoreClip(**cfg)
    ref, log = recording_reference(cfg, patch_norm=lambda: ours.last_norm.item())
    holder = Holder(torch.float32, "cpu")
    for t, n in enumerate(cpp_test_norms()):
        holder.set_grads([torch.full(s, 1.5) for s in SHAPES])
        log.clear()
        ours.clip_grads_([], total_norm=n)
        ref.step(holder)
        if ref.initialized:
            assert (ours.mean.item(), ours.var.item()) == (ref.mean, ref.var), t
        if "coef" in log:
            assert ours.last_clip_coef.item() == log["coef"], t
            assert bool(ours.last_spike) == (log["threshold"] is not None), t


def test_compiled_step_matches_eager():
    """The op under torch.compile (a graph break at the Python state's first creation aside)."""
    eager, compiled = (steadystep.ZScoreClip(warmup_steps=3, max_grad_norm=None) for _ in range(2))
    fn = torch.compile(lambda clip, grads: clip.clip_grads_(grads))
    for t, grads in enumerate(grad_sequence(torch.float32, "cpu", steps=70)):
        other = [g.clone() for g in grads]
        assert torch.equal(eager.clip_grads_(grads), fn(compiled, other)), t
        assert all(torch.equal(a, b) for a, b in zip(grads, other)), t
        assert torch.equal(eager.state, compiled.state), t
    assert bool(compiled.last_spike) is False and compiled.step_count.item() == 70
