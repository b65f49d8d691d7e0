"""Low precision inside the fused step (``master_weights``, ``stochastic_rounding``,
``state_dtype``) against torch's fp32 optimizers on fp32 copies of the params.

How the references are built and how closely they must agree:
- The reference is torch's single-tensor optimizer (``foreach=False``) on fp32 copies of the
  params, fed fp32 copies of the same low-precision gradients. The fused fp32 path is bitwise
  torch's (tests/python/test_fused_math.py), so every option is checked bitwise against that
  reference, with the option's roundings applied to the reference after each step: masters
  equal the reference's params; params equal the masters rounded to nearest; a bf16 state
  equals the reference's fp32 state rounded to bf16 after each step (the step reads the rounded
  state and does its math in fp32, exactly as torch does on those values); a stochastically
  rounded param equals NOTE [Stochastic rounding]'s function of the reference's fp32 result,
  computed here in Python from the spec (an independent oracle of the hash).
- Clipping: our norm is one fused pass over all gradients; torch's ``get_total_norm`` takes
  per-tensor norms (each rounded to fp32 after its square root) and then the norm of those.
  The two differ by that rounding structure, not by the bf16 storage: the reference's fp32
  copies hold exactly the bf16 values. Measured over 300 random sets of these shapes against
  the exact (fp64) norm: ours is within 1.6 fp32 ulps of it for fp32 and bf16 gradients alike,
  torch's within 1.7 (fp32 gradients) and 3.8 (the fp32 copies of bf16 gradients, whose
  per-tensor sums round differently); ours and torch's differ by at most 2 (fp32) and 3
  (bf16/fp16) ulps. So the norms are compared with rtol 1e-6 (8 ulps) and the reference then
  clips with *our* norm (``clip_grads_with_norm_``): the coefficient, the clipped gradients
  and everything after them are then the same arithmetic, bitwise.
- Statistics of stochastic rounding: a count of round-ups over n independent elements is
  binomial; each assertion allows 5 standard deviations (a false alarm has probability
  < 6e-7 per assertion).
"""

import copy
import io
import math

import pytest
import torch

from conftest import devices
from steadystep import optim as so

STEPS = 200
SHAPES = [(3, 5), (1,), (37,), (64, 33), (4, 1, 5)]
LRS = (1e-2, 3e-3)
bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32


# ---- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors of a few thousand elements: one intra-op thread (OpenMP workers spinning on
    shared cores cost 40x here). Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def assert_bitwise(a, b, what=""):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    ints = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16,
            torch.float16: torch.int16}[a.dtype]
    ab, bb = a.detach().contiguous().view(ints), b.detach().contiguous().view(ints)
    if not torch.equal(ab.cpu(), bb.cpu()):
        diff = (ab != bb).sum().item()
        err = (a.detach().double() - b.detach().double()).abs().max().item()
        raise AssertionError(f"{what}: {diff} of {a.numel()} elements differ (max abs {err:g})")


def assert_close_scaled(a, b, rtol, what=""):
    scale = max(b.abs().max().item(), 1e-30)
    err = (a.detach().double() - b.detach().double()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs diff {err:g} > {rtol:g} * {scale:g}"


def make_params(dtypes, device="cpu", seed=0, shapes=SHAPES):
    """Our params (in `dtypes`) and the reference's fp32 copies of the same values."""
    gen = torch.Generator().manual_seed(seed)
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device=device, dtype=d))
            for s, d in zip(shapes, dtypes)]
    ref = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    return ours, ref


def groups_of(params):
    return [{"params": params[:2], "lr": LRS[0]}, {"params": params[2:], "lr": LRS[1]}]


def set_grads(ours, ref, step, scale=3.0):
    gen = torch.Generator().manual_seed(1000 + step)
    for p, q in zip(ours, ref):
        g = (torch.randn(p.shape, generator=gen) * scale).to(device=p.device, dtype=p.dtype)
        p.grad = g.clone()
        q.grad = g.float()  # the same values, exactly


