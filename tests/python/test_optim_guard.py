"""The gradient guard inside the fused optimizers (``guard=``), against the published references
driving torch's own optimizers, over training runs with injected finite spikes.

What is compared, and how closely:
- Against the references as published (``zclip.ZClip``, ``autoclip.torch.QuantileClip``,
  ``timm.utils.adaptive_clip_grad``, each followed by ``torch.optim.AdamW`` / ``SGD``): the norm
  is taken by steadystep's multi-tensor kernel (fp32 accumulation, fp64 for fp64 grads) and
  by the reference as per-tensor norms stacked and reduced again; the two differ by the
  rounding of that reduction (a few fp32 ulps, < 1e-6 relative for these sizes; fp64: < 1e-15).
  The guard's statistics, thresholds and coefficients are smooth functions of the norms (the
  grads wander by ~30% from step to step, so ``norm - mean`` never cancels catastrophically),
  hence rtol 1e-5 in fp32. The optimizer reports the norm and the coefficient in fp32 whatever
  the grads' dtype (its ``decisions`` tensor), so in fp64 those are compared to 1e-7 (2^-24 is
  the rounding of the report), the guard's own fp64 statistics to 1e-12. The gradient
  sequence is fixed (it does not depend on the params): otherwise the two runs would feed the
  rounding difference back into their gradients and drift apart. A rounding difference could
  flip a decision only for a norm within ~1e-6 relative of a threshold: the spikes are x1e2 to
  x1e3 (far above any threshold) and the decisions must agree exactly; the final parameters
  (fused AdamW kernel vs torch's single-tensor AdamW, same formula, different rounding order)
  agree to rtol/atol 1e-5 (fp32), 1e-10 (fp64).
- Against steadystep itself: the guarded fused step equals the standalone policy
  (``ZScoreClip.clip_`` etc.) followed by the unguarded fused step, bitwise (same ops, same
  kernels); a skip equals not calling ``step`` at all, bitwise.
"""

import copy
import io
import math

import pytest
import torch

from conftest import cpp_driver

import steadystep
from steadystep.optim import FusedAdamW, FusedSGD

zclip = pytest.importorskip("zclip")
autoclip_torch = pytest.importorskip("autoclip.torch")
timm_agc = pytest.importorskip("timm.utils.agc")

