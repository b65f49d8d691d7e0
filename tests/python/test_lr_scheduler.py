"""steadystep.lr_scheduler against torch.optim.lr_scheduler itself (and the formulas of the
extra schedules, written here independently)."""

import copy
import io
import math
import random
import re
import warnings

import pytest
import torch

import steadystep
from scheduler_cases import BASE_LRS, TORCH, build, make_optimizer, parity_cases, run
from steadystep import lr_scheduler as ss

CASES = parity_cases(seed=0)
IDS = [f"{i:02d}-{c.name}" for i, c in enumerate(CASES)]


def assert_rows_close(ours, theirs, rel=1e-10):
    # The promise: relative 1e-10 (an absolute floor of 1e-12 where a value crosses 0).
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for col, (x, y) in enumerate(zip(a, b)):
            assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-12), (step, col, x, y)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parity_with_torch_over_10000_steps(case):
    assert_rows_close(run(case, ss), run(case, TORCH))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parity_with_torch_other_random_arguments(seed):
    for case in parity_cases(seed):
        assert_rows_close(run(case, ss, steps=1500), run(case, TORCH, steps=1500))


def test_sequences_are_bit_identical():
    # Same libm, same order of operations: not just close, the same doubles.
    for case in parity_cases(seed=4):
        assert run(case, ss, steps=2000) == run(case, TORCH, steps=2000), case.name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_is_the_torch_class(case):
    opt = make_optimizer(case.optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = build(case.spec, ss, opt)
        theirs_cls = type(build(case.spec, TORCH, make_optimizer(case.optimizer)))
    assert isinstance(ours, theirs_cls) and isinstance(ours, torch.optim.lr_scheduler.LRScheduler)


def step(case, sched, i):
    if case.step_values is None:
        sched.step()
    else:
        sched.step(case.step_values[i])


def _resume(case, src_module, dst_module, k, n):
    """Run `k` steps with src, checkpoint (scheduler + optimizer, through torch.save), rebuild
    with dst, load, run to `n`: the rows after the checkpoint."""
    opt = make_optimizer(case.optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(case.spec, src_module, opt)
        for i in range(k):
            opt.step()
            step(case, sched, i)
        buffer = io.BytesIO()
        torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=False)
        opt2 = make_optimizer(case.optimizer)
        sched2 = build(case.spec, dst_module, opt2)  # the scheduler first, as torch's docs say
        opt2.load_state_dict(checkpoint["opt"])
        sched2.load_state_dict(checkpoint["sched"])
        rows = []
        for i in range(k, n):
            opt2.step()
            step(case, sched2, i)
            rows.append([float(g["lr"]) for g in opt2.param_groups])
    return rows


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_resumes_mid_run(case):
    full = [row[: len(BASE_LRS)] for row in run(case, ss, steps=600)]
    assert_rows_close(_resume(case, ss, ss, 237, 600), full[238:])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_cross_loads_with_torch(case):
    full = [row[: len(BASE_LRS)] for row in run(case, TORCH, steps=500)]
    assert_rows_close(_resume(case, TORCH, ss, 211, 500), full[212:])
    assert_rows_close(_resume(case, ss, TORCH, 211, 500), full[212:])


# ---- the extra schedules, against their formulas written out here -------------------------


def lrs_of(make, steps, lrs=BASE_LRS):
    opt = make_optimizer(lrs=lrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        out = [[g["lr"] for g in opt.param_groups]]
        for _ in range(steps):
            opt.step()
            sched.step()
            out.append([g["lr"] for g in opt.param_groups])
    return out


def hf_cosine_with_warmup(t, warmup, total):
    # transformers.get_cosine_schedule_with_warmup's factor (num_cycles=0.5)
    if t < warmup:
        return float(t) / float(max(1, warmup))
    progress = float(t - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def hf_wsd(t, warmup, stable, decay, decay_type, min_ratio):
    # transformers.get_wsd_schedule's factor (linear warmup, num_cycles=0.5)
    if t < warmup:
        return max(0.0, float(t) / float(max(1, warmup)) * (1.0 - min_ratio) + min_ratio)
    if t < warmup + stable:
        return 1.0
    if t < warmup + stable + decay:
        p = float(t - warmup - stable) / float(max(1, decay))
        f = {"linear": 1.0 - p, "cosine": 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * p)), "1-sqrt": 1.0 - math.sqrt(p)}
        return max(0.0, f[decay_type] * (1.0 - min_ratio) + min_ratio)
    return min_ratio


def hf_inverse_sqrt(t, warmup, timescale):
    if timescale is None:
        timescale = warmup or 10_000
    if t < warmup:
        return float(t) / float(max(1, warmup))
    return 1.0 / math.sqrt((t + timescale - warmup) / timescale)


@pytest.mark.parametrize("seed", range(4))
def test_warmup_cosine_equals_transformers_formula(seed):
    r = random.Random(seed)
    warmup, total = r.randint(0, 200), r.randint(200, 3000)
    got = lrs_of(lambda o: ss.WarmupCosineLR(o, warmup, total), total)
    for t, row in enumerate(got):
        for base, lr in zip(BASE_LRS, row):
            assert math.isclose(lr, base * hf_cosine_with_warmup(t, warmup, total), rel_tol=1e-12, abs_tol=1e-15)


def test_warmup_cosine_start_factor_eta_min_and_tail():
    got = lrs_of(lambda o: ss.WarmupCosineLR(o, 10, 100, warmup_start_factor=0.1, eta_min=1e-3), 150)
    assert got[0] == pytest.approx([b * 0.1 for b in BASE_LRS], rel=1e-12)
    assert got[10] == pytest.approx(list(BASE_LRS), rel=1e-12)
    mid = [1e-3 + (b - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.5)) for b in BASE_LRS]
    assert got[55] == pytest.approx(mid, rel=1e-12)
    assert all(row == pytest.approx([1e-3] * 3) for row in got[100:])


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
def test_wsd_equals_transformers_formula(decay_type):
    r = random.Random(decay_type)
    for _ in range(3):
        warmup, stable, decay = r.randint(0, 100), r.randint(0, 300), r.randint(1, 300)
        ratio = r.choice([0.0, r.uniform(0, 0.5)])
        n = warmup + stable + decay + 50
        got = lrs_of(lambda o: ss.WarmupStableDecayLR(o, warmup, stable, decay, ratio, ratio, decay_type), n)
        for t, row in enumerate(got):
            f = hf_wsd(t, warmup, stable, decay, decay_type, ratio)
            assert row == pytest.approx([b * f for b in BASE_LRS], rel=1e-12, abs=1e-15), t