def roundtrip(state):
    """`state` through torch.save / torch.load: a fresh copy. Each optimizer loads its own copy:
    torch's load_state_dict keeps a loaded "step" tensor (and any state already in the param's
    dtype and device) as the same object, so two optimizers loaded from one dict would advance
    one shared step count."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# Optimizer pairs: (ours, torch's, state keys). lr comes from the groups.
OPTIMIZERS = {
    "AdamW": (lambda g, **kw: so.FusedAdamW(g, weight_decay=0.05, **kw),
              lambda g: torch.optim.AdamW(g, weight_decay=0.05, foreach=False), ("exp_avg", "exp_avg_sq")),
    "Adam-amsgrad": (lambda g, **kw: so.FusedAdam(g, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True, **kw),
                     lambda g: torch.optim.Adam(g, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True,
                                                foreach=False),
                     ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "SGD-momentum": (lambda g, **kw: so.FusedSGD(g, momentum=0.9, dampening=0.1, **kw),
                     lambda g: torch.optim.SGD(g, momentum=0.9, dampening=0.1, foreach=False),
                     ("momentum_buffer",)),
    "SGD-nesterov": (lambda g, **kw: so.FusedSGD(g, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
                     lambda g: torch.optim.SGD(g, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False),
                     ("momentum_buffer",)),
}


# ---- NOTE [Stochastic rounding], from the spec, in Python -----------------------------------

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


def _mix64(x):
    x &= _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    x ^= x >> 31
    return x


def rounding_key(seed, index):
    key = _mix64((seed & _M64) ^ _mix64(index + 1))
    return key - (1 << 64) if key >= 1 << 63 else key


def step_stream(key, step):
    return _mix64((key & _M64) ^ _mix64(int(step))) >> 32


def _mul32(x, c):
    # x * c mod 2^32 on int64 tensors holding uint32 values, without overflowing int64.
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def element_bits(stream, n):
    # Tensors here have far fewer than 2^32 elements: stream_at(stream, idx) == stream.
    idx = torch.arange(n, dtype=torch.int64)
    return _hash32((idx & _M32) ^ stream)


def bf16_stochastic(w, bits):
    """bf16_bits_stochastic of finite fp32 `w` (flat, CPU) with `bits` (int64 holding uint32)."""
    u = w.contiguous().view(torch.int32).to(torch.int64) & _M32
    assert bool(((u & 0x7F800000) != 0x7F800000).all())
    h = ((u + (bits & 0xFFFF)) >> 16) & 0xFFFF
    return torch.where(h >= 0x8000, h - 0x10000, h).to(torch.int16).view(torch.bfloat16)


def stochastic_round(w, seed, index, step):
    """What the step writes to the bf16 param at position `index` of the fused op's params,
    whose fp32 result is `w`, at step count `step` (after its increment)."""
    stream = step_stream(rounding_key(seed, index), step)
    flat = w.detach().float().cpu().reshape(-1)
    return bf16_stochastic(flat, element_bits(stream, flat.numel())).reshape(w.shape).to(w.device)


def test_oracle_rounds_as_the_note_says():
    # The oracle itself: low 16 bits below bf16's last bit carry with the random 16 bits.
    w = torch.tensor([1.0 + 2.0**-9, -(1.0 + 2.0**-9), 3.0, float(torch.finfo(bf16).max)], dtype=fp32)
    up = bf16_stochastic(w, torch.full((4,), 0xC000, dtype=torch.int64))  # 0x4000 + 0xc000 carries
    down = bf16_stochastic(w, torch.full((4,), 0xBFFF, dtype=torch.int64))
    assert up.tolist() == [1.0078125, -1.0078125, 3.0, float(torch.finfo(bf16).max)]
    assert down.tolist() == [1.0, -1.0, 3.0, float(torch.finfo(bf16).max)]
    # hash32 is a bijection (so element_bits never repeats within a stream): no collisions on
    # 2^16 inputs, all outputs 32-bit.
    h = _hash32(torch.arange(1 << 16, dtype=torch.int64) * 65537)
    assert h.unique().numel() == 1 << 16 and bool(((h >= 0) & (h <= _M32)).all())


# ---- 1. master weights -----------------------------------------------------------------------


def run_masters(opt_name, dtype, max_grad_norm, device, steps=STEPS, check_every=1):
    """Ours with master_weights=True on `dtype` params (one fp32 param among them) against
    torch's fp32 optimizer on fp32 copies, both under CosineAnnealingLR."""
    make_ours, make_ref, keys = OPTIMIZERS[opt_name]
    dtypes = [dtype, dtype, fp32, dtype, dtype]
    ours_p, ref_p = make_params(dtypes, device)
    ref_p = [torch.nn.Parameter(q.detach().to(device)) for q in ref_p]
    opt = make_ours(groups_of(ours_p), master_weights=True, max_grad_norm=max_grad_norm)
    ref = make_ref(groups_of(ref_p))
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50) for o in (opt, ref)]
    exact = device == "cpu"
    for step in range(steps):
        set_grads(ours_p, ref_p, step)
        opt.step()
        if max_grad_norm is not None:
            want = torch.nn.utils.get_total_norm([q.grad for q in ref_p], 2.0, foreach=False)
            torch.testing.assert_close(opt.last_grad_norm, want, rtol=1e-6, atol=0)
            torch.nn.utils.clip_grads_with_norm_(ref_p, max_grad_norm, opt.last_grad_norm.to(want.device),
                                                 foreach=False)
        ref.step()
        for s in scheds:
            s.step()
        if step % check_every and step != steps - 1:
            continue
        for i, (p, q) in enumerate(zip(ours_p, ref_p)):
            state = opt.state[p]
            what = f"step {step} param {i}"
            if p.dtype == fp32:
                assert "master_param" not in state
                (assert_bitwise if exact else lambda a, b, w: assert_close_scaled(a, b, 1e-5, w))(p, q, what)
                continue
            master = state["master_param"]
            assert master.dtype == fp32 and master.shape == p.shape and master.device == p.device
            if exact:
                assert_bitwise(master, q, what + " master")
            else:
                assert_close_scaled(master, q, 1e-5, what + " master")
            assert_bitwise(p, master.to(dtype), what + " param = master rounded to nearest")
            for key in keys:
                assert state[key].dtype == fp32, key  # fp32 state by default with masters
                if exact:
                    assert_bitwise(state[key], ref.state[q][key], f"{what} {key}")
    return opt, ours_p


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("max_grad_norm", [None, 1.0], ids=["noclip", "clip"])
@pytest.mark.parametrize("dtype", [bf16, fp16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_masters_equal_fp32_torch_run(opt_name, dtype, max_grad_norm, device):
    opt, params = run_masters(opt_name, dtype, max_grad_norm, device)
    if max_grad_norm is not None:
        assert opt.last_clip_coef.item() < 1.0  # the clip was active (grads' norm ~ 3 * sqrt(2.3k))
    # Over 200 steps the masters moved by many ulps of the params: a run without masters would
    # have lost updates (the test would fail without them).
    assert any((opt.state[p]["master_param"] != p.float()).any() for p in params if p.dtype == dtype)


def test_masters_created_from_params_on_first_step_and_after_loading_without_them():
    ours_p, ref_p = make_params([bf16] * len(SHAPES))
    before = [p.detach().clone() for p in ours_p]
    opt = so.FusedAdamW(ours_p, lr=1e-2, master_weights=True)
    assert all("master_param" not in opt.state[p] for p in ours_p)  # nothing before the first step
    ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
    for step in range(3):
        set_grads(ours_p, ref_p, step)
        opt.step()
        ref.step()
    for p, q, b in zip(ours_p, ref_p, before):
        assert_bitwise(opt.state[p]["master_param"], q)
    # A checkpoint without masters (e.g. from a run without them): masters are made from the
    # params (the bf16 values) at the next step.
    state = roundtrip(opt.state_dict())
    for entry in state["state"].values():
        del entry["master_param"]
    new_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    new = so.FusedAdamW(new_p, lr=1e-2, master_weights=True)
    new.load_state_dict(roundtrip(state))
    ref2_p = [torch.nn.Parameter(p.detach().float()) for p in new_p]
    ref2 = torch.optim.AdamW(ref2_p, lr=1e-2, foreach=False)
    ref2.load_state_dict(roundtrip(state))
    for step in range(3, 6):
        set_grads(new_p, ref2_p, step)
        new.step()
        ref2.step()
        for p, q in zip(new_p, ref2_p):
            assert_bitwise(new.state[p]["master_param"], q, f"step {step}")
            assert_bitwise(p, q.to(bf16), f"step {step}")


def test_masters_no_effect_on_fp32_and_fp64_params():
    for dtype in (fp32, torch.float64):
        ours_p = [torch.nn.Parameter(torch.randn(7, dtype=dtype))]
        ref_p = [torch.nn.Parameter(ours_p[0].detach().clone())]
        opt = so.FusedAdamW(ours_p, lr=1e-2, master_weights=True)
        ref = torch.optim.AdamW(ref_p, lr=1e-2, foreach=False)
        for step in range(5):
            g = torch.randn(7, dtype=dtype)
            ours_p[0].grad, ref_p[0].grad = g.clone(), g.clone()
            opt.step()
            ref.step()
        assert "master_param" not in opt.state[ours_p[0]]
        assert opt.state[ours_p[0]]["exp_avg"].dtype == dtype
        assert_bitwise(ours_p[0], ref_p[0])


# ---- 2. stochastic rounding ------------------------------------------------------------------


def _sr_counts(rounded, lo, hi):
    r = rounded.float()
    assert bool(((r == lo) | (r == hi)).all()), "a value rounded to neither neighbour"
    return (r == hi)


@pytest.mark.parametrize("device", devices())
def test_stochastic_rounding_is_unbiased_sgd(device):
    """SGD (lr 1, no momentum) from +-1.5 with gradients k * 2^-13, k = 1..63: the fp32 result
    +-(1.5 + k/64 * 2^-7) is exact and lies k/64 of the way from 1.5 to its bf16 neighbour
    1.5 + 2^-7. 4 steps (params reset before each: a new stream per step) of 63 * 2048 * 2
    elements: the round-ups of each k are Binomial(8192 * 2, k/64); each count must lie within
    5 sigma of its mean, and so must the total. The rounded bits are also the spec's function
    of (seed, param index, step, element index), on every device (the fp32 result is exact)."""
    n_k, reps = 63, 2048
    k2 = torch.arange(1, n_k + 1, dtype=fp32).repeat(2 * reps)  # element j: k = j % 63 + 1
    sign = torch.ones(k2.numel(), dtype=fp32)
    sign[1::2] = -1.0  # 63 is odd: each k appears with both signs
    start = (sign * 1.5).to(bf16)
    grads = (-sign * k2 * 2.0**-13).to(bf16)
    assert torch.equal(grads.float(), -sign * k2 * 2.0**-13)
    torch.manual_seed(5)
    small = torch.nn.Parameter(torch.ones(3, dtype=bf16, device=device))  # param 0: shifts the index
    p = torch.nn.Parameter(start.clone().to(device))
    opt = so.FusedSGD([small, p], lr=1.0, stochastic_rounding=True)
    w = (start.float() - grads.float())  # exact
    lo, hi = sign * 1.5, sign * (1.5 + 2.0**-7)
    ups = torch.zeros(n_k, dtype=torch.float64)
    for step in range(1, 5):
        with torch.no_grad():
            p.copy_(start.to(device))
        small.grad = torch.zeros(3, dtype=bf16, device=device)
        p.grad = grads.to(device)
        opt.step()
        got = p.detach().cpu()
        assert_bitwise(got, stochastic_round(w, opt.rounding_seed, 1, step), f"step {step}: spec's bits")
        up = _sr_counts(got, lo, hi).double()
        ups += up.view(reps * 2, n_k).sum(0)  # element j has k = j % 63 + 1
    n = reps * 2 * 4
    frac = torch.arange(1, n_k + 1, dtype=torch.float64) / 64
    mean, sd = n * frac, (n * frac * (1 - frac)).sqrt()
    assert bool(((ups - mean).abs() <= 5 * sd).all()), ((ups - mean) / sd).tolist()
    total_sd = (n * frac * (1 - frac)).sum().sqrt()
    assert abs(ups.sum() - mean.sum()) <= 5 * total_sd


def test_stochastic_rounding_is_unbiased_adamw(device="cpu"):
    """One AdamW step (fp32 state: the fp32 result is torch's fp32 AdamW's on the fp32 copies,
    bitwise): every bf16 param is one of the two bf16 neighbours of that result, and the number
    rounded up is within 5 sigma of the sum of the fractions cut off (a sum of independent
    Bernoulli(frac_i); variance sum frac_i (1 - frac_i))."""
    torch.manual_seed(11)
    ours_p, ref_p = make_params([bf16], device, shapes=[(256, 1024)])
    ref_p = [torch.nn.Parameter(q.detach().to(device)) for q in ref_p]
    opt = so.FusedAdamW(ours_p, lr=1e-3, stochastic_rounding=True, state_dtype=fp32)
    ref = torch.optim.AdamW(ref_p, lr=1e-3, foreach=False)
    set_grads(ours_p, ref_p, 0)
    opt.step()
    ref.step()
    w = ref_p[0].detach().cpu().reshape(-1)
    u = w.view(torch.int32).to(torch.int64) & _M32
    lo = ((u >> 16) << 16).to(torch.int32).view(fp32)  # truncated toward zero
    frac = (u & 0xFFFF).double() / 65536
    hi_bits = (((u >> 16) + 1) << 16)
    hi = torch.where(hi_bits >= 1 << 31, hi_bits - (1 << 32), hi_bits).to(torch.int32).view(fp32)
    got = ours_p[0].detach().cpu().reshape(-1)
    exact = frac == 0
    assert torch.equal(got[exact].float(), w[exact])
    up = _sr_counts(got[~exact], lo[~exact], hi[~exact])
    f = frac[~exact]
    sd = (f * (1 - f)).sum().sqrt().item()
    assert abs(up.double().sum().item() - f.sum().item()) <= 5 * sd
    assert_bitwise(ours_p[0].detach().cpu(), stochastic_round(ref_p[0], opt.rounding_seed, 0, 1))


@pytest.mark.parametrize("opt_name", ["AdamW", "SGD-nesterov"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0], ids=["noclip", "clip"])
def test_stochastic_rounding_follows_the_spec_bitwise(opt_name, max_grad_norm, device="cpu"):
    """50 steps of bf16 params (an fp32 param among them keeps its index) with fp32 state:
    each step's bf16 params are the spec's stochastic rounding of torch's fp32 result from the
    previous rounded params (the reference continues from them)."""
    make_ours, make_ref, keys = OPTIMIZERS[opt_name]
    dtypes = [bf16, fp32, bf16, bf16, bf16]
    torch.manual_seed(3)
    ours_p, ref_p = make_params(dtypes, device)
    ref_p = [torch.nn.Parameter(q.detach().to(device)) for q in ref_p]
    opt = make_ours(groups_of(ours_p), stochastic_rounding=True, state_dtype=fp32, max_grad_norm=max_grad_norm)
    ref = make_ref(groups_of(ref_p))
    seed = opt.rounding_seed
    for step in range(1, 51):
        set_grads(ours_p, ref_p, step)
        opt.step()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(ref_p, max_grad_norm, opt.last_grad_norm, foreach=False)
        ref.step()
        for i, (p, q) in enumerate(zip(ours_p, ref_p)):
            if p.dtype == fp32:
                assert_bitwise(p, q, f"step {step} fp32 param {i}")
            else:
                assert_bitwise(p, stochastic_round(q, seed, i, step), f"step {step} param {i}")
            for key in keys:
                assert_bitwise(opt.state[p][key], ref.state[q][key], f"step {step} {key} {i}")
        with torch.no_grad():
            for p, q in zip(ours_p, ref_p):
                q.copy_(p.float())


def _sr_run(make, steps, seed, dtype=bf16, start_seed=0):
    torch.manual_seed(seed)
    ours_p, ref_p = make_params([dtype] * len(SHAPES), seed=start_seed)
    opt = make(groups_of(ours_p))
    for step in range(steps):
        set_grads(ours_p, ref_p, step)
        opt.step()
    return opt, ours_p


SR_MAKERS = {
    "AdamW": lambda g: so.FusedAdamW(g, stochastic_rounding=True),
    "SGD": lambda g: so.FusedSGD(g, momentum=0.9, stochastic_rounding=True),
}


@pytest.mark.parametrize("name", sorted(SR_MAKERS))
def test_stochastic_rounding_same_seed_same_result(name):
    make = SR_MAKERS[name]
    torch.manual_seed(7)
    want_seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    a, pa = _sr_run(make, 20, 7)
    b, pb = _sr_run(make, 20, 7)
    c, pc = _sr_run(make, 20, 8)
    assert isinstance(a.rounding_seed, int) and a.rounding_seed == want_seed == b.rounding_seed
    assert a.state_dict()["rounding_seed"] == want_seed
    assert c.rounding_seed != a.rounding_seed
    for x, y in zip(pa, pb):
        assert_bitwise(x, y)
    assert any(not torch.equal(x, z) for x, z in zip(pa, pc))
    # The seed is settable: a run given c's seed is c's run.
    torch.manual_seed(1)
    d_p, d_ref = make_params([bf16] * len(SHAPES))
    d = make(groups_of(d_p))
    d.rounding_seed = c.rounding_seed
    for step in range(20):
        set_grads(d_p, d_ref, step)
        d.step()
    for x, z in zip(d_p, pc):
        assert_bitwise(x, z)


def test_seed_drawn_only_with_stochastic_rounding():
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    so.FusedAdamW(make_params([bf16])[0])
    so.FusedSGD(make_params([bf16])[0], master_weights=True, state_dtype=bf16)
    assert torch.equal(torch.rand(4), want)  # the default generator was not touched


# Option sets the resume / skip tests run through.
CONFIGS = {
    "masters-bf16": (bf16, dict(master_weights=True)),
    "masters-fp16-bf16_state": (fp16, dict(master_weights=True, state_dtype=bf16)),
    "stochastic": (bf16, dict(stochastic_rounding=True)),
    "stochastic-fp32_state": (bf16, dict(stochastic_rounding=True, state_dtype=fp32)),
    "bf16_state-fp32": (fp32, dict(state_dtype=bf16)),
    "bf16_state-bf16": (bf16, dict(state_dtype=bf16)),
}
MAKERS = {
    "AdamW": lambda g, **kw: so.FusedAdamW(g, **kw),
    "Adam-amsgrad": lambda g, **kw: so.FusedAdam(g, amsgrad=True, weight_decay=0.01, **kw),
    "SGD": lambda g, **kw: so.FusedSGD(g, momentum=0.9, nesterov=True, **kw),
}


def full_state(opt, params):
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()} for p in params]