STEPS = 1000
SHAPES = [(31, 17), (64,), (5, 3, 7)]
# Spikes x1e2 .. x1e3, some in a row; none in ZClip's default warmup of 25 steps.
SPIKES = {60: 1e3, 61: 1e2, 200: 3e2, 333: 1e3, 500: 1e2, 501: 1e3, 502: 5e2, 777: 1e3, 950: 2e2}
LR = 1e-2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors of a few hundred elements: one intra-op thread (OpenMP workers spinning on the
    two shared cores cost more than these ops). Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grad_sequence(dtype, steps=STEPS, seed=0, spikes=SPIKES, device="cpu"):
    """Gradients with a norm around 2 that wanders (lognormal, ~30%) and finite spikes."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        scale = 0.12 * math.exp(0.3 * torch.randn((), generator=gen).item())
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) * scale for s in SHAPES]
        if t in spikes:
            grads[t % len(grads)] *= spikes[t]
        yield [g.to(dtype=dtype, device=device) for g in grads]


def initial_params(dtype, device="cpu"):
    """Deterministic, RNG-free: the same numbers in every process and language."""
    out = []
    for k, shape in enumerate(SHAPES):
        n = math.prod(shape)
        out.append((torch.sin(torch.arange(n, dtype=torch.float64) * 0.37 + k) * 0.5).reshape(shape)
                   .to(dtype=dtype, device=device))
    return out


class Holder(torch.nn.Module):
    def __init__(self, dtype, device="cpu"):
        super().__init__()
        self.ps = torch.nn.ParameterList([torch.nn.Parameter(p) for p in initial_params(dtype, device)])

    def set_grads(self, grads):
        for p, g in zip(self.ps, grads):
            p.grad = g.clone()


def adam_state(opt):
    return [{k: v.clone() for k, v in opt.state[p].items()} for g in opt.param_groups for p in g["params"]]


def assert_same_state(a, b):
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def assert_params(ours, ref, dtype):
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


REPORT_RTOL = {torch.float32: 1e-5, torch.float64: 1e-7}  # what the fp32 decisions hold
STATE_RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}  # the policies' own fp64 state

# ---------------------------------------------------------------------------------------------
# ZScoreClip vs zclip.ZClip + torch.optim.AdamW

ZCONFIGS = [
    dict(mode="zscore", clip_option="adaptive_scaling", max_grad_norm=None),
    dict(mode="zscore", clip_option="mean", max_grad_norm=5.0),
    dict(mode="percentile", max_grad_norm=None),
    dict(mode="zscore", clip_option="adaptive_scaling", clip_factor=0.8, skip_update_on_spike=True,
         max_grad_norm=None, warmup_steps=10, alpha=0.9),
    dict(mode="percentile", skip_update_on_spike=True, max_grad_norm=3.0, z_thresh=2.0),
    dict(),  # zclip's defaults: max_grad_norm=1.0 caps almost every step
]
ZIDS = ["zscore-adaptive", "zscore-mean-max5", "percentile", "adaptive-skip_update-w10", "percentile-skip-max3",
        "defaults"]


def recording_zclip(cfg):
    """zclip.ZClip, recording per step the spike threshold (or None) and the coefficient it
    applies (warmup: clip_grad_norm_'s with max_grad_norm, else its own)."""
    ref = zclip.ZClip(**cfg)
    log = {}
    compute_clip_val = ref._compute_clip_val
    apply = ref.apply_in_place_clipping

    def clip_val(norm):
        log["threshold"] = compute_clip_val(norm)
        return log["threshold"]

    def apply_clipping(module, global_norm, max_global_norm):
        log["coef"] = (max_global_norm / (global_norm + 1e-6)) if global_norm > max_global_norm else 1.0
        apply(module, global_norm, max_global_norm)

    ref._compute_clip_val = clip_val
    ref.apply_in_place_clipping = apply_clipping
    return ref, log


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", ZCONFIGS, ids=ZIDS)
def test_zscore_guard_matches_zclip_and_adamw(cfg, dtype):
    ref, log = recording_zclip(cfg)
    m_ref, m_ours = Holder(dtype), Holder(dtype)
    opt_ref = torch.optim.AdamW(m_ref.parameters(), lr=LR)
    guard = steadystep.ZScoreClip(**cfg)
    opt = FusedAdamW(m_ours.parameters(), lr=LR, guard=guard)
    warmup = max(guard.warmup_steps, 1)
    rtol, srtol = REPORT_RTOL[dtype], STATE_RTOL[dtype]
    spikes = 0
    for t, grads in enumerate(grad_sequence(dtype)):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        log.clear()
        n_ref = ref.step(m_ref)
        opt_ref.step()
        opt.step()
        assert opt.last_grad_norm.item() == pytest.approx(n_ref, rel=rtol), t
        assert guard.last_norm.item() == pytest.approx(n_ref, rel=srtol), t
        if t < warmup:
            mx = cfg.get("max_grad_norm", 1.0)
            coef = 1.0 if mx is None else min(mx / (n_ref + 1e-6), 1.0)
        else:
            coef = log["coef"]
            spike = log["threshold"] is not None
            assert bool(guard.last_spike) == spike, t
            spikes += spike
        assert opt.last_clip_coef.item() == pytest.approx(coef, rel=rtol), t
        assert guard.last_clip_coef.item() == pytest.approx(coef, rel=srtol), t
        assert not opt.last_skipped, t
        if t + 1 >= warmup:
            assert guard.mean.item() == pytest.approx(ref.mean, rel=srtol), t
            assert guard.var.item() == pytest.approx(ref.var, rel=srtol), t
    assert spikes >= len([s for s in SPIKES if s >= warmup])
    assert opt.skipped_steps.item() == 0 and guard.step_count.item() == STEPS
    assert_params(m_ours, m_ref, dtype)
    for p in m_ours.parameters():
        assert opt.state[p]["step"].item() == STEPS


def test_zscore_guard_bf16_params_matches_zclip_and_adamw_fused():
    """bf16 params and grads: the fused step keeps bf16 state as torch's fused=True AdamW does.
    The reference takes the norm in bf16 (rounded to 8 bits); ours in fp32 and decides on it:
    norms agree to a bf16 rounding (2^-8 relative), the spike decisions exactly (spikes are far
    from the threshold), the clip coefficients to that rounding, the params to a few bf16 ulps
    (only 200 steps: bf16 rounding differences add up)."""
    cfg = dict(mode="zscore", clip_option="adaptive_scaling", max_grad_norm=None, warmup_steps=10)
    ref, log = recording_zclip(cfg)
    dtype = torch.bfloat16
    m_ref, m_ours = Holder(dtype), Holder(dtype)
    opt_ref = torch.optim.AdamW(m_ref.parameters(), lr=LR, fused=True)
    guard = steadystep.ZScoreClip(**cfg)
    opt = FusedAdamW(m_ours.parameters(), lr=LR, guard=guard)
    for t, grads in enumerate(grad_sequence(dtype, steps=200)):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        log.clear()
        n_ref = ref.step(m_ref)
        opt_ref.step()
        opt.step()
        assert opt.last_grad_norm.item() == pytest.approx(n_ref, rel=2**-7), t
        if t >= 10:
            assert bool(guard.last_spike) == (log["threshold"] is not None), t
            assert opt.last_clip_coef.item() == pytest.approx(log["coef"], rel=2**-6), t
    for p in m_ours.parameters():
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
    for p, q in zip(m_ours.parameters(), m_ref.parameters()):
        torch.testing.assert_close(p.float(), q.float(), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", [ZCONFIGS[0], ZCONFIGS[4]], ids=[ZIDS[0], ZIDS[4]])
def test_zscore_guard_equals_standalone_clip_then_step(cfg, dtype):
    """Guarded step == ZScoreClip.clip_ then the unguarded fused step: bitwise."""
    m_a, m_b = Holder(dtype), Holder(dtype)
    g_a, g_b = steadystep.ZScoreClip(**cfg), steadystep.ZScoreClip(**cfg)
    opt_a = FusedAdamW(m_a.parameters(), lr=LR, guard=g_a)
    opt_b = FusedAdamW(m_b.parameters(), lr=LR, skip_nonfinite=False)
    for t, grads in enumerate(grad_sequence(dtype, steps=300)):
        m_a.set_grads(grads)
        m_b.set_grads(grads)
        opt_a.step()
        g_b.clip_(m_b.parameters())
        opt_b.step()
        assert torch.equal(g_a.state, g_b.state), t
        for p, q in zip(m_a.parameters(), m_b.parameters()):
            assert torch.equal(p, q), t


# ---------------------------------------------------------------------------------------------
# PercentileClip vs autoclip QuantileClip(global_threshold=True) + torch.optim.AdamW

PCONFIGS = [(0.9, 1000), (0.5, 50), (0.1, 7)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("quantile,history", PCONFIGS, ids=[f"q={q}-h={h}" for q, h in PCONFIGS])
def test_percentile_guard_matches_autoclip_and_adamw(quantile, history, dtype):
    m_ref, m_ours = Holder(dtype), Holder(dtype)
    ref = autoclip_torch.QuantileClip(m_ref.parameters(), quantile=quantile, history_length=history,
                                      global_threshold=True)
    opt_ref = torch.optim.AdamW(m_ref.parameters(), lr=LR)
    guard = steadystep.PercentileClip(quantile, history)
    opt = FusedAdamW(m_ours.parameters(), lr=LR, guard=guard)
    rtol, srtol = REPORT_RTOL[dtype], STATE_RTOL[dtype]
    clipped = 0
    for t, grads in enumerate(grad_sequence(dtype)):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        history_before = ref.state["global_history"]
        threshold = math.inf if len(history_before) == 0 else torch.quantile(history_before, quantile).item()
        ref.step()
        n_ref = ref.state["global_history"][-1].item()
        coef = min(threshold / (n_ref + 1e-6), 1.0)
        opt_ref.step()
        opt.step()
        assert opt.last_grad_norm.item() == pytest.approx(n_ref, rel=rtol), t
        if math.isinf(threshold):
            assert math.isinf(guard.last_threshold.item()), t
        else:
            assert guard.last_threshold.item() == pytest.approx(threshold, rel=srtol), t
        assert opt.last_clip_coef.item() == pytest.approx(coef, rel=rtol), t
        assert guard.last_clip_coef.item() == pytest.approx(coef, rel=srtol), t
        clipped += coef < 1
        assert not opt.last_skipped, t
    assert clipped >= len(SPIKES)
    assert guard.step_count.item() == STEPS and opt.skipped_steps.item() == 0
    assert_params(m_ours, m_ref, dtype)


def test_percentile_guard_equals_standalone_clip_then_step():
    m_a, m_b = Holder(torch.float32), Holder(torch.float32)
    g_a, g_b = steadystep.PercentileClip(0.5, 50), steadystep.PercentileClip(0.5, 50)
    opt_a = FusedAdamW(m_a.parameters(), lr=LR, guard=g_a)
    opt_b = FusedAdamW(m_b.parameters(), lr=LR, skip_nonfinite=False)
    for t, grads in enumerate(grad_sequence(torch.float32, steps=300)):
        m_a.set_grads(grads)
        m_b.set_grads(grads)
        opt_a.step()
        g_b.clip_(m_b.parameters())
        opt_b.step()
        assert torch.equal(g_a.state, g_b.state), t
        for p, q in zip(m_a.parameters(), m_b.parameters()):
            assert torch.equal(p, q), t


# ---------------------------------------------------------------------------------------------
# AdaptiveGradClip vs timm.utils.adaptive_clip_grad + torch.optim.AdamW / SGD

AGC_STEPS = 200


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_agc_guard_matches_timm(opt_name, dtype):
    """AGC reads the params, so the two runs' (rounding-apart) params feed back into the
    clipping: compared per step with the final tolerance, over 200 steps. Not bitwise: timm's
    unit norms are torch's vector_norm, ours steadystep's multi-tensor kernel (test_agc.py)."""
    m_ref, m_ours = Holder(dtype), Holder(dtype)
    if opt_name == "adamw":
        opt_ref = torch.optim.AdamW(m_ref.parameters(), lr=LR)
        opt = FusedAdamW(m_ours.parameters(), lr=LR, guard=steadystep.AdaptiveGradClip(0.05))
    else:
        opt_ref = torch.optim.SGD(m_ref.parameters(), lr=LR, momentum=0.9)
        opt = FusedSGD(m_ours.parameters(), lr=LR, momentum=0.9, guard=steadystep.AdaptiveGradClip(0.05))
    for t, grads in enumerate(grad_sequence(dtype, steps=AGC_STEPS)):
        m_ref.set_grads(grads)
        m_ours.set_grads(grads)
        timm_agc.adaptive_clip_grad(m_ref.parameters(), clip_factor=0.05)
        opt_ref.step()
        opt.step()
        # The norm the guard reports is that of the AGC-clipped gradients.
        want = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in m_ref.parameters()]))
        assert opt.last_grad_norm.item() == pytest.approx(want.item(), rel=REPORT_RTOL[dtype]), t
        assert opt.last_clip_coef.item() == 1.0 and not opt.last_skipped
        assert_params(m_ours, m_ref, dtype)