@pytest.mark.parametrize("warmup,timescale", [(0, None), (100, None), (50, 500), (1, 3)])
def test_inverse_sqrt_equals_transformers_formula(warmup, timescale):
    got = lrs_of(lambda o: ss.InverseSqrtLR(o, warmup, timescale), 3000)
    for t, row in enumerate(got):
        assert row == pytest.approx([b * hf_inverse_sqrt(t, warmup, timescale) for b in BASE_LRS], rel=1e-12)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_formula(staircase):
    rate, steps, floor = 0.5, 37, 0.01
    got = lrs_of(lambda o: ss.ExponentialDecayLR(o, rate, steps, staircase, floor), 1000)
    for t, row in enumerate(got):
        e = t // steps if staircase else t / steps
        assert row == pytest.approx([max(b * rate**e, floor) for b in BASE_LRS], rel=1e-12)


def test_bounded_lr_clamps_any_scheduler():
    got = lrs_of(lambda o: ss.BoundedLR(ss.ExponentialLR(o, 0.9), 0.01, 0.5), 200)
    assert got[0] == [0.1, 0.03, 0.5]  # clamped at construction
    for t, row in enumerate(got):
        want = [min(max(b * 0.9**t, 0.01), 0.5) for b in (0.1, 0.03, 0.5)]
        assert row == pytest.approx(want, rel=1e-12)
    cyc = lrs_of(lambda o: ss.BoundedLR(ss.CyclicLR(o, 0.001, 1.0, 20, cycle_momentum=False), 0.01, 0.2), 100)
    assert all(0.01 <= lr <= 0.2 for row in cyc for lr in row)
    assert max(lr for row in cyc for lr in row) == 0.2 and min(lr for row in cyc for lr in row) == 0.01