def assert_same_states(a, b, what=""):
    for i, (sa, sb) in enumerate(zip(a, b)):
        assert sa.keys() == sb.keys(), what
        for key in sa:
            assert_bitwise(sa[key], sb[key], f"{what} param {i} {key}")


@pytest.mark.parametrize("opt_name", sorted(MAKERS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_resume_equals_uninterrupted(config, opt_name):
    dtype, kw = CONFIGS[config]
    make = MAKERS[opt_name]
    torch.manual_seed(21)
    full_p, ref_p = make_params([dtype] * len(SHAPES))
    full = make(groups_of(full_p), max_grad_norm=2.0, **kw)
    torch.manual_seed(21)
    part_p, _ = make_params([dtype] * len(SHAPES))
    part = make(groups_of(part_p), max_grad_norm=2.0, **kw)
    for step in range(7):
        set_grads(full_p, ref_p, step)
        full.step()
        set_grads(part_p, ref_p, step)
        part.step()
    saved = roundtrip(part.state_dict())
    if kw.get("stochastic_rounding"):
        assert saved["rounding_seed"] == full.rounding_seed
    torch.manual_seed(999)  # another seed: the checkpoint's must win
    resumed_p = [torch.nn.Parameter(p.detach().clone()) for p in part_p]
    resumed = make(groups_of(resumed_p), max_grad_norm=2.0, **kw)
    resumed.load_state_dict(saved)
    assert_same_states(full_state(resumed, resumed_p), full_state(part, part_p), "after load")
    for step in range(7, 15):
        set_grads(full_p, ref_p, step)
        full.step()
        set_grads(resumed_p, ref_p, step)
        resumed.step()
    for i, (p, q) in enumerate(zip(resumed_p, full_p)):
        assert_bitwise(p, q, f"param {i}")
    assert_same_states(full_state(resumed, resumed_p), full_state(full, full_p), "end")
    if kw.get("stochastic_rounding"):
        assert resumed.rounding_seed == full.rounding_seed


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("which", ["SGD", "AdamW"])
def test_stochastic_rounding_keeps_learning_where_nearest_stalls(which, device):
    """bf16 params at 1.5 (ulp 2^-7) with a constant gradient whose update per step is 0.1
    ulp: rounded to nearest, every step is lost (the params never move); rounded
    stochastically, the mean follows the fp32 trajectory. Per element the rounding errors are
    martingale increments of variance <= ulp^2 / 4 per step: after 50 steps an element's sd is
    <= sqrt(50) / 2 ulp, the mean of 4096 independent elements' <= 0.056 ulp; we allow 5 of
    those (0.28 ulp of a 5 ulp move). AdamW's fp32 update (bias-corrected m / sqrt(v) of a
    constant gradient) would be lr to 1e-6; its bf16 state stalls m near 0.98 (an increment
    0.1 * (1 - m) below half a bf16 ulp of m is lost), so we allow 5% of the move more."""
    ulp, n, steps = 2.0**-7, 4096, 50
    lr = 0.1 * ulp
    results = {}
    for sr in (False, True):
        torch.manual_seed(4)
        p = torch.nn.Parameter(torch.full((n,), 1.5, dtype=bf16, device=device))
        if which == "SGD":
            opt = so.FusedSGD([p], lr=lr, stochastic_rounding=sr)
        else:
            opt = so.FusedAdamW([p], lr=lr, weight_decay=0.0, stochastic_rounding=sr)
        for _ in range(steps):
            p.grad = torch.ones(n, dtype=bf16, device=device)
            opt.step()
        results[sr] = p.detach().float().cpu()
    assert bool((results[False] == 1.5).all())  # nearest: stalled
    want = 1.5 - steps * lr
    tol = 5 * math.sqrt(steps) / 2 / math.sqrt(n) * ulp + (0.05 * steps * lr if which == "AdamW" else 0.0)
    assert abs(results[True].mean().item() - want) <= tol
    assert results[True].mean().item() < 1.5 - 4 * ulp  # it learned


def test_stochastic_rounding_no_effect_on_other_dtypes():
    # fp32 and fp16 params (no masters) round to nearest: bitwise the same as without the option.
    for dtype in (fp32, fp16):
        a_p, ref = make_params([dtype] * len(SHAPES))
        b_p, _ = make_params([dtype] * len(SHAPES))
        a = so.FusedAdamW(groups_of(a_p), stochastic_rounding=True)
        b = so.FusedAdamW(groups_of(b_p))
        for step in range(5):
            set_grads(a_p, ref, step)
            set_grads(b_p, ref, step)
            a.step()
            b.step()
        for x, y in zip(a_p, b_p):
            assert_bitwise(x, y, str(dtype))


# ---- 3. state dtype --------------------------------------------------------------------------


def round_state_(opt, params, keys, dtype):
    with torch.no_grad():
        for q in params:
            for key in keys:
                s = opt.state[q][key]
                s.copy_(s.to(dtype).float())


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("max_grad_norm", [None, 1.0], ids=["noclip", "clip"])
@pytest.mark.parametrize("param_dtype,masters", [(fp32, False), (bf16, False), (bf16, True), (fp16, True)],
                         ids=["fp32", "bf16", "bf16-masters", "fp16-masters"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_bf16_state_equals_fp32_reference_with_rounded_state(opt_name, param_dtype, masters, max_grad_norm,
                                                             device):
    """state_dtype=bf16: the state is bf16 and each step equals torch's fp32 step from the same
    weights and the same (rounded) state, its new state rounded to bf16 after it: the math is
    fp32 and reads the unrounded new moments; only the stored state loses bits. The reference
    starts every step from our weights (fp32 param, master, or bf16 param upcast), so each step
    is compared on its own, 50 steps.

    State: bitwise. SGD's weights: bitwise. Adam's fp32 weights (fp32 param or master): the CPU
    kernel's one-pass path for a non-fp32 state takes std::sqrt where torch's CPU sqrt (the
    fp32-state path's) can differ in the last bit (NOTE [Torch's rounding],
    csrc/cpu/fused_optim_kernels.cpp; ~0.3% of elements): the denominator then differs by one
    ulp (2^-23 relative), the update u by at most 2 of its ulps, the weight by that plus its own
    rounding: |w - w_ref| <= 2^-22 (|u| + |w_ref|). bf16 params without masters: bitwise (their
    rounding to nearest absorbs that fp32 ulp unless it crosses a bf16 rounding boundary, a
    chance of ~2^-16 per differing element: none in these fixed runs)."""
    make_ours, make_ref, keys = OPTIMIZERS[opt_name]
    ours_p, ref_p = make_params([param_dtype] * len(SHAPES), device)
    opt = make_ours(groups_of(ours_p), state_dtype=bf16, master_weights=masters, max_grad_norm=max_grad_norm)
    ref = make_ref(groups_of(ref_p))
    exact = device == "cpu"
    sqrt_ulp = opt_name.startswith("Adam") and (param_dtype == fp32 or masters)
    for step in range(50):
        set_grads(ours_p, ref_p, step)
        opt.step()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(ref_p, max_grad_norm, opt.last_grad_norm, foreach=False)
        before = [q.detach().clone() for q in ref_p]
        ref.step()
        round_state_(ref, ref_p, keys, bf16)
        for i, (p, q, b) in enumerate(zip(ours_p, ref_p, before)):
            what = f"step {step} param {i}"
            state = opt.state[p]
            for key in keys:
                assert state[key].dtype == bf16, key
                if exact:
                    assert_bitwise(state[key].float(), ref.state[q][key], f"{what} {key}")
            w = state["master_param"] if masters else p
            want = q if masters or param_dtype == fp32 else q.detach().to(param_dtype)
            if not exact:
                # CUDA: fp32 to 1e-5 (FMA contraction apart); a bf16 param may round one ulp apart.
                assert_close_scaled(w.float(), want.float(), 1e-5 if w.dtype == fp32 else 2.0**-7, what)
            elif sqrt_ulp:
                bound = 2.0**-22 * ((q - b).abs() + q.abs())
                err = (w - q).abs()
                assert bool((err <= bound).all()), f"{what}: {int((err > bound).sum())} beyond one sqrt ulp"
            else:
                assert_bitwise(w, want, what)
            if masters:
                assert_bitwise(p, state["master_param"].to(param_dtype), what)
        with torch.no_grad():  # the next step starts from our weights
            for p, q in zip(ours_p, ref_p):
                q.copy_(opt.state[p]["master_param"] if masters else p.float())


def test_bf16_state_update_close_to_fp32_state():
    """The bf16 state's effect on the params is bounded: Adam's update lr * m_hat / (sqrt(v_hat)
    + eps) reads m and v each carrying relative errors of a few 2^-9 (one rounding per step,
    decaying with beta); over 50 steps of lr 1e-2 the params of the two runs stay within
    50 * lr * 3% = 1.5e-2 absolute of each other (a few % of an update per step), while they
    moved by ~0.3 from their start."""
    a_p, ref = make_params([fp32] * len(SHAPES))
    b_p, _ = make_params([fp32] * len(SHAPES))
    start = [p.detach().clone() for p in a_p]
    a = so.FusedAdamW(a_p, lr=1e-2, state_dtype=bf16)
    b = so.FusedAdamW(b_p, lr=1e-2)
    for step in range(50):
        set_grads(a_p, ref, step)
        set_grads(b_p, ref, step)
        a.step()
        b.step()
    moved = max((p - s).abs().max().item() for p, s in zip(b_p, start))
    assert moved > 0.1
    for x, y in zip(a_p, b_p):
        assert (x - y).abs().max().item() <= 50 * 1e-2 * 0.03
        assert not torch.equal(x, y) or x.numel() == 1


def test_state_dtype_leaves_fp64_state_alone_and_fp32_state_on_bf16_params():
    p64 = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    p16 = torch.nn.Parameter(torch.randn(5, dtype=bf16))
    opt = so.FusedAdamW([p64, p16], state_dtype=bf16)
    opt32 = so.FusedSGD([torch.nn.Parameter(torch.randn(5, dtype=bf16))], momentum=0.9, state_dtype=fp32)
    for o in (opt, opt32):
        for group in o.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p)
        o.step()
    assert opt.state[p64]["exp_avg"].dtype == torch.float64
    assert opt.state[p16]["exp_avg"].dtype == bf16 and opt.state[p16]["exp_avg_sq"].dtype == bf16
    (q,) = opt32.param_groups[0]["params"]
    assert opt32.state[q]["momentum_buffer"].dtype == fp32


@pytest.mark.parametrize("pair", ["AdamW", "SGD"])
def test_bf16_state_cross_loads_with_torch(pair):
    """Ours (bf16 state, fp32 params) -> torch: torch casts the state to the params' fp32, and
    continues exactly as ours with state_dtype=fp32 loaded from the same checkpoint. torch ->
    ours (bf16 state): the state is torch's rounded to bf16, and ours continues as the
    rounded-state reference. Both directions through torch.save."""
    if pair == "AdamW":
        make_ours = lambda g, **kw: so.FusedAdamW(g, **kw)  # noqa: E731
        make_ref = lambda g: torch.optim.AdamW(g, foreach=False)  # noqa: E731
        keys = ("exp_avg", "exp_avg_sq")
    else:
        make_ours = lambda g, **kw: so.FusedSGD(g, momentum=0.9, **kw)  # noqa: E731
        make_ref = lambda g: torch.optim.SGD(g, momentum=0.9, foreach=False)  # noqa: E731
        keys = ("momentum_buffer",)
    ours_p, ref_p = make_params([fp32] * len(SHAPES))
    ours = make_ours(groups_of(ours_p), state_dtype=bf16)
    for step in range(5):
        set_grads(ours_p, ref_p, step)
        ours.step()
    saved = roundtrip(ours.state_dict())
    for entry in saved["state"].values():
        for key in keys:
            assert entry[key].dtype == bf16
    # ours -> torch
    t_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    t = make_ref(groups_of(t_p))
    t.load_state_dict(roundtrip(saved))
    f_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    f = make_ours(groups_of(f_p), state_dtype=fp32)
    f.load_state_dict(roundtrip(saved))
    for p, q in zip(t_p, ours_p):
        for key in keys:
            assert t.state[p][key].dtype == fp32
            assert_bitwise(t.state[p][key], ours.state[q][key].float(), key)
    for step in range(5, 10):
        set_grads(t_p, f_p, step)
        t.step()
        f.step()
    for p, q in zip(t_p, f_p):
        assert_bitwise(q, p)
        for key in keys:
            assert f.state[q][key].dtype == fp32
    # torch -> ours
    saved_t = roundtrip(t.state_dict())
    b_p = [torch.nn.Parameter(p.detach().clone()) for p in t_p]
    b = make_ours(groups_of(b_p), state_dtype=bf16)
    b.load_state_dict(saved_t)
    for p, q in zip(b_p, t_p):
        for key in keys:
            assert_bitwise(b.state[p][key].to(bf16), t.state[q][key].to(bf16), key)
    round_state_(t, t_p, keys, bf16)
    for step in range(10, 15):
        set_grads(b_p, t_p, step)
        before = [q.detach().clone() for q in t_p]
        b.step()
        t.step()
        round_state_(t, t_p, keys, bf16)
        for p, q, w0 in zip(b_p, t_p, before):
            if pair == "SGD":
                assert_bitwise(p, q, f"step {step}")
            else:  # one sqrt ulp: see test_bf16_state_equals_fp32_reference_with_rounded_state
                assert bool(((p - q).abs() <= 2.0**-22 * ((q - w0).abs() + q.abs())).all()), f"step {step}"
            for key in keys:
                assert b.state[p][key].dtype == bf16
                assert_bitwise(b.state[p][key].float(), t.state[q][key], f"step {step} {key}")
        with torch.no_grad():
            for p, q in zip(b_p, t_p):
                q.copy_(p)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_state_dict_round_trips_bitwise(config):
    dtype, kw = CONFIGS[config]
    torch.manual_seed(2)
    ours_p, ref_p = make_params([dtype] * len(SHAPES))
    opt = so.FusedAdamW(groups_of(ours_p), amsgrad=True, **kw)
    for step in range(4):
        set_grads(ours_p, ref_p, step)
        opt.step()
    saved = roundtrip(opt.state_dict())
    new_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    new = so.FusedAdamW(groups_of(new_p), amsgrad=True, **kw)
    new.load_state_dict(saved)
    assert_same_states(full_state(new, new_p), full_state(opt, ours_p))
    again = roundtrip(new.state_dict())
    for idx, entry in saved["state"].items():
        for key, value in entry.items():
            assert_bitwise(again["state"][idx][key], value, key)
    if kw.get("state_dtype") == bf16:
        assert all(e["exp_avg"].dtype == bf16 for e in saved["state"].values())
    if kw.get("master_weights"):
        assert all(e["master_param"].dtype == fp32 for e in saved["state"].values())


# ---- 4. the guard with each option -----------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("opt_name", sorted(MAKERS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_skipped_step_changes_nothing_with_each_option(config, opt_name, device):
    """An inf gradient at step 3: params, masters and state bit-identical, step counts not
    advanced, one skip counted; the run then equals one that never saw that step (stochastic
    rounding draws the bits of the step count, which did not advance)."""
    dtype, kw = CONFIGS[config]
    make = MAKERS[opt_name]
    torch.manual_seed(6)
    ours_p, ref_p = make_params([dtype] * len(SHAPES), device)
    ours = make(groups_of(ours_p), max_grad_norm=1.0, **kw)
    torch.manual_seed(6)
    clean_p, _ = make_params([dtype] * len(SHAPES), device)
    clean = make(groups_of(clean_p), max_grad_norm=1.0, **kw)
    for step in range(8):
        set_grads(ours_p, ref_p, step)
        if step == 3:
            ours_p[3].grad[5, 7] = math.inf
            before = [p.detach().clone() for p in ours_p]
            state_before = full_state(ours, ours_p)
            ours.step()
            for i, (p, b) in enumerate(zip(ours_p, before)):
                assert_bitwise(p, b, f"param {i}")
            assert_same_states(full_state(ours, ours_p), state_before, "skipped")
            assert ours.skipped_steps.item() == 1
            assert bool(ours.last_skipped)
            continue
        ours.step()
        set_grads(clean_p, ref_p, step)
        clean.step()
    for i, (p, q) in enumerate(zip(ours_p, clean_p)):
        assert_bitwise(p, q, f"param {i}")
    assert_same_states(full_state(ours, ours_p), full_state(clean, clean_p), "end")
    if kw.get("master_weights"):
        assert all("master_param" in ours.state[p] for p in ours_p)


def test_skipped_first_step_changes_nothing_with_masters():
    """A skipped first step: the masters (made from the params) and the params are unchanged."""
    ours_p, _ = make_params([bf16] * len(SHAPES))
    before = [p.detach().clone() for p in ours_p]
    opt = so.FusedAdamW(ours_p, master_weights=True)
    for p in ours_p:
        p.grad = torch.randn_like(p)
    ours_p[0].grad[0, 0] = math.nan
    opt.step()
    for p, b in zip(ours_p, before):
        assert_bitwise(p, b)
        if "master_param" in opt.state[p]:
            assert_bitwise(opt.state[p]["master_param"], b.float())
        assert opt.state[p]["step"].item() == 0
    assert opt.skipped_steps.item() == 1


@pytest.mark.parametrize("opt_name", ["AdamW", "SGD-nesterov"])
def test_grad_scaler_fp16_params_with_masters(opt_name):
    """torch.amp.GradScaler (CPU) hands its scale to the fused step on fp16 params with masters;
    the reference is torch's fp32 optimizer with its own GradScaler (unscale_ multiplies the
    fp32 copies of the same fp16 scaled gradients by the same fp32 inverse scale). An overflow
    at step 7 and growth every 5 steps (the scale stays <= 2^10: no fp16 overflow): both skip the same steps, keep the same scales, and
    the masters equal the reference's params bitwise."""
    make_ours, make_ref, keys = OPTIMIZERS[opt_name]
    ours_p, ref_p = make_params([fp16] * len(SHAPES))
    opt = make_ours(groups_of(ours_p), master_weights=True)
    ref = make_ref(groups_of(ref_p))
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**6, growth_interval=5) for _ in range(2)]
    for step in range(20):
        for s in scalers:
            s.scale(torch.ones(()))  # initialises the scale; the grads are set by hand
        scale = scalers[0].get_scale()
        assert scale == scalers[1].get_scale()
        gen = torch.Generator().manual_seed(step)
        for p, q in zip(ours_p, ref_p):
            g = (torch.randn(p.shape, generator=gen) * scale).to(fp16)
            p.grad, q.grad = g.clone(), g.float()
        if step == 7:
            ours_p[3].grad[0, 0] = math.inf
            ref_p[3].grad[0, 0] = math.inf
        scalers[0].step(opt)
        scalers[0].update()
        scalers[1].step(ref)
        scalers[1].update()
        for i, (p, q) in enumerate(zip(ours_p, ref_p)):
            assert_bitwise(opt.state[p]["master_param"], q, f"step {step} param {i}")
            assert_bitwise(p, q.to(fp16), f"step {step} param {i}")
    assert opt.skipped_steps.item() == 1
    assert scalers[0].get_scale() == scalers[1].get_scale()


# ---- 5. refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("make,error,word", [
    (lambda p: so.FusedAdamW(p, master_weights=True, stochastic_rounding=True), ValueError, "stochastic_rounding"),
    (lambda p: so.FusedSGD(p, master_weights=True, stochastic_rounding=True), ValueError, "master_weights"),
    (lambda p: so.FusedAdam(p, state_dtype=torch.float16), ValueError, "state_dtype"),
    (lambda p: so.FusedSGD(p, momentum=0.9, state_dtype=torch.float16), ValueError, "state_dtype"),
    (lambda p: so.FusedAdamW(p, state_dtype=torch.float64), ValueError, "state_dtype"),
    (lambda p: so.FusedAdamW(p, state_dtype=torch.int32), ValueError, "state_dtype"),
    (lambda p: so.FusedAdamW(p, differentiable=True, master_weights=True), ValueError, "differentiable"),
    (lambda p: so.FusedAdam(p, differentiable=True, stochastic_rounding=True), ValueError, "differentiable"),
    (lambda p: so.FusedAdamW(p, differentiable=True, state_dtype=bf16), ValueError, "differentiable"),
    (lambda p: so.FusedSGD(p, differentiable=True, master_weights=True), ValueError, "differentiable"),
    (lambda p: so.FusedSGD(p, differentiable=True, stochastic_rounding=True), ValueError, "differentiable"),
    (lambda p: so.FusedSGD(p, differentiable=True, state_dtype=fp32), ValueError, "differentiable"),
], ids=["adamw-masters+sr", "sgd-masters+sr", "adam-fp16state", "sgd-fp16state", "fp64state", "int32state",
        "diff-adamw-masters", "diff-adam-sr", "diff-adamw-state", "diff-sgd-masters", "diff-sgd-sr",
        "diff-sgd-state"])