@pytest.mark.parametrize("opt_cls", [FusedAdamW, FusedSGD])
def test_agc_guard_equals_adaptive_clip_grad_then_step(opt_cls):
    """Guarded == steadystep.adaptive_clip_grad_ then the unguarded step: bitwise."""
    kw = dict(lr=LR) if opt_cls is FusedAdamW else dict(lr=LR, momentum=0.9)
    m_a, m_b = Holder(torch.float32), Holder(torch.float32)
    opt_a = opt_cls(m_a.parameters(), guard=steadystep.AdaptiveGradClip(0.05), **kw)
    opt_b = opt_cls(m_b.parameters(), **kw)
    for t, grads in enumerate(grad_sequence(torch.float32, steps=AGC_STEPS)):
        m_a.set_grads(grads)
        m_b.set_grads(grads)
        opt_a.step()
        steadystep.adaptive_clip_grad_(m_b.parameters(), 0.05)
        opt_b.step()
        assert torch.equal(opt_a.last_grad_norm, opt_b.last_grad_norm), t
        for p, q in zip(m_a.parameters(), m_b.parameters()):
            assert torch.equal(p, q), t


# ---------------------------------------------------------------------------------------------
# SpikeSkip

SKIP_KW = dict(max_norm=500.0, z_thresh=4.0, window=16, warmup_steps=8)


