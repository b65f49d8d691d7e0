"""steadystep.optim against clip_grad_norm_ + torch.optim itself."""

import copy
import io
import math

import pytest
import torch

import steadystep
from conftest import devices
from steadystep import optim as so

SHAPES = [(3, 5), (1,), (17,), (64, 33), (1000,)]


def make_params(device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(device=device, dtype=dtype)) for s in SHAPES]


def groups_of(params, lrs=(1e-2, 3e-3)):
    # Two param groups with different lrs (the promise holds per group).
    return [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[1]}]


def set_grads(ours, theirs, step, scale=3.0):
    gen = torch.Generator().manual_seed(1000 + step)
    for p, q in zip(ours, theirs):
        g = (torch.randn(p.shape, generator=gen) * scale).to(device=p.device, dtype=p.dtype)
        p.grad = g.clone()
        q.grad = g.clone()


def assert_close_scaled(a, b, rtol):
    # Relative to the tensor's own scale: the two sides round differently (FMA contraction,
    # operation fusion), each rounding an absolute error of about eps * |value|, so elements
    # near zero are compared against the tensor's magnitude, not their own.
    scale = b.abs().max().item() if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(scale, 1e-30))


def run_pair(make_ours, make_theirs, max_grad_norm=None, norm_type=2.0, steps=100, device="cpu",
             dtype=torch.float32, scheduler=None):
    ours_p, theirs_p = make_params(device, dtype), make_params(device, dtype)
    ours = make_ours(groups_of(ours_p), max_grad_norm=max_grad_norm, norm_type=norm_type)
    theirs = make_theirs(groups_of(theirs_p))
    scheds = (scheduler(ours), scheduler(theirs)) if scheduler else None
    for step in range(steps):
        set_grads(ours_p, theirs_p, step)
        ours.step()
        if max_grad_norm is not None:
            want = torch.nn.utils.clip_grad_norm_(theirs_p, max_grad_norm, norm_type)
            assert ours.last_grad_norm is not None
            torch.testing.assert_close(ours.last_grad_norm, want.float(), rtol=1e-5, atol=0)
        theirs.step()
        if scheds:
            scheds[0].step()
            scheds[1].step()
    return ours_p, theirs_p, ours, theirs


ADAM_CASES = [
    dict(),
    dict(amsgrad=True),
    dict(maximize=True),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True),
    dict(betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.05),
]
CLIP = [(None, 2.0), (1.0, 2.0), (0.5, math.inf), (5.0, 1.0)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
@pytest.mark.parametrize("max_grad_norm,norm_type", CLIP)
def test_fused_adam_matches_clip_then_adam(device, kwargs, max_grad_norm, norm_type):
    ours_p, theirs_p, ours, theirs = run_pair(
        lambda g, **c: so.FusedAdam(g, **kwargs, **c), lambda g: torch.optim.Adam(g, **kwargs),
        max_grad_norm, norm_type, device=device,
        scheduler=lambda o: steadystep.lr_scheduler.CosineAnnealingLR(o, 50),
    )
    for p, q in zip(ours_p, theirs_p):
        assert_close_scaled(p, q, 1e-5)
        for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if kwargs.get("amsgrad") else ()):
            assert_close_scaled(ours.state[p][key], theirs.state[q][key], 1e-5)
        assert ours.state[p]["step"].item() == theirs.state[q]["step"].item() == 100


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_fused_adamw_matches_clip_then_adamw(device, max_grad_norm):
    ours_p, theirs_p, ours, theirs = run_pair(
        lambda g, **c: so.FusedAdamW(g, weight_decay=0.05, **c), lambda g: torch.optim.AdamW(g, weight_decay=0.05),
        max_grad_norm, device=device, scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 30, 0.5),
    )
    for p, q in zip(ours_p, theirs_p):
        assert_close_scaled(p, q, 1e-5)
    assert so.FusedAdamW(make_params()).defaults["weight_decay"] == 1e-2


SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, weight_decay=0.01, maximize=True),
    dict(weight_decay=0.1),
]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
@pytest.mark.parametrize("max_grad_norm,norm_type", CLIP)
def test_fused_sgd_matches_clip_then_sgd(device, kwargs, max_grad_norm, norm_type):
    ours_p, theirs_p, ours, theirs = run_pair(
        lambda g, **c: so.FusedSGD(g, lr=1e-2, **kwargs, **c), lambda g: torch.optim.SGD(g, lr=1e-2, **kwargs),
        max_grad_norm, norm_type, device=device,
        scheduler=lambda o: steadystep.lr_scheduler.OneCycleLR(o, 0.05, total_steps=100, cycle_momentum=False),
    )
    for p, q in zip(ours_p, theirs_p):
        assert_close_scaled(p, q, 1e-5)
        if kwargs.get("momentum"):
            assert_close_scaled(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"], 1e-5)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_low_precision_matches_torch_fused(device, dtype, rtol):
    # State in the param's dtype, math in fp32, as torch's fused=True. Each step rounds the
    # state once to fp16/bf16; over 10 steps the two sides drift by a few such roundings.
    ours_p, theirs_p, ours, theirs = run_pair(
        lambda g, **c: so.FusedAdam(g, weight_decay=0.01, **c),
        lambda g: torch.optim.Adam(g, weight_decay=0.01, fused=True),
        None, steps=10, device=device, dtype=dtype,
    )
    for p, q in zip(ours_p, theirs_p):
        assert p.dtype == dtype and ours.state[p]["exp_avg"].dtype == dtype
        assert_close_scaled(p.float(), q.float(), rtol)


def test_several_tensors_many_shapes_and_params_without_grad():
    ours_p, theirs_p = make_params(), make_params()
    extra_o, extra_t = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    ours = so.FusedAdam(ours_p + [extra_o], lr=1e-2, max_grad_norm=1.0)
    theirs = torch.optim.Adam(theirs_p + [extra_t], lr=1e-2)
    for step in range(20):
        set_grads(ours_p, theirs_p, step)
        ours.step()
        torch.nn.utils.clip_grad_norm_(theirs_p, 1.0)
        theirs.step()
    assert torch.equal(extra_o, torch.ones(4)) and extra_o not in ours.state
    for p, q in zip(ours_p, theirs_p):
        assert_close_scaled(p, q, 1e-5)


# ---- the non-finite guard -----------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("make", [
    lambda g: so.FusedAdam(g, lr=1e-2, amsgrad=True, max_grad_norm=1.0),
    lambda g: so.FusedAdamW(g, lr=1e-2),
    lambda g: so.FusedSGD(g, lr=1e-2, momentum=0.9, max_grad_norm=2.0),
    lambda g: so.FusedSGD(g, lr=1e-2, momentum=0.9),  # first step skipped: buffer still fresh
], ids=["adam-amsgrad-clip", "adamw", "sgd-clip", "sgd"])
@pytest.mark.parametrize("bad", [math.inf, math.nan, -math.inf])
def test_nonfinite_step_changes_nothing_and_training_continues(device, make, bad):
    skip_at = 3
    for first in (False, True):
        k = 0 if first else skip_at
        ours_p, clean_p = make_params(device), make_params(device)
        ours, clean = make(groups_of(ours_p)), make(groups_of(clean_p))
        clean_step = 0
        for step in range(8):
            set_grads(ours_p, clean_p, 100 + step)
            if step == k:
                ours_p[3].grad[5, 7] = bad
                before = [p.detach().clone() for p in ours_p]
                state_before = copy.deepcopy(ours.state_dict()["state"])
                ours.step()
                for p, b in zip(ours_p, before):
                    assert torch.equal(p, b)  # bit-identical
                for idx, st in ours.state_dict()["state"].items():
                    for key, value in st.items():
                        if key in state_before.get(idx, {}):
                            assert torch.equal(value, state_before[idx][key]), key
                assert ours.skipped_steps.item() == 1
                assert not torch.isfinite(ours.last_grad_norm)
                continue
            ours.step()
            clean.step()
            clean_step += 1
        for p, q in zip(ours_p, clean_p):
            assert torch.equal(p, q)  # as if step k had never happened
        assert ours.skipped_steps.item() == 1


def test_skip_nonfinite_off_lets_nan_through_like_torch():
    ours_p, theirs_p = make_params(), make_params()
    ours = so.FusedAdam(ours_p, max_grad_norm=1.0, skip_nonfinite=False)
    theirs = torch.optim.Adam(theirs_p)
    set_grads(ours_p, theirs_p, 0)
    ours_p[0].grad[0, 0] = theirs_p[0].grad[0, 0] = math.nan
    ours.step()
    torch.nn.utils.clip_grad_norm_(theirs_p, 1.0)
    theirs.step()
    for p, q in zip(ours_p, theirs_p):
        assert torch.equal(p.isnan(), q.isnan())
    assert ours.skipped_steps.item() == 0


# ---- AMP: GradScaler hands its scale to the step ------------------------------------------