def test_refusals_change_nothing(make, error, word):
    params, _ = make_params([bf16] * len(SHAPES))
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    with pytest.raises(error, match=word):
        make(params)
    for p, b, g in zip(params, before, grads):
        assert_bitwise(p, b)
        assert_bitwise(p.grad, g)
    assert torch.equal(torch.get_rng_state(), rng)  # no seed drawn for a refused optimizer


def test_refusal_message_names_both_options():
    with pytest.raises(ValueError, match="stochastic_rounding rounds bf16 params that have no master; with "
                       "master_weights=True the masters carry the precision"):
        so.FusedAdamW(make_params([bf16])[0], master_weights=True, stochastic_rounding=True)


def test_defaults_change_nothing():
    # The options' defaults are the plain fused step: bitwise the same as before (state in the
    # param's dtype, no master, no seed drawn).
    ours_p, ref_p = make_params([bf16] * len(SHAPES))
    opt = so.FusedAdamW(groups_of(ours_p))
    set_grads(ours_p, ref_p, 0)
    opt.step()
    for p in ours_p:
        assert "master_param" not in opt.state[p]
        assert opt.state[p]["exp_avg"].dtype == bf16
    assert "rounding_seed" not in opt.state_dict() or opt.state_dict()["rounding_seed"] is None