def skip_oracle(norm, window, max_norm, z_thresh, warmup_steps):
    """OLMo-core's z-score skip and Megatron's absolute bound, in Python on the host."""
    if max_norm is not None and norm > max_norm:
        return True
    if z_thresh is not None and len(window) >= warmup_steps:
        std, mean = torch.std_mean(torch.tensor(window, dtype=torch.float64))
        return norm - mean.item() > z_thresh * std.item()
    return False


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spike_skip_matches_oracle_and_leaves_state_bit_identical(dtype):
    """Each skipped step: params, exp_avg, exp_avg_sq and step bit-identical, skipped_steps + 1,
    last_skipped. The whole run equals an unguarded FusedAdamW whose skipped steps are simply
    not taken (bitwise) and torch's AdamW skipping the same steps (rounding)."""
    m_ours, m_skip, m_ref = Holder(dtype), Holder(dtype), Holder(dtype)
    guard = steadystep.SpikeSkip(**SKIP_KW)
    opt = FusedAdamW(m_ours.parameters(), lr=LR, guard=guard)
    opt_skip = FusedAdamW(m_skip.parameters(), lr=LR)
    opt_ref = torch.optim.AdamW(m_ref.parameters(), lr=LR)
    window, skips = [], 0
    for t, grads in enumerate(grad_sequence(dtype)):
        for m in (m_ours, m_skip, m_ref):
            m.set_grads(grads)
        before_p = [p.detach().clone() for p in m_ours.parameters()]
        before_s = adam_state(opt) if t else None
        opt.step()
        norm = guard.last_norm.item()
        want_norm = torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads])).item()
        assert norm == pytest.approx(want_norm, rel=REPORT_RTOL[dtype]), t
        skip = skip_oracle(norm, window[-SKIP_KW["window"]:], **{k: SKIP_KW[k] for k in
                                                                 ("max_norm", "z_thresh", "warmup_steps")})
        window.append(norm)
        assert bool(opt.last_skipped) == skip, t
        assert bool(guard.last_skipped) == skip, t
        if skip:
            skips += 1
            for p, b in zip(m_ours.parameters(), before_p):
                assert torch.equal(p, b), t
            if before_s is not None:
                assert_same_state(adam_state(opt), before_s)
        else:
            opt_skip.step()
            opt_ref.step()
        assert opt.skipped_steps.item() == skips, t
        if len(window) >= 2:
            std, mean = torch.std_mean(torch.tensor(window[-SKIP_KW["window"] - 1:-1], dtype=torch.float64))
            if len(window) > 2:
                assert guard.mean.item() == pytest.approx(mean.item(), rel=1e-12), t
                assert guard.std.item() == pytest.approx(std.item(), rel=1e-9), t
    # Every injected spike is skipped (x1e2 on a norm ~2 is far beyond both rules), nothing else
    # after warmup would be at z = 4 but a natural outlier may be: at least the spikes.
    assert skips >= len(SPIKES)
    for p, q in zip(m_ours.parameters(), m_skip.parameters()):
        assert torch.equal(p, q)
    assert_same_state(adam_state(opt), adam_state(opt_skip))
    assert_params(m_ours, m_ref, dtype)