def splitmix_draw(seed, index, lo, hi, log_uniform):
    # The documented draw of RandomLR, written out in Python: two splitmix64 rounds.
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + index) & mask
    for _ in range(2):
        z = (z + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z = z ^ (z >> 31)
    u = (z >> 11) * 2.0**-53
    if log_uniform:
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


@pytest.mark.parametrize("log_uniform", [True, False])
def test_random_lr_is_the_seeded_sequence(log_uniform):
    seq = lrs_of(lambda o: ss.RandomLR(o, 1e-4, 1e-1, period=3, log_uniform=log_uniform, seed=42), 300)
    for t, row in enumerate(seq):
        want = splitmix_draw(42, t // 3, 1e-4, 1e-1, log_uniform)
        assert row == [want] * 3
        assert 1e-4 <= row[0] <= 1e-1
    assert seq == lrs_of(lambda o: ss.RandomLR(o, 1e-4, 1e-1, period=3, log_uniform=log_uniform, seed=42), 300)
    other = lrs_of(lambda o: ss.RandomLR(o, 1e-4, 1e-1, period=3, log_uniform=log_uniform, seed=43), 300)
    assert other != seq


def test_random_lr_resumes_from_state_dict():
    full = lrs_of(lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=7), 100)
    opt = make_optimizer()
    sched = ss.RandomLR(opt, 1e-3, 1.0, seed=7)
    for _ in range(40):
        sched.step()
    state = copy.deepcopy(sched.state_dict())
    opt2 = make_optimizer()
    sched2 = ss.RandomLR(opt2, 1e-3, 1.0, seed=0)
    sched2.load_state_dict(state)
    rest = []
    for _ in range(60):
        sched2.step()
        rest.append([g["lr"] for g in opt2.param_groups])
    assert rest == full[41:]


def test_extras_resume_mid_run():
    makers = [
        lambda o: ss.WarmupCosineLR(o, 20, 300, 0.1, 1e-4),
        lambda o: ss.WarmupStableDecayLR(o, 20, 100, 150, 0.0, 0.1, "1-sqrt"),
        lambda o: ss.InverseSqrtLR(o, 30),
        lambda o: ss.ExponentialDecayLR(o, 0.7, 13, True, 1e-3),
        lambda o: ss.BoundedLR(ss.ExponentialLR(o, 0.97), 0.005, 0.5),
    ]
    for make in makers:
        full = lrs_of(make, 300)
        opt = make_optimizer()
        sched = make(opt)
        for _ in range(120):
            sched.step()
        state, opt_state = copy.deepcopy(sched.state_dict()), copy.deepcopy(opt.state_dict())
        opt2 = make_optimizer()
        sched2 = make(opt2)
        opt2.load_state_dict(opt_state)
        sched2.load_state_dict(state)
        rest = []
        for _ in range(180):
            sched2.step()
            rest.append([g["lr"] for g in opt2.param_groups])
        assert rest == full[121:]


def test_extras_compose_with_sequential_and_chained():
    opt = make_optimizer()
    seq = ss.SequentialLR(opt, [ss.WarmupCosineLR(opt, 10, 100), ss.InverseSqrtLR(opt, 0, 50)], [100])
    lrs = []
    for _ in range(200):
        seq.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[98] < 1e-3 and lrs[99] == pytest.approx(0.1)  # restart at the milestone
    opt = make_optimizer()
    chained = ss.ChainedScheduler([ss.WarmupCosineLR(opt, 10, 100), ss.ExponentialLR(opt, 0.99)])
    chained.step()
    assert opt.param_groups[0]["lr"] > 0


# ---- bad input: PyTorch's errors (or clearer ones), raised before anything changes ---------

BAD = [
    (lambda o: ss.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: ss.CosineAnnealingLR(o, -5), ValueError, "T_max"),
    (lambda o: ss.StepLR(o, 0), ValueError, "step_size"),
    (lambda o: ss.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: ss.LinearLR(o, start_factor=0.0), ValueError, "factor"),
    (lambda o: ss.LinearLR(o, end_factor=2.0), ValueError, "factor"),
    (lambda o: ss.LambdaLR(o, [lambda e: 1.0]), ValueError, "lr_lambdas"),
    (lambda o: ss.CosineAnnealingWarmRestarts(o, 0), ValueError, "T_0"),
    (lambda o: ss.CosineAnnealingWarmRestarts(o, 5, 0), ValueError, "T_mult"),
    (lambda o: ss.CyclicLR(o, 0.1, 1.0, mode="sawtooth"), ValueError, "mode"),
    (lambda o: ss.CyclicLR(o, [0.1, 0.2], 1.0), ValueError, "base_lr"),
    (lambda o: ss.OneCycleLR(o, 0.1), ValueError, "total_steps"),
    (lambda o: ss.OneCycleLR(o, 0.1, total_steps=100, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: ss.OneCycleLR(o, 0.1, total_steps=100, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda o: ss.ReduceLROnPlateau(o, factor=1.0), ValueError, "actor"),
    (lambda o: ss.ReduceLROnPlateau(o, mode="median"), ValueError, "mode"),
    (lambda o: ss.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "min_lr"),
    (lambda o: ss.SWALR(o, 0.05, anneal_epochs=-1), ValueError, "anneal_epochs"),
    (lambda o: ss.SequentialLR(o, [ss.StepLR(o, 5), ss.StepLR(o, 5)], [3, 4]), ValueError, "milestone"),
    (lambda o: ss.WarmupCosineLR(o, 100, 50), ValueError, "total_steps"),
    (lambda o: ss.WarmupCosineLR(o, 10, 50, warmup_start_factor=1.5), ValueError, "warmup_start_factor"),
    (lambda o: ss.WarmupStableDecayLR(o, 10, 10, 10, decay_type="exp"), ValueError, "decay_type"),
    (lambda o: ss.WarmupStableDecayLR(o, -1, 10, 10), ValueError, "warmup_steps"),
    (lambda o: ss.InverseSqrtLR(o, -3), ValueError, "warmup_steps"),
    (lambda o: ss.ExponentialDecayLR(o, 0.5, 0), ValueError, "decay_steps"),
    (lambda o: ss.RandomLR(o, 0.1, 0.01), ValueError, "min_lr"),
    (lambda o: ss.RandomLR(o, 0.0, 0.01), ValueError, "min_lr"),
    (lambda o: ss.RandomLR(o, 0.01, 0.1, period=0), ValueError, "period"),
    (lambda o: ss.BoundedLR(ss.StepLR(o, 5), 0.5, 0.1), ValueError, "min_lr"),
]


def _snapshot(opt):
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("make,exc,word", BAD, ids=range(len(BAD)))
def test_bad_input_raises_and_changes_nothing(make, exc, word):
    opt = make_optimizer()
    if "SequentialLR" in repr(make.__code__.co_names) or "BoundedLR" in make.__code__.co_names:
        before = None  # the inner schedulers are built (and step) before the error, as in torch
    else:
        before = _snapshot(opt)
    with pytest.raises(exc, match=word):
        make(opt)
    if before is not None:
        assert _snapshot(opt) == before


def test_cycle_momentum_needs_momentum():
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    for make in [lambda: ss.CyclicLR(opt, 0.01, 0.1), lambda: ss.OneCycleLR(opt, 0.1, total_steps=10)]:
        with pytest.raises(ValueError, match="momentum"):
            make()
    ss.CyclicLR(opt, 0.01, 0.1, cycle_momentum=False).step()


def test_version():
    assert steadystep.__version__.count(".") == 2


# ---- arguments PyTorch accepts: integral floats and other real numbers (issue 11, item 15) ----


def _both(make_ours, make_theirs, steps=40, epochs=None, lrs=BASE_LRS):
    """lrs of ours and torch's after construction and each step (or each step(epoch))."""
    out = []
    for make in (make_ours, make_theirs):
        opt = make_optimizer(lrs=lrs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = make(opt)
            rows = [[g["lr"] for g in opt.param_groups]]
            for i in range(steps):
                opt.step()
                sched.step() if epochs is None else sched.step(epochs[i])
                rows.append([float(g["lr"]) for g in opt.param_groups])
        out.append(rows)
    return out


REAL_ARGS = [
    ("StepLR", (5.0,), {}),
    ("StepLR", (2.5, 0.5), {}),
    ("StepLR", (True,), {}),
    ("MultiStepLR", ([2.0, 5.0],), {}),
    ("MultiStepLR", ((m for m in [2.5, 4, 4.0, 7]), 0.5), {}),
    ("ConstantLR", (0.5, 4.0), {}),
    ("ConstantLR", (0.5, 3.5), {}),
    ("LinearLR", (), {"total_iters": 4.0}),
    ("LinearLR", (0.2, 0.9, 3.5), {}),
    ("PolynomialLR", (8.0,), {}),
    ("PolynomialLR", (7.5, 2.0), {}),
    ("CosineAnnealingLR", (10.0,), {}),
]


@pytest.mark.parametrize("name,args,kwargs", REAL_ARGS, ids=range(len(REAL_ARGS)))
def test_real_number_arguments_give_torchs_sequence(name, args, kwargs):
    for epochs in (None, [0, 3, 4, 4, 9, 2, 7, 8, 30, 5]):
        a = list(args[0]) if args and not isinstance(args[0], (list, float, int, torch.Tensor)) else None
        fresh = (lambda: (a,) + tuple(args[1:])) if a is not None else (lambda: args)
        ours, theirs = _both(lambda o: getattr(ss, name)(o, *fresh(), **kwargs),
                             lambda o: getattr(TORCH, name)(o, *fresh(), **kwargs),
                             steps=10 if epochs else 40, epochs=epochs)
        assert ours == theirs, (name, epochs)


NOT_NUMBERS = [
    (lambda o: ss.StepLR(o, "5"), "step_size"),
    (lambda o: ss.StepLR(o, None), "step_size"),
    (lambda o: ss.StepLR(o, 5, gamma="0.1"), "gamma"),
    (lambda o: ss.MultiStepLR(o, ["2", 5]), "milestones"),
    (lambda o: ss.ConstantLR(o, 0.5, "4"), "total_iters"),
    (lambda o: ss.LinearLR(o, total_iters=None), "total_iters"),
    (lambda o: ss.PolynomialLR(o, "8"), "total_iters"),
    (lambda o: ss.PolynomialLR(o, 8, power=[1.0]), "power"),
    (lambda o: ss.ExponentialLR(o, "0.9"), "gamma"),
    (lambda o: ss.CosineAnnealingLR(o, "10"), "T_max"),
]


@pytest.mark.parametrize("make,word", NOT_NUMBERS, ids=range(len(NOT_NUMBERS)))
def test_non_numbers_raise_type_error_before_touching_the_optimizer(make, word):
    opt = make_optimizer()
    before = _snapshot(opt)
    with pytest.raises(TypeError, match=word):
        make(opt)
    assert _snapshot(opt) == before  # no initial_lr written


def test_value_errors_keep_torchs_messages():
    opt = make_optimizer()
    for make, theirs in [
        (lambda o: ss.ConstantLR(o, factor=1.5), "Constant multiplicative factor expected to be between 0 and 1."),
        (lambda o: ss.LinearLR(o, start_factor=0.0), "Starting multiplicative factor expected to be greater than 0"),
        (lambda o: ss.LinearLR(o, end_factor=1.5), "Ending multiplicative factor expected to be between 0 and 1."),
    ]:
        with pytest.raises(ValueError, match=theirs):
            make(opt)
    assert _snapshot(opt) == _snapshot(make_optimizer())


# ---- BoundedLR inside SequentialLR (item 16) --------------------------------------------------


def test_bounded_lr_restarts_inside_sequential_lr_as_torch_restarts_its_scheduler():
    # Wide bounds: the sequence is torch's SequentialLR over the unwrapped scheduler.
    def make(mod, bounded):
        def build_it(o):
            inner = mod.ExponentialLR(o, 0.5)
            return mod.SequentialLR(o, [mod.LinearLR(o, 0.4, total_iters=2),
                                        ss.BoundedLR(inner, 0.0, 10.0) if bounded else inner], [2])
        return build_it

    ours, theirs = _both(make(ss, True), make(TORCH, False), steps=12, lrs=(0.1,))
    assert [round(r[0], 12) for r in ours[:5]] == [0.04, 0.07, 0.1, 0.05, 0.025]
    assert ours == theirs
    ours, theirs = _both(make(ss, True), make(TORCH, False), steps=60)
    assert ours == theirs


def test_bounded_lr_first_in_sequential_lr_takes_the_construction_step_of_its_scheduler():
    def make(mod, bounded):
        def build_it(o):
            inner = mod.LinearLR(o, 0.25, total_iters=4)
            first = ss.BoundedLR(inner, 0.0, 10.0) if bounded else inner
            return mod.SequentialLR(o, [first, mod.StepLR(o, 3, 0.5)], [6])
        return build_it

    ours, theirs = _both(make(ss, True), make(TORCH, False), steps=30)
    assert ours == theirs


def test_bounded_lr_inside_sequential_lr_clamps_the_restarted_schedule():
    opt = make_optimizer(lrs=(0.1,))
    seq = ss.SequentialLR(opt, [ss.ConstantLR(opt, 0.5, total_iters=3),
                                ss.BoundedLR(ss.ExponentialLR(opt, 0.5), 0.02, 0.08)], [3])
    got = [opt.param_groups[0]["lr"]]
    for _ in range(7):
        opt.step()
        seq.step()
        got.append(opt.param_groups[0]["lr"])
    # restart at the milestone: base 0.1 clamped to 0.08, then halved from the clamped value
    assert got == pytest.approx([0.05, 0.05, 0.05, 0.08, 0.04, 0.02, 0.02, 0.02], rel=1e-15)
    state = copy.deepcopy(seq.state_dict())
    opt2 = make_optimizer(lrs=(0.1,))
    seq2 = ss.SequentialLR(opt2, [ss.ConstantLR(opt2, 0.5, total_iters=3),
                                  ss.BoundedLR(ss.ExponentialLR(opt2, 0.5), 0.02, 0.08)], [3])
    seq2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    seq.step()
    seq2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# ---- ReduceLROnPlateau with a param group added (item 17) -------------------------------------


def _plateau_state(s):
    return {k: s.__dict__[k] for k in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "min_lrs")}


@pytest.mark.parametrize("min_lr", [0.0, [1e-5, 1e-4]])
def test_plateau_with_an_added_param_group_fails_or_follows_as_torch(min_lr):
    results = []
    for mod in (ss, TORCH):
        opt = make_optimizer(lrs=(0.5, 0.4))
        sched = mod.ReduceLROnPlateau(opt, patience=1, cooldown=1, min_lr=min_lr)
        log = []
        for i, metric in enumerate([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.1, 1.2]):
            if i == 2:
                opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.3})
            try:
                sched.step(metric)
                log.append(("ok", [g["lr"] for g in opt.param_groups], _plateau_state(sched)))
            except RuntimeError as e:
                log.append(("error", str(e), _plateau_state(sched)))
        results.append(log)
    assert results[0] == results[1]
    if isinstance(min_lr, list):
        assert results[0][3][0] == "error"
        assert results[0][3][1].startswith(
            "The number of param groups in the `optimizer` (3) differs from when `ReduceLROnPlateau` was "
            "initialized (2), usually due to a new param group"
        )


# ---- OneCycleLR from a legacy state (item 18) -------------------------------------------------


@pytest.mark.parametrize("legacy", ["cos", "linear", "custom"])
def test_one_cycle_lr_from_a_legacy_state_dict(legacy):
    fns = {"cos": ss.OneCycleLR._annealing_cos, "linear": ss.OneCycleLR._annealing_linear,
           "custom": lambda start, end, pct: start + (end - start) * pct**2}
    rows = []
    for mod in (ss, TORCH):
        opt = make_optimizer()
        sched = mod.OneCycleLR(opt, 1.0, total_steps=50, anneal_strategy="linear" if legacy == "cos" else "cos")
        delattr(sched, "_anneal_func_type")
        state = sched.state_dict()
        state["anneal_func"] = fns[legacy]
        sched.load_state_dict(state)
        got = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(49):
                opt.step()
                sched.step()
                got.append([g["lr"] for g in opt.param_groups] + [g["momentum"] for g in opt.param_groups])
        rows.append(got)
    assert rows[0] == rows[1]


# ---- a subclass's override of PyTorch's hooks (item 19) ---------------------------------------


def _subclassed(base, **methods):
    return type(f"My{base.__name__}", (base,), methods)


HOOKED = [
    ("OneCycleLR", {"_anneal_func": lambda self, a, b, pct: a + (b - a) * pct**3}, (1.0,), {"total_steps": 60}),
    ("OneCycleLR", {"_annealing_cos": staticmethod(lambda a, b, pct: b + (a - b) * (1 - pct))}, (1.0,),
     {"total_steps": 60}),
    ("CyclicLR", {"scale_fn": lambda self, x: 1.0 / (1.0 + x)}, (0.01, 0.1, 7), {}),
    ("CyclicLR", {"_triangular2_scale_fn": staticmethod(lambda x: 0.9**x)}, (0.01, 0.1, 7),
     {"mode": "triangular2"}),
    ("SWALR", {"_cosine_anneal": staticmethod(lambda t: t**2)}, (0.05, 7), {}),
    ("LambdaLR", {"get_lr": lambda self: [0.5 * lr for lr in self.base_lrs]}, (lambda e: 1.0,), {}),
    ("StepLR", {"get_lr": lambda self: [lr * 0.99 for lr in self.base_lrs]}, (3,), {}),
]


@pytest.mark.parametrize("name,methods,args,kwargs", HOOKED, ids=[f"{h[0]}-{next(iter(h[1]))}" for h in HOOKED])
def test_a_subclass_override_of_a_torch_hook_counts(name, methods, args, kwargs):
    for epochs in (None, [0, 5, 5, 9, 2, 11, 30]):
        ours, theirs = _both(lambda o: _subclassed(getattr(ss, name), **methods)(o, *args, **kwargs),
                             lambda o: _subclassed(getattr(TORCH, name), **methods)(o, *args, **kwargs),
                             steps=7 if epochs else 50, epochs=epochs)
        assert ours == theirs
    # and the override changed the result (the test is not vacuous)
    plain, _ = _both(lambda o: getattr(ss, name)(o, *args, **kwargs), lambda o: getattr(TORCH, name)(o, *args, **kwargs))
    assert plain != ours


@pytest.mark.parametrize("hook", ["_reduce_lr", "_is_better"])
def test_a_plateau_subclass_override_counts(hook):
    methods = {
        "_reduce_lr": lambda self, epoch: [g.__setitem__("lr", g["lr"] * 0.5) for g in self.optimizer.param_groups],
        "_is_better": lambda self, a, best: a > best if best != math.inf else True,
    }
    metrics = [math.sin(i / 3) + 2 for i in range(60)]
    ours, theirs = _both(lambda o: _subclassed(ss.ReduceLROnPlateau, **{hook: methods[hook]})(o, patience=2),
                         lambda o: _subclassed(TORCH.ReduceLROnPlateau, **{hook: methods[hook]})(o, patience=2),
                         steps=60, epochs=metrics)
    assert ours == theirs
    plain, _ = _both(lambda o: ss.ReduceLROnPlateau(o, patience=2), lambda o: TORCH.ReduceLROnPlateau(o, patience=2),
                     steps=60, epochs=metrics)
    assert plain != ours


def test_closed_form_exists_where_torchs_does():
    for name in ["LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                 "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR", "SWALR"]:
        assert hasattr(getattr(ss, name), "_get_closed_form_lr") == hasattr(getattr(TORCH, name), "_get_closed_form_lr")


def test_plain_classes_keep_the_cpp_path(monkeypatch):
    # Without an override, torch's Python math never runs (it would raise here).
    def refuse(*a, **k):
        raise AssertionError("torch's Python path ran")

    for cls in (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR, swa_utils_SWALR()):
        monkeypatch.setattr(cls, "get_lr", refuse)
    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", refuse)
    opt = make_optimizer()
    for sched in [ss.OneCycleLR(opt, 1.0, total_steps=20), ss.CyclicLR(opt, 0.01, 0.1, 3), ss.SWALR(opt, 0.05, 3)]:
        for _ in range(10):
            sched.step()
    plateau = ss.ReduceLROnPlateau(opt, patience=0)
    for m in [1.0, 2.0, 3.0]:
        plateau.step(m)


def swa_utils_SWALR():
    from torch.optim import swa_utils

    return swa_utils.SWALR


# ---- RandomLR's seed and bounds, lr_lambda results (item 20) ----------------------------------


def test_random_lr_seed_follows_torch_manual_seed():
    a = lrs_of(lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=-1), 30)
    assert a == lrs_of(lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=2**64 - 1), 30)
    assert a == lrs_of(lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=torch.tensor(-1).item()), 30)


