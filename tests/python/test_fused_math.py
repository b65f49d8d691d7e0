"""The fused steps' arithmetic against torch's own optimizers on CPU, to the last bit.

Without clipping, FusedAdam/FusedAdamW/FusedSGD must give exactly torch.optim.Adam/AdamW/SGD's
params and state (fp32 and fp64), whatever the betas, amsgrad (NaN included), weight decay,
momentum, dampening, nesterov and maximize. With clipping, against clip_grad_norm_ + torch's
step, to the tolerance each dtype's norm rounding leaves. Also: the ops' argument lists
(every list the step reads is as long as params) and the layouts the kernels walk.
"""

import subprocess
import sys
import textwrap

import pytest
import torch

from steadystep import optim as so

# Sizes that give ATen's vector loop and its scalar tail work (AVX512: 32 fp32 per
# iteration), and a shape with size-1 dims.
SHAPES = [(3, 5), (1,), (37,), (64, 33), (4, 1, 5)]
STEPS = 25


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def set_grads(ours, theirs, step, scale=1.0, nan_at=None):
    gen = torch.Generator().manual_seed(1000 + step)
    for i, (p, q) in enumerate(zip(ours, theirs)):
        g = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale).to(p.dtype)
        if nan_at is not None and nan_at == (step, i):
            g.view(-1)[g.numel() // 2] = float("nan")
        p.grad = g.clone()
        q.grad = g.clone()


def assert_bitwise(a, b, what):
    """Same bits, NaN for NaN (torch.equal is False on NaN; NaN payloads are not compared)."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b), f"{what}: NaN at different places"
    int_dtype = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    a_bits = a.detach().masked_fill(nan_a, 0).contiguous().view(int_dtype)
    b_bits = b.detach().masked_fill(nan_b, 0).contiguous().view(int_dtype)
    if not torch.equal(a_bits, b_bits):
        diff = (a_bits != b_bits).sum().item()
        err = (a.detach() - b.detach()).abs().nan_to_num().max().item()
        raise AssertionError(f"{what}: {diff} of {a.numel()} elements differ (max abs {err:g})")


def assert_same_run(ours, theirs, opt_ours, opt_theirs, keys, step):
    for i, (p, q) in enumerate(zip(ours, theirs)):
        assert_bitwise(p, q, f"step {step}: param {i}")
        for key in keys:
            assert_bitwise(opt_ours.state[p][key], opt_theirs.state[q][key], f"step {step}: {key} of param {i}")


def run_bitwise(make_ours, make_theirs, keys, dtype, nan_at=None, steps=STEPS, scale=1.0):
    ours = make_params(dtype)
    theirs = clone_params(ours)
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    for step in range(steps):
        set_grads(ours, theirs, step, scale, nan_at)
        opt_ours.step()
        opt_theirs.step()
        assert_same_run(ours, theirs, opt_ours, opt_theirs, keys, step)


ADAM_CASES = [
    dict(betas=(0.0, 0.99)),
    dict(betas=(0.9, 0.999)),
    dict(betas=(0.3, 0.5), eps=1e-3),
    dict(betas=(0.6, 0.9), weight_decay=0.1),
    dict(betas=(0.9, 0.999), weight_decay=0.1, maximize=True),
    dict(betas=(0.9, 0.999), amsgrad=True),
    dict(betas=(0.0, 0.99), amsgrad=True, weight_decay=0.05),
]


def adam_keys(kw):
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
def test_adam_bitwise(dtype, kw, decoupled):
    kw = dict(kw, lr=3e-2)
    ours_cls, torch_cls = (so.FusedAdamW, torch.optim.AdamW) if decoupled else (so.FusedAdam, torch.optim.Adam)
    if decoupled:
        kw.setdefault("weight_decay", 1e-2)
    run_bitwise(
        lambda ps: ours_cls(ps, skip_nonfinite=False, **kw),
        lambda ps: torch_cls(ps, foreach=False, **kw),
        adam_keys(kw), dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_default_path_bitwise(dtype):
    # torch's default on CPU (foreach=None) is the single-tensor path too; check the default itself.
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-3)
    run_bitwise(lambda ps: so.FusedAdam(ps, skip_nonfinite=False, **kw), lambda ps: torch.optim.Adam(ps, **kw),
                adam_keys(kw), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_beta1_zero_exp_avg_is_grad(dtype):
    # torch's lerp with weight 1 takes the far end: exp_avg == grad exactly.
    p = make_params(dtype)
    opt = so.FusedAdam(p, lr=1e-2, betas=(0.0, 0.99), skip_nonfinite=False)
    for step in range(3):
        set_grads(p, clone_params(p), step)
        opt.step()
        for q in p:
            assert torch.equal(opt.state[q]["exp_avg"], q.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_nan_grad_bitwise(dtype, amsgrad):
    # A NaN in one gradient element (skip_nonfinite=False): it spreads exactly as in torch.
    kw = dict(lr=1e-2, betas=(0.9, 0.999), amsgrad=amsgrad)
    run_bitwise(lambda ps: so.FusedAdam(ps, skip_nonfinite=False, **kw),
                lambda ps: torch.optim.Adam(ps, foreach=False, **kw),
                adam_keys(kw), dtype, nan_at=(4, 3), steps=10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_amsgrad_max_keeps_nan(dtype):
    # torch.maximum propagates NaN: a NaN already in max_exp_avg_sq (a loaded state) stays.
    kw = dict(lr=1e-2, betas=(0.9, 0.999), amsgrad=True)
    ours = make_params(dtype)
    theirs = clone_params(ours)
    opt_ours = so.FusedAdam(ours, skip_nonfinite=False, **kw)
    opt_theirs = torch.optim.Adam(theirs, foreach=False, **kw)
    for step in range(6):
        set_grads(ours, theirs, step)
        if step == 2:
            for opt, ps in ((opt_ours, ours), (opt_theirs, theirs)):
                opt.state[ps[3]]["max_exp_avg_sq"].view(-1)[7] = float("nan")
        opt_ours.step()
        opt_theirs.step()
        assert_same_run(ours, theirs, opt_ours, opt_theirs, adam_keys(kw), step)
    assert torch.isnan(opt_ours.state[ours[3]]["max_exp_avg_sq"].view(-1)[7])


SGD_CASES = [
    dict(),
    dict(weight_decay=0.1),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3, weight_decay=0.05),
    dict(momentum=0.8, nesterov=True, weight_decay=0.01),
    dict(momentum=0.9, maximize=True),
    dict(maximize=True, weight_decay=0.2),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_bitwise(dtype, kw):
    kw = dict(kw, lr=3e-2)
    keys = ["momentum_buffer"] if kw.get("momentum") else []
    run_bitwise(lambda ps: so.FusedSGD(ps, skip_nonfinite=False, **kw),
                lambda ps: torch.optim.SGD(ps, foreach=False, **kw), keys, dtype)


# With clipping the gradients pass through two different norm computations (torch's per-tensor
# vector_norm then the norm of the norms; ours one fused pass), which may round the norm, and so
# the clip coefficient, one or two ulps apart; after that each step is the same arithmetic.
# The gradients then differ by ~1 ulp of their dtype; Adam's update (m / sqrt(v)) carries that
# relative error into each step's update, which is at most ~lr, so after n steps a param is at
# most ~n * lr * few * eps away (absolute). fp32: eps 1.2e-7, n*lr = 25*3e-2 -> ~1e-7 per unit;
# we allow 2e-6 relative to the params' scale. fp64: eps 2.2e-16 -> we allow 1e-13 relative, the
# figure the issue asks for (an fp32 coefficient, the old behaviour, gives ~1e-8).
CLIP_RTOL = {torch.float32: 2e-6, torch.float64: 1e-13}


def assert_close_scaled(a, b, rtol, what):
    scale = max(b.abs().max().item(), 1e-30)
    err = (a.detach() - b.detach()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs diff {err:g} > {rtol:g} * {scale:g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt", ["Adam", "AdamW", "SGD"])
def test_clipped_step_close(dtype, opt):
    kws = {"Adam": dict(lr=3e-2, betas=(0.9, 0.999)), "AdamW": dict(lr=3e-2, weight_decay=0.1),
           "SGD": dict(lr=3e-2, momentum=0.9, nesterov=True)}
    kw = kws[opt]
    ours = make_params(dtype)
    theirs = clone_params(ours)
    opt_ours = getattr(so, "Fused" + opt)(ours, max_grad_norm=1.0, **kw)
    opt_theirs = getattr(torch.optim, opt)(theirs, foreach=False, **kw)
    for step in range(50):
        set_grads(ours, theirs, step, scale=5.0)  # norms ~ 5 * sqrt(2.2k): always clipped
        opt_ours.step()
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        opt_theirs.step()
    for i, (p, q) in enumerate(zip(ours, theirs)):
        assert_close_scaled(p, q, CLIP_RTOL[dtype], f"param {i}")


# ---- the op's argument lists (issue 11, item 8): a short list must raise, never crash ----

_LIST_CASES = r"""
import torch
import steadystep  # registers the ops

ops = torch.ops.steadystep
def ps(n=2):
    return [torch.randn(3) for _ in range(n)]
def steps(n=2):
    return [torch.ones(()) for _ in range(n)]
def adam(params, grads, m, v, vmax, st, amsgrad=False):
    return ops.fused_adam_(params, grads, m, v, vmax, st, [len(params)], [1e-3], [0.9], [0.999], [1e-8],
                           [0.0], [amsgrad], [False], [False], None, 2.0, False, None, None,
                           torch.zeros((), dtype=torch.int64), None, [], [], [], None, [], None)
def sgd(params, grads, bufs, st, momentum=0.9):
    return ops.fused_sgd_(params, grads, bufs, st, [len(params)], [1e-3], [momentum], [0.0], [0.0],
                          [False], [False], None, 2.0, False, None, None, torch.zeros((), dtype=torch.int64),
                          None, [], [], [], None, [], None)
def adam_kernel(params, grads, m, v, vmax, st, amsgrad=False):
    return ops._adam_step_(params, grads, m, v, vmax, st, 1e-3, 0.9, 0.999, 1e-8, 0.0, amsgrad, False, False,
                           None, None, [], [])
def sgd_kernel(params, grads, bufs, st, momentum=0.9):
    return ops._sgd_step_(params, grads, bufs, st, 1e-3, momentum, 0.0, 0.0, False, False, None, None, [], [])

cases = {
    "adam:exp_avgs": lambda: adam(ps(), ps(), [], ps(), [], steps()),
    "adam:exp_avg_sqs": lambda: adam(ps(), ps(), ps(), [], [], steps()),
    "adam:grads": lambda: adam(ps(), [], ps(), ps(), [], steps()),
    "adam:max_exp_avg_sqs": lambda: adam(ps(), ps(), ps(), ps(), [], steps(), amsgrad=True),
    "adam:exp_avgs_short": lambda: adam(ps(), ps(), ps(1), ps(), [], steps()),
    "adam:max_exp_avg_sqs_short": lambda: adam(ps(), ps(), ps(), ps(), ps(1), steps()),
    "adam:steps": lambda: adam(ps(), ps(), ps(), ps(), [], steps(1)),
    "sgd:momentum_buffers": lambda: sgd(ps(), ps(), [], steps()),
    "sgd:momentum_buffers_short": lambda: sgd(ps(), ps(), ps(1), steps(), momentum=0.0),
    "sgd:grads": lambda: sgd(ps(), ps(1), ps(), steps()),
    "sgd:steps": lambda: sgd(ps(), ps(), ps(), []),
    "_adam_step_:exp_avgs": lambda: adam_kernel(ps(), ps(), [], ps(), [], steps()),
    "_adam_step_:exp_avg_sqs": lambda: adam_kernel(ps(), ps(), ps(), [], [], steps()),
    "_adam_step_:grads": lambda: adam_kernel(ps(), [], ps(), ps(), [], steps()),
    "_adam_step_:max_exp_avg_sqs": lambda: adam_kernel(ps(), ps(), ps(), ps(), [], steps(), amsgrad=True),
    "_sgd_step_:momentum_buffers": lambda: sgd_kernel(ps(), ps(), [], steps()),
    "_sgd_step_:grads": lambda: sgd_kernel(ps(), [], ps(), steps()),
}
for name, call in cases.items():
    try:
        call()
        print(f"{name}\tNO ERROR", flush=True)
    except RuntimeError as e:
        print(f"{name}\t{str(e).splitlines()[0]}", flush=True)
"""

LIST_CASE_NAMES = [
    "adam:exp_avgs", "adam:exp_avg_sqs", "adam:grads", "adam:max_exp_avg_sqs", "adam:exp_avgs_short",
    "adam:max_exp_avg_sqs_short", "adam:steps", "sgd:momentum_buffers", "sgd:momentum_buffers_short",
    "sgd:grads", "sgd:steps", "_adam_step_:exp_avgs", "_adam_step_:exp_avg_sqs", "_adam_step_:grads",
    "_adam_step_:max_exp_avg_sqs", "_sgd_step_:momentum_buffers", "_sgd_step_:grads",
]


@pytest.fixture(scope="module")
def list_case_results():
    # In a child process: before the fix some of these dereference null pointers (segfault).
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_LIST_CASES)], capture_output=True, text=True,
                          timeout=300)
    results = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    return results, proc


@pytest.mark.parametrize("case", LIST_CASE_NAMES)
def test_short_list_raises(list_case_results, case):
    results, proc = list_case_results
    assert case in results, f"crashed before or at {case} (rc {proc.returncode}): {proc.stderr[-2000:]}"
    arg = case.split(":")[1].removesuffix("_short")
    message = results[case]
    assert message != "NO ERROR", f"{case}: accepted"
    assert arg in message and "params has 2" in message, message


# ---- layouts (issue 11, item 3): strides only matter where the size is > 1 ----

def _adam_op_step(params, grads, state, step_count):
    steps = [torch.full((), float(step_count - 1)) for _ in params]  # the op advances them
    torch.ops.steadystep.fused_adam_(
        params, grads, state["exp_avg"], state["exp_avg_sq"], [], steps, [len(params)], [1e-2], [0.9],
        [0.999], [1e-8], [0.0], [False], [False], [False], None, 2.0, False, None, None,
        torch.zeros((), dtype=torch.int64), None, [], [], [], None, [], None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape,grad_strides",
    [((3, 1), (1, 3)), ((4, 1, 5), (5, 100, 1)), ((1, 6), (7, 1)), ((1, 1), (5, 9))],
    ids=str,
)
def test_size_one_dims_any_stride_bitwise(dtype, shape, grad_strides):
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(shape, generator=gen, dtype=dtype)
    q = p.clone().requires_grad_()
    state = {"exp_avg": [torch.zeros_like(p)], "exp_avg_sq": [torch.zeros_like(p)]}
    opt = torch.optim.Adam([q], lr=1e-2, betas=(0.9, 0.999), foreach=False)
    for step in range(1, 6):
        storage = torch.randn(200, generator=gen, dtype=dtype)
        g = storage.as_strided(shape, grad_strides)
        assert g.stride() == grad_strides != p.stride()
        _adam_op_step([p], [g], state, step)
        q.grad = g.clone()
        opt.step()
        assert_bitwise(p, q, f"step {step}: param")
        assert_bitwise(state["exp_avg"][0], opt.state[q]["exp_avg"], f"step {step}: exp_avg")
        assert_bitwise(state["exp_avg_sq"][0], opt.state[q]["exp_avg_sq"], f"step {step}: exp_avg_sq")


def test_transposed_param_with_matching_grad_bitwise():
    # A dense non-contiguous param walks memory in its own order; a grad laid out alike matches.
    p = torch.randn(5, 4).t()
    q = p.detach().clone().requires_grad_()
    state = {"exp_avg": [torch.zeros_like(p)], "exp_avg_sq": [torch.zeros_like(p)]}
    opt = torch.optim.Adam([q], lr=1e-2, foreach=False)
    for step in range(1, 4):
        g = torch.randn(5, 4).t()
        _adam_op_step([p], [g], state, step)
        q.grad = g.clone()
        opt.step()
        assert_bitwise(p, q, f"step {step}")


@pytest.mark.parametrize("make_grad", [lambda: torch.randn(4, 3).t(), lambda: torch.randn(3, 8)[:, ::2],
                                       lambda: torch.randn(1, 4).expand(3, 4)], ids=["t", "step2", "expand"])
def test_other_grad_layouts_refused_by_op(make_grad):
    # A grad that walks memory differently from its param cannot share the flat pass: the op
    # refuses it with a message saying why (steadystep.optim stages such grads through a copy).
    p = torch.randn(3, 4)
    state = {"exp_avg": [torch.zeros_like(p)], "exp_avg_sq": [torch.zeros_like(p)]}
    with pytest.raises(RuntimeError, match=r"grads\[0\].*strides of every dimension of size > 1"):
        _adam_op_step([p], [make_grad()], state, 1)


@pytest.mark.parametrize("opt", ["Adam", "SGD"])
def test_fp64_clipped_and_unscaled_in_fp64(opt):
    # GradScaler (a scale whose reciprocal is inexact) + clipping on fp64 params: torch unscales
    # with the fp32 inverse scale and clips with an fp64 coefficient; so must the fused step.
    # Rounding differences per step are ~1e-16 relative; 1e-13 after 30 steps (see CLIP_RTOL).
    kw = {"Adam": dict(lr=3e-2), "SGD": dict(lr=3e-2, momentum=0.9)}[opt]
    ours = make_params(torch.float64)
    theirs = clone_params(ours)
    opt_ours = getattr(so, "Fused" + opt)(ours, max_grad_norm=1.0, **kw)
    opt_theirs = getattr(torch.optim, opt)(theirs, foreach=False, **kw)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1000.0, growth_interval=10**6) for _ in range(2)]
    for step in range(30):
        set_grads(ours, theirs, step, scale=5.0 * 1000.0)  # as if scaled by the scaler
        for scaler in scalers:
            scaler.scale(torch.ones(()))  # the scaler starts its bookkeeping here
        scalers[0].step(opt_ours)
        scalers[0].update()
        scalers[1].unscale_(opt_theirs)
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        scalers[1].step(opt_theirs)
        scalers[1].update()
    for i, (p, q) in enumerate(zip(ours, theirs)):
        assert_close_scaled(p, q, CLIP_RTOL[torch.float64], f"param {i}")