def test_spike_skip_with_zscore_clip_and_nonfinite():
    """[SpikeSkip, ZScoreClip]: a skipped step leaves ZScoreClip's state as it was (the skip
    policy's own window takes the norm); a non-finite step changes no policy state at all."""
    skip = steadystep.SpikeSkip(max_norm=100.0, z_thresh=None, window=8, warmup_steps=4)
    clip = steadystep.ZScoreClip(warmup_steps=10, max_grad_norm=None)
    model = Holder(torch.float32)
    opt = FusedAdamW(model.parameters(), lr=LR, guard=[skip, clip])
    assert opt.guard == (skip, clip)
    spikes = {30: 1e3, 31: 1e3, 50: 5e2, 70: 1e3}
    nonfinite = {40: math.inf, 41: math.nan}
    for t, grads in enumerate(grad_sequence(torch.float32, steps=100, spikes=spikes)):
        if t in nonfinite:
            grads[1][3] = nonfinite[t]
        model.set_grads(grads)
        clip_before = clip.state.clone() if clip.state is not None else None
        skip_before = skip.state.clone() if skip.state is not None else None
        skipped_before = opt.skipped_steps.item()
        params_before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        if t in spikes or t in nonfinite:
            assert bool(opt.last_skipped), t
            assert opt.skipped_steps.item() == skipped_before + 1, t
            assert torch.equal(clip.state, clip_before), t
            for p, b in zip(model.parameters(), params_before):
                assert torch.equal(p, b), t
            if t in nonfinite:
                assert torch.equal(skip.state, skip_before), t
            else:
                assert bool(skip.last_skipped) and not torch.equal(skip.state, skip_before), t
        else:
            assert not bool(opt.last_skipped), t
            assert clip_before is None or not torch.equal(clip.state, clip_before), t
    assert opt.skipped_steps.item() == len(spikes) + len(nonfinite)
    assert clip.step_count.item() == 100 - len(spikes) - len(nonfinite)
    assert skip.step_count.item() == 100 - len(nonfinite)