RANDOM_BAD = [
    (lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=2**64), ValueError, "seed"),
    (lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=-(2**63) - 1), ValueError, "seed"),
    (lambda o: ss.RandomLR(o, 1e-3, 1.0, seed=1.5), TypeError, "seed"),
    (lambda o: ss.RandomLR(o, 1e-3, 1.0, seed="7"), TypeError, "seed"),
    (lambda o: ss.RandomLR(o, 1e-3, math.inf), ValueError, "max_lr"),
    (lambda o: ss.RandomLR(o, 1e-3, math.nan), ValueError, "max_lr"),
    (lambda o: ss.RandomLR(o, math.nan, 1.0), ValueError, "min_lr"),
    (lambda o: ss.RandomLR(o, 1e-3, 1.0, period=2.5), TypeError, "period"),
    (lambda o: ss.RandomLR(o, "1e-3", 1.0), TypeError, "min_lr"),
    (lambda o: ss.WarmupCosineLR(o, 2.5, 10), TypeError, "warmup_steps"),
    (lambda o: ss.BoundedLR(ss.StepLR(o, 5), "0", 1.0), TypeError, "min_lr"),
]


@pytest.mark.parametrize("make,exc,word", RANDOM_BAD, ids=range(len(RANDOM_BAD)))
def test_random_lr_refuses_before_touching_the_optimizer(make, exc, word):
    opt = make_optimizer()
    before = _snapshot(opt)
    with pytest.raises(exc, match=word):
        make(opt)
    if "BoundedLR" not in make.__code__.co_names:
        assert _snapshot(opt) == before