def test_grad_scaler_flow_matches_torch():
    torch.manual_seed(0)
    model_o = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model_t = copy.deepcopy(model_o)
    ours = so.FusedAdam(model_o.parameters(), lr=1e-2, max_grad_norm=0.5)
    theirs = torch.optim.Adam(model_t.parameters(), lr=1e-2)
    scaler_o = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    scaler_t = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    for step in range(20):
        for model, opt, scaler in ((model_o, ours, scaler_o), (model_t, theirs, scaler_t)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            if step == 7:  # an overflow: both must skip the step and back off the scale
                next(model.parameters()).grad[0, 0] = math.inf
            if opt is theirs:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
        assert scaler_o.get_scale() == scaler_t.get_scale()
    for p, q in zip(model_o.parameters(), model_t.parameters()):
        assert_close_scaled(p, q, 1e-5)
    assert ours.skipped_steps.item() == 1


# ---- checkpoints ----------------------------------------------------------------------------


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("pair", [
    (lambda g: so.FusedAdam(g, amsgrad=True), lambda g: torch.optim.Adam(g, amsgrad=True)),
    (lambda g: so.FusedAdamW(g), lambda g: torch.optim.AdamW(g)),
    (lambda g: so.FusedSGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9)),
], ids=["adam", "adamw", "sgd"])
def test_checkpoints_cross_load_with_torch(pair):
    make_ours, make_theirs = pair
    for src_make, dst_make in ((make_theirs, make_ours), (make_ours, make_theirs)):
        ref_p, src_p = make_params(), make_params()
        ref, src = make_theirs(groups_of(ref_p)), src_make(groups_of(src_p))
        for step in range(5):
            set_grads(ref_p, src_p, step)
            ref.step()
            src.step()
        state = roundtrip(src.state_dict())
        dst_p = [torch.nn.Parameter(p.detach().clone()) for p in src_p]
        dst = dst_make(groups_of(dst_p))
        dst.load_state_dict(state)
        for step in range(5, 15):
            set_grads(ref_p, dst_p, step)
            ref.step()
            dst.step()
        for p, q in zip(dst_p, ref_p):
            assert_close_scaled(p, q, 1e-5)


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("make,word", [
    (lambda p: so.FusedAdam(p, lr=-1.0), "learning rate"),
    (lambda p: so.FusedAdam(p, eps=-1e-8), "epsilon"),
    (lambda p: so.FusedAdam(p, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda p: so.FusedAdam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: so.FusedAdam(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: so.FusedAdamW(p, max_grad_norm=0.0), "max_grad_norm"),
    (lambda p: so.FusedAdam(p, max_grad_norm=-1.0), "max_grad_norm"),
    (lambda p: so.FusedAdam(p, norm_type=-2.0), "norm_type"),
    (lambda p: so.FusedSGD(p, lr=-0.1), "learning rate"),
    (lambda p: so.FusedSGD(p, momentum=-0.5), "momentum"),
    (lambda p: so.FusedSGD(p, nesterov=True), "Nesterov"),
    (lambda p: so.FusedSGD(p, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: so.FusedSGD(p, weight_decay=-1.0), "weight_decay"),
])
def test_bad_arguments_raise_before_anything_changes(make, word):
    params = make_params()
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=word):
        make(params)
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_sparse_grads_and_bad_hyper_parameters_at_step_time_change_nothing():
    params = make_params()
    opt = so.FusedAdam(params, max_grad_norm=1.0)
    set_grads(params, make_params(), 0)
    before = [p.detach().clone() for p in params]
    params[1].grad = params[1].grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse|strided"):
        opt.step()
    params[1].grad = torch.zeros(params[1].shape)
    opt.param_groups[0]["eps"] = -1.0  # (a negative lr is torch's gradient ascent: test_optim_compat)
    with pytest.raises(ValueError, match="epsilon"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(opt.state[p]["step"].item() == 0 for p in params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("make", [
    lambda g: so.FusedAdam(g, lr=1e-3, max_grad_norm=1.0, amsgrad=True),
    lambda g: so.FusedSGD(g, lr=1e-3, momentum=0.9, max_grad_norm=1.0),
])
def test_cuda_step_does_not_synchronize(make):
    params = make_params("cuda")
    opt = make(params)
    for step in range(2):  # the first step allocates state; time the steady state
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3):
            for p in params:
                p.grad.normal_()
            if step == 1:
                params[0].grad[0, 0] = math.inf
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert opt.skipped_steps.item() == 1


def test_params_of_several_dtypes_are_grouped():
    # fp32 and fp64 params in one group: each dtype takes its own kernel, the norm spans both.
    make = lambda: [torch.nn.Parameter(torch.randn(50)), torch.nn.Parameter(torch.randn(7, dtype=torch.float64))]  # noqa: E731
    ours_p, theirs_p = make(), make()
    for p, q in zip(ours_p, theirs_p):
        q.data.copy_(p.data)
    ours = so.FusedAdam(ours_p, lr=1e-2, max_grad_norm=1.0)
    theirs = torch.optim.Adam(theirs_p, lr=1e-2)
    for step in range(20):
        set_grads(ours_p, theirs_p, step)
        ours.step()
        torch.nn.utils.clip_grad_norm_(theirs_p, 1.0)
        theirs.step()
    for p, q in zip(ours_p, theirs_p):
        assert p.dtype == q.dtype
        assert_close_scaled(p, q, 1e-5)