# ---------------------------------------------------------------------------------------------
# Resume

def _guards(name):
    if name == "zscore":
        return [steadystep.ZScoreClip(warmup_steps=10, max_grad_norm=None, mode="zscore")]
    if name == "percentile":
        return [steadystep.PercentileClip(0.8, 40)]
    return [steadystep.SpikeSkip(max_norm=100.0, z_thresh=3.0, window=16, warmup_steps=8),
            steadystep.ZScoreClip(warmup_steps=10, max_grad_norm=None)]


@pytest.mark.parametrize("via", ["state_dict", "torch.save"])
@pytest.mark.parametrize("name", ["zscore", "percentile", "skip+zscore"])
def test_resume_equals_uninterrupted(name, via):
    steps, cut = 300, 150
    m_whole, m_first = Holder(torch.float32), Holder(torch.float32)
    opt_whole = FusedAdamW(m_whole.parameters(), lr=LR, guard=_guards(name))
    opt = FusedAdamW(m_first.parameters(), lr=LR, guard=_guards(name))
    model = m_first
    for t, grads in enumerate(grad_sequence(torch.float32, steps=steps)):
        if t == cut:
            saved = {"model": model.state_dict(), "opt": opt.state_dict()}
            if via == "torch.save":
                buf = io.BytesIO()
                torch.save(saved, buf)
                buf.seek(0)
                saved = torch.load(buf, weights_only=True)
            else:
                saved = copy.deepcopy(saved)
            # The original goes on with other gradients: the saved state must be a copy.
            model.set_grads([g * 50 for g in grads])
            opt.step()
            model = Holder(torch.float32)
            model.load_state_dict(saved["model"])
            opt = FusedAdamW(model.parameters(), lr=LR, guard=_guards(name))
            opt.load_state_dict(saved["opt"])
        m_whole.set_grads(grads)
        model.set_grads(grads)
        opt_whole.step()
        opt.step()
        assert torch.equal(opt.last_grad_norm, opt_whole.last_grad_norm), t
        assert torch.equal(opt.last_clip_coef, opt_whole.last_clip_coef), t
        assert torch.equal(opt.last_skipped, opt_whole.last_skipped), t
        for a, b in zip(opt.guard, opt_whole.guard):
            assert torch.equal(a.state, b.state), t
    for p, q in zip(model.parameters(), m_whole.parameters()):
        assert torch.equal(p, q)
    assert_same_state(adam_state(opt), adam_state(opt_whole))
    assert torch.equal(opt.skipped_steps, opt_whole.skipped_steps)
    if name == "skip+zscore":
        assert opt.skipped_steps.item() >= 3  # the spikes at 200, 333, ... after the cut


# ---------------------------------------------------------------------------------------------
# Errors: refused before anything changes

def test_refused_configurations():
    model = Holder(torch.float32)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="at most one clip policy"):
        FusedAdamW(params, guard=[steadystep.ZScoreClip(), steadystep.PercentileClip()])
    with pytest.raises(ValueError, match="max_grad_norm must be None"):
        FusedAdamW(params, guard=steadystep.ZScoreClip(), max_grad_norm=1.0)
    with pytest.raises(ValueError, match="max_grad_norm must be None"):
        FusedSGD(params, guard=steadystep.PercentileClip(), max_grad_norm=1.0)
    with pytest.raises(ValueError, match="differentiable=True"):
        FusedAdamW(params, guard=steadystep.SpikeSkip(max_norm=1.0), differentiable=True)
    with pytest.raises(TypeError, match="guard must be a steadystep guard policy"):
        FusedAdamW(params, guard=torch.nn.utils.clip_grad_norm_)
    clip = steadystep.ZScoreClip()
    with pytest.raises(ValueError, match="same policy object"):
        FusedAdamW(params, guard=[clip, clip])
    # AGC with a GradScaler's scaled gradients: refused at the step, nothing changed.
    opt = FusedAdamW(params, lr=LR, guard=[steadystep.AdaptiveGradClip(), steadystep.SpikeSkip(max_norm=1e9)])
    model.set_grads(next(grad_sequence(torch.float32, steps=1)))
    grads_before = [p.grad.clone() for p in params]
    opt.grad_scale = torch.tensor(1024.0)  # what GradScaler.step sets before calling step
    opt.found_inf = torch.tensor(0.0)
    with pytest.raises(ValueError, match="GradScaler"):
        opt.step()
    for p, b, g in zip(params, before, grads_before):
        assert torch.equal(p, b) and torch.equal(p.grad, g)
    assert all(len(opt.state[p]) == 0 or opt.state[p]["step"].item() == 0 for p in params)
    assert opt.guard[1].state is None or opt.guard[1].step_count.item() == 0
    # A checkpoint of another guard does not load.
    del opt.grad_scale, opt.found_inf
    opt.step()
    other = FusedAdamW(params, lr=LR, guard=[steadystep.SpikeSkip(max_norm=1.0)])
    with pytest.raises(ValueError, match="guard of 2 policies"):
        other.load_state_dict(opt.state_dict())