def test_integral_float_step_counts_are_accepted_by_the_extras():
    assert lrs_of(lambda o: ss.WarmupCosineLR(o, 10.0, 100.0), 50) == lrs_of(lambda o: ss.WarmupCosineLR(o, 10, 100), 50)
    assert lrs_of(lambda o: ss.RandomLR(o, 1e-3, 1.0, period=3.0), 20) == lrs_of(
        lambda o: ss.RandomLR(o, 1e-3, 1.0, period=3), 20)


@pytest.mark.parametrize("bad", [None, "0.5", [0.5]])
@pytest.mark.parametrize("cls", ["LambdaLR", "MultiplicativeLR"])
def test_lr_lambda_returning_a_non_number_raises_type_error(cls, bad):
    opt = make_optimizer()
    before = _snapshot(opt)
    with pytest.raises(TypeError, match=r"lr_lambda must return a real number, got " + re.escape(repr(bad))):
        sched = getattr(ss, cls)(opt, lambda e: bad if e >= (0 if cls == "LambdaLR" else 1) else 1.0)
        sched.step()
    if cls == "LambdaLR":
        assert _snapshot(opt) == before  # the construction step failed: nothing written
    # and torch refuses the same lambdas with a TypeError too
    with pytest.raises(TypeError):
        sched = getattr(TORCH, cls)(make_optimizer(), lambda e: bad if e >= 1 else 1.0)
        sched.step()


def test_lr_lambda_may_return_ints_tensors_and_numpy_numbers():
    np = pytest.importorskip("numpy")

    for fn in (lambda e: e // 3 + 1, lambda e: torch.tensor(0.9) ** e, lambda e: np.float32(0.5) ** e):
        ours, theirs = _both(lambda o: ss.LambdaLR(o, fn), lambda o: TORCH.LambdaLR(o, fn), steps=10)
        # torch's lr takes the lambda's type (a float32 tensor or numpy scalar): equal to fp32 rounding
        assert [x for r in ours[1:] for x in r] == pytest.approx([float(x) for r in theirs[1:] for x in r], rel=1e-6)
