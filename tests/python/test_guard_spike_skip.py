"""steadystep.SpikeSkip in the fused optimizers against a plain-Python oracle of its rule
(written here with torch.std_mean): skip when norm > max_norm, or, once the window holds
warmup_steps norms, when norm - mean > z_thresh * std over the last `window` norms (unbiased);
every finite norm enters the window. The op computes the window's statistics by masked sums in
fp64 (two passes), torch.std_mean by its own reduction: they agree to fp64 rounding (asserted to
1e-12 relative), and the decisions, which compare a norm ~30% away from any threshold, agree
exactly.
"""

import copy
import math
from collections import deque

import pytest
import torch

import steadystep

STEPS = 1000
SPIKES = (5, 60, 61, 333, 777)


def norms(steps=STEPS, shift_at=500):
    """A wandering norm around 2, spikes x1e3, and a lasting doubling from `shift_at` on."""
    out = []
    for t in range(steps):
        n = 2.0 * math.exp(0.3 * math.sin(0.7 * t) + 0.1 * math.cos(2.3 * t))
        if t in SPIKES:
            n *= 1e3
        if t >= shift_at:
            n *= 2.0
        out.append(float(torch.tensor(n, dtype=torch.float32)))
    return out


class Oracle:
    def __init__(self, max_norm=None, z_thresh=6.0, window=128, warmup_steps=64):
        self.max_norm, self.z_thresh, self.warmup = max_norm, z_thresh, warmup_steps
        self.window = deque(maxlen=window)
        self.mean = self.std = 0.0

    def step(self, n):
        skip = self.max_norm is not None and n > self.max_norm
        if len(self.window) >= 2:
            std, mean = torch.std_mean(torch.tensor(list(self.window), dtype=torch.float64))
            self.mean, self.std = mean.item(), std.item()
        elif len(self.window) == 1:
            self.mean, self.std = self.window[0], 0.0
        if self.z_thresh is not None and len(self.window) >= self.warmup:
            skip = skip or (n - self.mean) > self.z_thresh * self.std
        if math.isfinite(n):
            self.window.append(n)
        return skip


CONFIGS = [
    dict(),
    dict(z_thresh=3.0, window=16, warmup_steps=4),
    dict(z_thresh=None, max_norm=100.0),
    dict(max_norm=1e3, z_thresh=2.0, window=8, warmup_steps=8),
    dict(z_thresh=4.0, window=300, warmup_steps=2),  # window longer than the shift's remainder
]


def one_param_step(opt, p, n):
    p.grad = torch.full((1,), n)
    opt.step()


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_matches_oracle(cfg, optim):
    skip = steadystep.SpikeSkip(**cfg)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = (steadystep.optim.FusedSGD([p], lr=0.1, momentum=0.9, guard=skip) if optim == "sgd"
           else steadystep.optim.FusedAdamW([p], lr=0.1, guard=skip))
    oracle = Oracle(**cfg)
    skips = []
    for t, n in enumerate(norms()):
        before_p = p.detach().clone()
        before_state = copy.deepcopy(opt.state_dict()["state"])
        one_param_step(opt, p, n)
        want = oracle.step(n)
        assert bool(skip.last_skipped) == want, t
        assert bool(opt.last_skipped) == want, t
        assert skip.last_norm.item() == n
        assert skip.mean.item() == pytest.approx(oracle.mean, rel=1e-12, abs=1e-300), t
        assert skip.std.item() == pytest.approx(oracle.std, rel=1e-12, abs=1e-300), t
        if want:  # bit-identical params and state, step not advanced
            assert torch.equal(p.detach(), before_p), t
            after = opt.state_dict()["state"]
            for k in before_state:
                for name, v in before_state[k].items():
                    assert torch.equal(torch.as_tensor(after[k][name]), torch.as_tensor(v)), (t, name)
        else:
            assert not torch.equal(p.detach(), before_p), t
        skips.append(want)
    assert int(opt.skipped_steps) == sum(skips)
    assert skip.step_count.item() == STEPS
    for t in SPIKES:
        if cfg.get("max_norm") is not None or t >= cfg.get("warmup_steps", 64):
            assert skips[t], t
    # Anti-stall: the doubled norm from step 500 on is the window's normal once it fills it.
    window = cfg.get("window", 128)
    assert sum(skips[500 + window:]) < (500 - window) / 4 if window < 500 else True


def test_no_stall_without_window_update_would_stall():
    """The anti-stall property itself: a lasting x10 shift is skipped for a while, then not,
    where a window that kept only accepted norms would skip every later step."""
    skip = steadystep.SpikeSkip(z_thresh=3.0, window=16, warmup_steps=8)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = steadystep.optim.FusedSGD([p], lr=0.1, guard=skip)
    skips = []
    for t in range(200):
        n = (1.0 + 0.1 * math.sin(t)) * (10.0 if t >= 100 else 1.0)
        one_param_step(opt, p, n)
        skips.append(bool(opt.last_skipped))
    assert skips[100]  # the shift is an outlier at first
    assert not any(skips[100 + 16:])  # and the window's normal once it fills the window


def test_non_finite_norm_is_skipped_and_not_in_the_window():
    skip = steadystep.SpikeSkip(z_thresh=3.0, window=4, warmup_steps=2)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = steadystep.optim.FusedSGD([p], lr=0.1, guard=skip)
    for n in (1.0, 1.1, 0.9):
        one_param_step(opt, p, n)
    state = skip.state.clone()
    one_param_step(opt, p, float("nan"))
    assert bool(opt.last_skipped) and int(opt.skipped_steps) == 1
    assert torch.equal(skip.state[5:], state[5:]) and skip.step_count.item() == 3


def test_resume_equals_uninterrupted():
    cfg = dict(z_thresh=3.0, window=16, warmup_steps=4)

    def make():
        p = torch.nn.Parameter(torch.zeros(1))
        return p, steadystep.optim.FusedAdamW([p], lr=0.1, guard=steadystep.SpikeSkip(**cfg))

    p_whole, whole = make()
    p_first, first = make()
    seq = norms(300, shift_at=150)
    for n in seq[:120]:
        one_param_step(whole, p_whole, n)
        one_param_step(first, p_first, n)
    saved = copy.deepcopy(first.state_dict())
    p_res, resumed = make()
    with torch.no_grad():
        p_res.copy_(p_first)
    resumed.load_state_dict(saved)
    for t, n in enumerate(seq[120:]):
        one_param_step(whole, p_whole, n)
        one_param_step(resumed, p_res, n)
        assert torch.equal(p_res, p_whole), t
        assert torch.equal(resumed.guard[0].state, whole.guard[0].state), t
    assert int(resumed.skipped_steps) == int(whole.skipped_steps)


def test_options_checked():
    with pytest.raises(ValueError, match="max_norm or z_thresh must be given"):
        steadystep.SpikeSkip(z_thresh=None)
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        steadystep.SpikeSkip(window=1, warmup_steps=1)
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[2, window=8\]"):
        steadystep.SpikeSkip(window=8, warmup_steps=9)
    with pytest.raises(ValueError, match="warmup_steps"):
        steadystep.SpikeSkip(warmup_steps=1)
    s = steadystep.SpikeSkip(max_norm=5.0, z_thresh=None, window=2, warmup_steps=2)
    assert s.state_dict() == {"max_norm": 5.0, "z_thresh": None, "window": 2, "warmup_steps": 2, "state": None}