# ---------------------------------------------------------------------------------------------
# torch.compile

def test_compiled_training_step_matches_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    model_c = copy.deepcopy(model)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    spike = torch.ones(64, 1)
    guards = [[steadystep.SpikeSkip(max_norm=50.0, z_thresh=None, window=4, warmup_steps=2),
               steadystep.ZScoreClip(warmup_steps=5, max_grad_norm=None)] for _ in range(2)]
    opt = FusedAdamW(model.parameters(), lr=1e-2, guard=guards[0])
    opt_c = FusedAdamW(model_c.parameters(), lr=1e-2, guard=guards[1])

    def train_step(m, o, scale):
        o.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x) * scale, y)
        loss.backward()
        o.step()
        return loss.detach(), o.last_grad_norm, o.last_clip_coef, o.last_skipped

    compiled = torch.compile(train_step)
    skipped = clipped = 0
    for t in range(25):
        scale = spike * (300.0 if t in (12, 20) else 5.0 if t in (8, 16) else 1.0)
        eager_out = train_step(model, opt, scale)
        compiled_out = compiled(model_c, opt_c, scale)
        # Inductor may fuse the forward/backward differently: fp32 rounding apart.
        torch.testing.assert_close(compiled_out[:3], eager_out[:3], rtol=1e-5, atol=1e-6)
        assert torch.equal(compiled_out[3], eager_out[3]), t
        skipped += bool(eager_out[3])
        clipped += bool(eager_out[2] < 1)
    assert skipped == 2 and clipped >= 1
    for p, q in zip(model_c.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert torch.equal(opt.skipped_steps, opt_c.skipped_steps)


# ---------------------------------------------------------------------------------------------
# CUDA: no host sync, CUDA graphs

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _cuda_guards():
    return [steadystep.SpikeSkip(max_norm=100.0, z_thresh=4.0, window=16, warmup_steps=8),
            steadystep.ZScoreClip(warmup_steps=5, max_grad_norm=None)]


@CUDA
@pytest.mark.parametrize("guard", ["zscore", "percentile", "skip+zscore", "agc"])
def test_cuda_guarded_step_has_no_host_sync(guard):
    model = Holder(torch.float32, "cuda")
    policies = {"zscore": [steadystep.ZScoreClip(warmup_steps=5)], "percentile": [steadystep.PercentileClip(0.9, 20)],
                "skip+zscore": _cuda_guards(), "agc": [steadystep.AdaptiveGradClip()]}[guard]
    opt = FusedAdamW(model.parameters(), lr=LR, guard=policies)
    seq = list(grad_sequence(torch.float32, steps=40, device="cuda"))
    model.set_grads(seq[0])
    opt.step()  # first step: states are created
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for grads in seq[1:]:
            for p, g in zip(model.parameters(), grads):
                p.grad.copy_(g)
            opt.step()
            _ = (opt.last_grad_norm, opt.last_clip_coef, opt.last_skipped, opt.skipped_steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert opt.last_grad_norm.is_cuda and opt.skipped_steps.is_cuda


@CUDA
def test_cuda_graph_captured_guarded_step_matches_eager():
    spikes = {12: 1e3, 20: 1e3, 27: 1e2}
    seq = list(grad_sequence(torch.float32, steps=40, spikes=spikes, device="cuda"))
    eager, graphed = Holder(torch.float32, "cuda"), Holder(torch.float32, "cuda")
    opt_e = FusedAdamW(eager.parameters(), lr=LR, guard=_cuda_guards())
    opt_g = FusedAdamW(graphed.parameters(), lr=LR, guard=_cuda_guards())
    for m in (eager, graphed):
        m.set_grads(seq[0])
    opt_e.step()
    # Warm up on a side stream (states, decisions and the skip counter created), then capture.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opt_g.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt_g.step()
    # The capture ran nothing: replay from step 1 with step 1's grads.
    for t, grads in enumerate(seq[1:], start=1):
        for p, q, g in zip(eager.parameters(), graphed.parameters(), grads):
            p.grad.copy_(g)
            q.grad.copy_(g)
        opt_e.step()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(opt_g.last_grad_norm, opt_e.last_grad_norm), t
        assert torch.equal(opt_g.last_skipped, opt_e.last_skipped), t
        for a, b in zip(opt_g.guard, opt_e.guard):
            assert torch.equal(a.state, b.state), t
        for p, q in zip(graphed.parameters(), eager.parameters()):
            assert torch.equal(p, q), t
    assert opt_g.skipped_steps.item() == opt_e.skipped_steps.item() >= len(spikes)


# ---------------------------------------------------------------------------------------------
# C++ and Python give the same sequence



@pytest.mark.parametrize("resume_at", [-1, 150], ids=["straight", "resumed"])
@pytest.mark.parametrize("name", ["zscore", "percentile", "skip+zscore"])
def test_cpp_optimizer_gives_the_same_sequence(name, resume_at):
    """tests/cpp/guard_driver.cpp runs steadystep::FusedAdam (AdamW) with the same policies
    (_guards) on the same gradients, optionally through torch::save / torch::load mid-run:
    norms, coefficients, skips, params and guard states equal bitwise (same ops, same kernels)."""
    driver = cpp_driver("_guard_driver")
    steps = 300
    seq = [[g.double() for g in grads] for grads in grad_sequence(torch.float32, steps=steps)]
    init = initial_params(torch.float32)
    got = driver.run([p.double().flatten().tolist() for p in init], [list(s) for s in SHAPES],
                     [[g.flatten().tolist() for g in grads] for grads in seq], name, resume_at)
    model = Holder(torch.float32)
    opt = FusedAdamW(model.parameters(), lr=LR, guard=_guards(name))
    decisions = []
    for grads in seq:
        model.set_grads([g.float() for g in grads])
        opt.step()
        decisions.append([opt.last_grad_norm.item(), opt.last_clip_coef.item(), float(opt.last_skipped)])
    assert torch.equal(torch.tensor(got["decisions"], dtype=torch.float64),
                       torch.tensor(decisions, dtype=torch.float64))
    for p, flat in zip(model.parameters(), got["params"]):
        assert torch.equal(p.detach().double().flatten(), torch.tensor(flat, dtype=torch.float64))
    for policy, flat in zip(opt.guard, got["guard_states"]):
        assert torch.equal(policy.state, torch.tensor(flat, dtype=torch.float64))
    assert got["skipped_steps"] == opt.skipped_steps.item()
    if name == "skip+zscore":
        assert got["skipped_steps"] >= 3
    else:
        assert sum(c < 1 for _, c, _ in decisions) >= 3


def test_agc_guard_with_a_real_grad_scaler():
    """GradScaler.step hands the scale to the step: AGC refuses it (ValueError) before anything
    changes; after scaler.unscale_(opt) (torch's recipe for clipping under AMP) the step runs and
    equals the unscaled run bitwise (the scale is a power of two: unscaling is exact)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref = copy.deepcopy(model)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    opt = FusedAdamW(model.parameters(), lr=LR, guard=steadystep.AdaptiveGradClip(0.05))
    opt_ref = FusedAdamW(ref.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"scaler.unscale_\(optimizer\)"):
        scaler.step(opt)
    for p, b, g in zip(model.parameters(), before, grads):
        assert torch.equal(p, b) and torch.equal(p.grad, g)
    for p in model.parameters():  # at most the fresh state of a first step (lazily created)
        assert all(not v.any() for v in opt.state[p].values())
    # torch's GradScaler.step leaves these behind when the step raises.
    del opt.grad_scale, opt.found_inf
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(5):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        opt_ref.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        steadystep.adaptive_clip_grad_(ref.parameters(), 0.05)
        opt_ref.step()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.equal(p, q)
    assert opt.skipped_steps.item() == 0