# ---- layouts, dtypes and copies with the options ---------------------------------------------


def test_masters_of_non_contiguous_params_equal_fp32_torch_run():
    """A transposed param (dense, walked flat beside a master laid out as it) and a strided
    slice (stepped through a contiguous staging copy and written back): masters bitwise the
    fp32 run, params the masters rounded to nearest."""
    base = torch.randn(33, 64, generator=torch.Generator().manual_seed(4)).to(bf16)
    wide = torch.randn(8, 20, generator=torch.Generator().manual_seed(5)).to(bf16)
    ours = [torch.nn.Parameter(base.t()), torch.nn.Parameter(wide[:, ::2])]
    ref = [torch.nn.Parameter(p.detach().float()) for p in ours]
    assert not ours[0].is_contiguous() and not ours[1].is_contiguous()
    opt = so.FusedAdamW(ours, lr=1e-2, master_weights=True, max_grad_norm=1.0)
    topt = torch.optim.AdamW(ref, lr=1e-2, foreach=False)
    for step in range(20):
        set_grads(ours, ref, step)
        opt.step()
        torch.nn.utils.clip_grads_with_norm_(ref, 1.0, opt.last_grad_norm, foreach=False)
        topt.step()
        for p, q in zip(ours, ref):
            assert_bitwise(opt.state[p]["master_param"], q.detach(), f"step {step}")
            assert_bitwise(p, opt.state[p]["master_param"].to(bf16), f"step {step}")


def test_complex_params_keep_their_state_dtype_and_take_no_master():
    ours = [torch.nn.Parameter(torch.randn(6, dtype=torch.complex64)), torch.nn.Parameter(torch.randn(4, dtype=bf16))]
    ref = [torch.nn.Parameter(ours[0].detach().clone()), torch.nn.Parameter(ours[1].detach().float())]
    opt = so.FusedAdamW(ours, lr=1e-2, master_weights=True, state_dtype=bf16)
    topt = torch.optim.AdamW(ref, lr=1e-2, foreach=False)
    for step in range(5):
        gen = torch.Generator().manual_seed(step)
        g0 = torch.randn(6, dtype=torch.complex64, generator=gen)
        g1 = torch.randn(4, generator=gen).to(bf16)
        ours[0].grad, ref[0].grad = g0.clone(), g0.clone()
        ours[1].grad, ref[1].grad = g1.clone(), g1.float()
        opt.step()
        topt.step()
        round_state_(topt, ref[1:], ("exp_avg", "exp_avg_sq"), bf16)
    assert "master_param" not in opt.state[ours[0]]
    assert opt.state[ours[0]]["exp_avg"].dtype == torch.complex64
    assert opt.state[ours[1]]["exp_avg"].dtype == bf16
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-6, atol=1e-6)  # as test_optim's complex cases
    bound = 2.0**-22 * 10 * ref[1].abs().max().item()  # sqrt's last bit, see the bf16-state test
    assert (opt.state[ours[1]]["master_param"] - ref[1]).abs().max().item() <= bound


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_deepcopy_and_pickle_keep_the_options(config):
    import pickle

    dtype, kw = CONFIGS[config]
    torch.manual_seed(8)
    ours_p, ref_p = make_params([dtype] * len(SHAPES))
    opt = so.FusedSGD(groups_of(ours_p), momentum=0.9, **kw)
    set_grads(ours_p, ref_p, 0)
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        for name in ("master_weights", "stochastic_rounding", "state_dtype", "rounding_seed"):
            assert getattr(clone, name) == getattr(opt, name), name


def test_loading_masters_into_an_optimizer_without_them_drops_them():
    ours_p, ref_p = make_params([bf16] * len(SHAPES))
    opt = so.FusedAdamW(ours_p, master_weights=True)
    set_grads(ours_p, ref_p, 0)
    opt.step()
    plain_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    plain = so.FusedAdamW(plain_p)
    plain.load_state_dict(roundtrip(opt.state_dict()))
    for p in plain_p:
        assert "master_param" not in plain.state[p]
        assert plain.state[p]["exp_avg"].dtype == bf16  # the param's dtype, as without the option
    set_grads(plain_p, ref_p, 1)
    plain.step()


def test_a_state_dict_without_a_seed_keeps_the_optimizers_seed():
    # torch's own state_dicts carry no "rounding_seed": loading one leaves ours as it is.
    ours_p, ref_p = make_params([bf16] * len(SHAPES))
    torch.manual_seed(12)
    opt = so.FusedAdamW(ours_p, stochastic_rounding=True)
    seed = opt.rounding_seed
    t = torch.optim.AdamW(ref_p)
    set_grads(ref_p, ref_p, 0)
    t.step()
    opt.load_state_dict(roundtrip(t.state_dict()))
    assert opt.rounding_seed == seed
    for p in ours_p:
        assert opt.state[p]["exp_avg"].dtype == bf16
