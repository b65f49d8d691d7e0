"""steadystep.optim as a drop-in for torch.optim: copies, checkpoints (old and new), the layouts
torch accepts, differentiable=True, momentum buffers, error parity and GradScaler's gradients."""

import copy
import io
import math
import pickle

import pytest
import torch

from steadystep import optim as so


def make_params(shapes=((4, 3), (5,), (2, 2, 3)), seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def random_grads(params, step, scale=3.0):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale for p in params]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()


def roundtrip(obj, weights_only=True):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def assert_close_scaled(a, b, rtol=1e-5):
    scale = b.abs().max().item() if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(scale, 1e-30))


PAIRS = {
    "adam": (lambda g, **k: so.FusedAdam(g, lr=1e-2, amsgrad=True, **k), lambda g: torch.optim.Adam(g, lr=1e-2, amsgrad=True)),
    "adamw": (lambda g, **k: so.FusedAdamW(g, lr=1e-2, **k), lambda g: torch.optim.AdamW(g, lr=1e-2)),
    "sgd": (lambda g, **k: so.FusedSGD(g, lr=1e-2, momentum=0.9, dampening=0.1, **k),
            lambda g: torch.optim.SGD(g, lr=1e-2, momentum=0.9, dampening=0.1)),
}


# ---- item 1: deepcopy / pickle / torch.save(optimizer); skipped_steps in the state_dict -----


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_keep_fused_settings_and_counter(name, how):
    make = PAIRS[name][0]
    params = make_params()
    opt = make(params, max_grad_norm=0.7, norm_type=math.inf, write_back_grads=True)
    for step in range(3):
        grads = random_grads(params, step)
        if step == 1:
            grads[0][0, 0] = math.inf  # one skipped step
        set_grads(params, grads)
        opt.step()
    if how == "deepcopy":
        dup = copy.deepcopy(opt)
    elif how == "pickle":
        dup = pickle.loads(pickle.dumps(opt))
    else:
        dup = roundtrip(opt, weights_only=False)
    public = {k for k in opt.__dict__ if not k.startswith("_")}
    assert {k for k in dup.__dict__ if not k.startswith("_")} == public
    assert {"max_grad_norm", "norm_type", "skip_nonfinite", "write_back_grads"} <= public
    assert (dup.max_grad_norm, dup.norm_type, dup.skip_nonfinite, dup.write_back_grads) == (0.7, math.inf, True, True)
    assert dup._step_supports_amp_scaling is True
    assert dup.skipped_steps.item() == 1
    # Both take the same next step.
    dup_params = [p for g in dup.param_groups for p in g["params"]]
    grads = random_grads(params, 10)
    set_grads(params, grads)
    set_grads(dup_params, grads)
    opt.step()
    dup.step()
    for p, q in zip(params, dup_params):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_skipped_steps_survive_state_dict_and_torch_loads_it(name):
    make_ours, make_theirs = PAIRS[name]
    params = make_params()
    opt = make_ours(params)
    for step in range(3):
        grads = random_grads(params, step)
        if step != 1:
            grads[1][0] = math.nan
        set_grads(params, grads)
        opt.step()
    assert opt.skipped_steps.item() == 2
    state = roundtrip(opt.state_dict())
    assert state["skipped_steps"].item() == 2
    resumed = make_ours(clone_params(params))
    resumed.load_state_dict(state)
    assert resumed.skipped_steps.item() == 2
    # torch's optimizer loads it (the extra key is ignored) and steps; ours loads torch's dict
    # (without the key) and keeps its own counter.
    theirs_p = clone_params(params)
    theirs = make_theirs(theirs_p)
    theirs.load_state_dict(state)
    set_grads(theirs_p, random_grads(params, 5))
    theirs.step()
    resumed.load_state_dict(theirs.state_dict())
    assert resumed.skipped_steps.item() == 2


# ---- item 2: state_dicts of older torch versions; AdamW loading Adam ------------------------

NEW_FLAGS = ("maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_old_state_dict_without_new_flags_loads_and_steps_like_torch(name):
    make_ours, make_theirs = PAIRS[name]
    src_p = make_params()
    src = make_theirs(src_p)
    for step in range(3):
        set_grads(src_p, random_grads(src_p, step))
        src.step()
    old = copy.deepcopy(src.state_dict())
    for group in old["param_groups"]:
        for flag in NEW_FLAGS:
            group.pop(flag, None)
    ours_p, ref_p = clone_params(src_p), clone_params(src_p)
    ours, ref = make_ours(ours_p), make_theirs(ref_p)
    ours.load_state_dict(copy.deepcopy(old))
    ref.load_state_dict(copy.deepcopy(old))
    for key in ("maximize", "foreach", "differentiable", "fused"):
        assert ours.param_groups[0][key] == ref.param_groups[0][key], key
    for step in range(3, 6):
        grads = random_grads(src_p, step)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
    for p, q in zip(ours_p, ref_p):
        assert_close_scaled(p, q)


@pytest.mark.parametrize("source", ["torch.Adam", "FusedAdam"])
def test_adamw_loading_an_adam_checkpoint_is_adamw(source):
    src_p = make_params()
    src = torch.optim.Adam(src_p, weight_decay=0.1) if source == "torch.Adam" else so.FusedAdam(src_p, weight_decay=0.1)
    set_grads(src_p, random_grads(src_p, 0))
    src.step()
    state = roundtrip(src.state_dict())
    assert state["param_groups"][0]["decoupled_weight_decay"] is False
    ours_p, ref_p = clone_params(src_p), clone_params(src_p)
    ours, ref = so.FusedAdamW(ours_p), torch.optim.AdamW(ref_p)
    ours.load_state_dict(copy.deepcopy(state))
    ref.load_state_dict(copy.deepcopy(state))
    assert ours.param_groups[0]["decoupled_weight_decay"] is True
    for step in range(1, 4):
        grads = random_grads(src_p, step)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
    for p, q in zip(ours_p, ref_p):
        assert_close_scaled(p, q)


# ---- item 3: layouts torch accepts ---------------------------------------------------------


def _layout_cases():
    gen = torch.Generator().manual_seed(7)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    # (param, grads over 3 steps) where the grads' layout differs from the param's
    return {
        "transposed-grad": (r(5, 5), [r(5, 5).t() for _ in range(3)]),
        "expanded-grad": (r(4, 3), [r(1, 3).expand(4, 3) for _ in range(3)]),
        "strided-grad": (r(4, 3), [r(4, 6)[:, ::2] for _ in range(3)]),
        "size1-dim-grad": (r(3, 1), [r(1, 3).t() for _ in range(3)]),
        "noncontiguous-param": (r(10, 2)[..., 0], [r(10) for _ in range(3)]),
        "noncontiguous-param-and-grad": (r(6, 4).t(), [r(4, 6) for _ in range(3)]),
    }


LAYOUT_MAKERS = {
    "adam": (lambda g: so.FusedAdam(g, lr=1e-2, amsgrad=True, weight_decay=0.1, max_grad_norm=1.0),
             lambda g: torch.optim.Adam(g, lr=1e-2, amsgrad=True, weight_decay=0.1)),
    "sgd": (lambda g: so.FusedSGD(g, lr=1e-2, momentum=0.9, max_grad_norm=1.0),
            lambda g: torch.optim.SGD(g, lr=1e-2, momentum=0.9)),
}


@pytest.mark.parametrize("opt_name", sorted(LAYOUT_MAKERS))
@pytest.mark.parametrize("case", sorted(_layout_cases()))
def test_layouts_torch_accepts_step_like_contiguous_and_like_torch(opt_name, case):
    make_ours, make_theirs = LAYOUT_MAKERS[opt_name]
    param, grads = _layout_cases()[case]
    laid_out = torch.empty_strided(param.shape, param.stride())
    laid_out.copy_(param)
    odd = torch.nn.Parameter(laid_out)  # keeps the strides
    assert odd.stride() == param.stride()
    plain = torch.nn.Parameter(param.detach().contiguous().clone())
    ref = torch.nn.Parameter(param.detach().contiguous().clone())
    extra = [torch.nn.Parameter(torch.ones(7)) for _ in range(3)]  # a second, ordinary param
    ours, contiguous, theirs = make_ours([odd, extra[0]]), make_ours([plain, extra[1]]), make_theirs([ref, extra[2]])
    for step, g in enumerate(grads):
        g2 = torch.full((7,), 0.5 + step)
        odd.grad, extra[0].grad = g, g2.clone()
        plain.grad, extra[1].grad = g.contiguous().clone(), g2.clone()
        ref.grad, extra[2].grad = g.contiguous().clone(), g2.clone()
        ours.step()
        contiguous.step()
        torch.nn.utils.clip_grad_norm_([ref, extra[2]], 1.0)
        theirs.step()
        assert torch.equal(odd.detach(), plain.detach())  # the staging path is bit-identical
        assert torch.equal(extra[0], extra[1])
    assert_close_scaled(odd.detach(), ref.detach())
    assert odd.stride() == param.stride()


@pytest.mark.parametrize("opt_name", sorted(LAYOUT_MAKERS))
def test_complex_params_step_as_their_real_view(opt_name):
    make_ours, make_theirs = LAYOUT_MAKERS[opt_name]
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, dtype=torch.complex64, generator=gen)
    cplx = torch.nn.Parameter(z.clone())
    real = torch.nn.Parameter(torch.view_as_real(z).clone())
    ref = torch.nn.Parameter(z.clone())
    ours_c, ours_r, theirs = make_ours([cplx]), make_ours([real]), make_theirs([ref])
    for _ in range(4):
        g = torch.randn(4, 3, dtype=torch.complex64, generator=gen)
        cplx.grad, real.grad, ref.grad = g.clone(), torch.view_as_real(g).clone(), g.clone()
        ours_c.step()
        ours_r.step()
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        theirs.step()
        assert torch.equal(torch.view_as_real(cplx.detach()), real.detach())
    assert cplx.dtype == torch.complex64 and ours_c.state[cplx]["exp_avg" if opt_name == "adam" else "momentum_buffer"].is_complex()
    assert_close_scaled(torch.view_as_real(cplx.detach()), torch.view_as_real(ref.detach()))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_takes_sparse_grads(momentum):
    gen = torch.Generator().manual_seed(5)
    init = torch.randn(6, 3, generator=gen)
    sparse_p, dense_p, ref_p = (torch.nn.Parameter(init.clone()) for _ in range(3))
    kw = dict(lr=0.05, momentum=momentum, weight_decay=0.01)
    ours_sparse = so.FusedSGD([sparse_p], max_grad_norm=2.0, **kw)
    ours_dense = so.FusedSGD([dense_p], max_grad_norm=2.0, **kw)
    theirs = torch.optim.SGD([ref_p], **kw)
    for _ in range(5):
        # uncoalesced: row 1 appears twice
        idx = torch.tensor([[1, 4, 1]])
        val = torch.randn(3, 3, generator=gen) * 4
        g = torch.sparse_coo_tensor(idx, val, (6, 3))
        sparse_p.grad, dense_p.grad = g.clone(), g.to_dense()
        ref_p.grad = g.to_dense()
        ours_sparse.step()
        ours_dense.step()
        torch.nn.utils.clip_grad_norm_([ref_p], 2.0)
        theirs.step()
        assert torch.equal(sparse_p.detach(), dense_p.detach())
        assert sparse_p.grad.is_sparse  # the user's gradient is left as it was
    assert_close_scaled(sparse_p.detach(), ref_p.detach())


# ---- item 4: differentiable=True ---------------------------------------------------------


@pytest.mark.parametrize("make_pair", [
    (lambda g: so.FusedAdam(g, lr=0.1, weight_decay=0.1, differentiable=True, max_grad_norm=0.5),
     lambda g: torch.optim.Adam(g, lr=0.1, weight_decay=0.1, differentiable=True)),
    (lambda g: so.FusedSGD(g, lr=0.1, momentum=0.9, differentiable=True, max_grad_norm=0.5),
     lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, differentiable=True)),
], ids=["adam", "sgd"])
def test_differentiable_update_matches_torch_and_backpropagates(make_pair):
    make_ours, make_theirs = make_pair
    gen = torch.Generator().manual_seed(11)
    w0 = torch.randn(5, 4, generator=gen)
    results = []
    for side in ("ours", "theirs"):
        leaf = w0.clone().requires_grad_()
        w = leaf.clone()  # a non-leaf: the update is recorded on it
        opt = (make_ours if side == "ours" else make_theirs)([w])
        for step in range(3):
            g = (torch.randn(5, 4, generator=torch.Generator().manual_seed(step)) * 3).requires_grad_()
            if side == "theirs":
                norm = torch.linalg.vector_norm(g.detach())
                g = g * torch.clamp(0.5 / (norm + 1e-6), max=1.0)
            w.grad = g
            opt.step()
        (w * w).sum().backward()
        results.append((w.detach().clone(), leaf.grad.clone()))
    (w_ours, grad_ours), (w_theirs, grad_theirs) = results
    assert grad_ours is not None and grad_ours.abs().sum() > 0
    torch.testing.assert_close(w_ours, w_theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-6)


def test_differentiable_guard_skips_nonfinite_steps():
    leaf = torch.ones(3, requires_grad=True)
    w = leaf.clone()
    opt = so.FusedAdam([w], differentiable=True)
    w.grad = torch.tensor([1.0, math.inf, 0.0])
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3)) and opt.skipped_steps.item() == 1


# ---- item 5: SGD momentum buffer initialised whenever absent ---------------------------


@pytest.mark.parametrize("via", ["switched-on", "momentum-free-checkpoint"])
def test_sgd_buffer_initialised_from_grad_when_absent(via):
    init = make_params()
    ours_p, ref_p = clone_params(init), clone_params(init)
    ours = so.FusedSGD(ours_p, lr=0.05, momentum=0.0)
    ref = torch.optim.SGD(ref_p, lr=0.05, momentum=0.0)
    for step in range(3):
        grads = random_grads(init, step)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
    if via == "momentum-free-checkpoint":
        state = roundtrip(ours.state_dict())
        ours = so.FusedSGD(ours_p, lr=0.05, momentum=0.9, dampening=0.3)
        ours.load_state_dict(state)
    for opt in (ours, ref):
        for group in opt.param_groups:
            group["momentum"], group["dampening"] = 0.9, 0.3
    for step in range(3, 7):
        grads = random_grads(init, step)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        ref.step()
    for p, q in zip(ours_p, ref_p):
        assert_close_scaled(p, q)
        assert_close_scaled(ours.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"])


# ---- item 6: error parity ----------------------------------------------------------------


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test compares whatever was raised
        return type(e), str(e)
    return None


ERROR_CASES = [
    ("adam", dict(lr=torch.tensor([0.1, 0.1]))),
    ("sgd", dict(lr=torch.tensor([0.1, 0.1]))),
    ("adam", dict(lr="0.1")),
    ("sgd", dict(lr="0.1")),
    ("sgd", dict(momentum="0.9")),
    ("adam", dict(betas=(0.9, torch.tensor(0.99)))),
    ("adam", dict(betas=(torch.tensor(0.9), 0.99))),
    ("adam", dict(betas=(0, 0.99))),
    ("adam", dict(betas=(1.0, 0.9))),
    ("adam", dict(betas=(0.9, 1.5))),
    ("adam", dict(lr=-1.0)),
    ("adam", dict(eps=-1e-08)),
    ("adam", dict(weight_decay=-0.5)),
    ("adam", dict(lr=torch.tensor(0.01), foreach=True)),
    ("adam", dict(fused=True, differentiable=True)),
    ("adam", dict(fused=True, foreach=True)),
    ("sgd", dict(lr=-0.1)),
    ("sgd", dict(momentum=-0.5)),
    ("sgd", dict(weight_decay=-1.0)),
    ("sgd", dict(nesterov=True)),
    ("sgd", dict(momentum=0.9, dampening=0.1, nesterov=True)),
]
CLASSES = {"adam": (so.FusedAdam, torch.optim.Adam), "sgd": (so.FusedSGD, torch.optim.SGD)}


@pytest.mark.parametrize("name,kwargs", ERROR_CASES, ids=[f"{n}-{k}" for n, k in ERROR_CASES])
def test_constructor_errors_match_torch(name, kwargs):
    ours_cls, torch_cls = CLASSES[name]
    want = _raised(lambda: torch_cls([torch.nn.Parameter(torch.ones(2))], **kwargs))
    got = _raised(lambda: ours_cls([torch.nn.Parameter(torch.ones(2))], **kwargs))
    assert want is not None
    assert got == want


def test_three_betas_raise_at_step_as_torch():
    results = []
    for cls in (so.FusedAdam, torch.optim.Adam):
        p = torch.nn.Parameter(torch.ones(2))
        opt = cls([p], betas=(0.9, 0.99, 0.5))
        p.grad = torch.ones(2)
        results.append(_raised(opt.step))
        assert torch.equal(p.detach(), torch.ones(2))
    assert results[0] == results[1] and results[0][0] is ValueError


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_scheduler_may_take_the_lr_below_zero_as_with_torch(name):
    """torch checks lr >= 0 in the constructor only: LambdaLR with a cosine drives it negative and
    torch's step ascends the gradient. Ours steps the same, bit for bit."""
    make_ours, make_torch = PAIRS[name]
    ours, theirs = make_params(), make_params()
    opt, ref = make_ours(ours), make_torch(theirs)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda e: math.cos(e)) for o in (opt, ref)]
    lrs = []
    for step in range(8):
        grads = random_grads(ours, step)
        set_grads(ours, grads)
        set_grads(theirs, grads)
        opt.step()
        ref.step()
        for s in scheds:
            s.step()
        lrs.append(opt.param_groups[0]["lr"])
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), step
    assert min(lrs) < 0


def test_skip_nonfinite_and_write_back_grads_must_be_bools():
    for kwargs in (dict(skip_nonfinite="no"), dict(write_back_grads=1)):
        for cls in (so.FusedAdam, so.FusedAdamW, so.FusedSGD):
            with pytest.raises(TypeError, match="must be a bool"):
                cls([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_loaded_state_missing_exp_avg_raises_key_error_like_torch():
    src_p = make_params()
    src = torch.optim.Adam(src_p)
    set_grads(src_p, random_grads(src_p, 0))
    src.step()
    state = copy.deepcopy(src.state_dict())
    del state["state"][0]["exp_avg"]
    outcomes = []
    for cls in (so.FusedAdam, torch.optim.Adam):
        params = clone_params(src_p)
        opt = cls(params)
        opt.load_state_dict(copy.deepcopy(state))
        set_grads(params, random_grads(params, 1))
        before = [p.detach().clone() for p in params]
        outcomes.append(_raised(opt.step))
        assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert outcomes[0] == outcomes[1] == (KeyError, "'exp_avg'")


@pytest.mark.parametrize("cls,key", [(so.FusedAdam, "exp_avg"), (so.FusedSGD, "momentum_buffer")])
def test_state_tensor_of_wrong_type_names_it(cls, key):
    p = torch.nn.Parameter(torch.ones(3))
    opt = cls([p], momentum=0.9) if cls is so.FusedSGD else cls([p])
    p.grad = torch.ones(3)
    opt.step()
    opt.state[p][key] = "oops"
    with pytest.raises(TypeError, match=rf"state\['{key}'\].*must be a Tensor, got str"):
        opt.step()


# ---- item 9: gradients after scaler.step ----------------------------------------------------


def _amp_run(make_opt, recipe, steps=6):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    grads = []
    for step in range(steps):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if step == 3:
            model[0].weight.grad[0, 0] = math.inf
        recipe(model, opt, scaler)
        scaler.update()
        grads.append([p.grad.clone() for p in model.parameters()])
    return model, grads


def _torch_recipe(model, opt, scaler):
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
    scaler.step(opt)


def _fused_step(model, opt, scaler):
    scaler.step(opt)


def _fused_after_unscale(model, opt, scaler):
    scaler.unscale_(opt)
    scaler.step(opt)


@pytest.mark.parametrize("recipe", ["write_back_grads", "unscale_first"])
def test_grads_after_scaler_step_are_unscaled_and_clipped_like_torch(recipe):
    ref_model, ref_grads = _amp_run(lambda p: torch.optim.Adam(p, lr=1e-2), _torch_recipe)
    if recipe == "write_back_grads":
        model, grads = _amp_run(lambda p: so.FusedAdam(p, lr=1e-2, max_grad_norm=0.3, write_back_grads=True), _fused_step)
    else:
        # scaler.unscale_ unscales the gradients in place; the step only clips (internally).
        model, grads = _amp_run(lambda p: so.FusedAdam(p, lr=1e-2, max_grad_norm=0.3), _fused_after_unscale)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert_close_scaled(p.detach(), q.detach())
    for step, (ours, theirs) in enumerate(zip(grads, ref_grads)):
        if step == 3:  # the overflow step: torch's grads hold inf/nan too
            continue
        for g, h in zip(ours, theirs):
            if recipe == "write_back_grads":
                assert_close_scaled(g, h)
            else:  # unscaled, not clipped (the fused step clips internally)
                assert torch.all(g.abs() >= h.abs() - 1e-7)


def test_default_leaves_grads_scaled_as_documented():
    model, grads = _amp_run(lambda p: so.FusedAdam(p, lr=1e-2, max_grad_norm=0.3), _fused_step, steps=1)
    _, ref = _amp_run(lambda p: torch.optim.Adam(p, lr=1e-2), lambda m, o, s: s.step(o), steps=1)
    for g, h in zip(grads[0], ref[0]):
        assert torch.equal(g, h * 2.0**8)  # still multiplied by the scale, as backward left them


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_staged_layouts_and_write_back_do_not_synchronize():
    params = [torch.nn.Parameter(torch.randn(10, device="cuda")),
              torch.nn.Parameter(torch.randn(5, 5, device="cuda")),
              torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex64, device="cuda"))]
    noncontig = torch.nn.Parameter(torch.randn(10, 2, device="cuda"))[..., 0].detach().requires_grad_()
    params.append(noncontig)
    opt = so.FusedAdam(params, max_grad_norm=1.0, amsgrad=True, write_back_grads=True)

    def grads():
        params[0].grad = torch.randn(10, device="cuda")
        params[1].grad = torch.randn(5, 5, device="cuda").t()
        params[2].grad = torch.randn(4, 3, dtype=torch.complex64, device="cuda")
        params[3].grad = torch.randn(10, 2, device="cuda")[:, 0]

    grads()
    opt.step()  # allocates the state
    grads()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert opt.skipped_steps.item() == 0


@pytest.mark.parametrize("value", [1.0, 0.5, 1e-08, 1e-4, 1e-05, 0.1, 1 / 3, 2.5e-07, 1e15, 1e16, 1.5e16,
                                   123456789012345.0, 1234567890123456.7, 5e-324, 1.7976931348623157e308, 3.0e22])
def test_numbers_in_messages_print_as_python_prints_them(value):
    # The C++ checks format numbers; compare with torch's f-string on the same value.
    with pytest.raises(ValueError) as ours:
        so.FusedAdam([torch.nn.Parameter(torch.ones(1))], lr=-value)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=-value)
    assert str(ours.value) == str(theirs.value) == f"Invalid learning rate: {-value}"


@pytest.mark.parametrize("cls", [so.FusedSGD, so.FusedAdamW])
def test_write_back_grads_without_amp_leaves_clipped_grads(cls):
    ours_p, ref_p = make_params(), make_params()
    ours = cls(ours_p, lr=1e-2, max_grad_norm=0.5, write_back_grads=True)
    for step in range(3):
        grads = random_grads(ours_p, step)
        set_grads(ours_p, grads)
        set_grads(ref_p, grads)
        ours.step()
        torch.nn.utils.clip_grad_norm_(ref_p, 0.5)
        for p, q in zip(ours_p, ref_p):
            assert_close_scaled(p.grad, q.grad)


@pytest.mark.parametrize("cls", [so.FusedSGD, so.FusedAdamW])
def test_write_back_of_an_expanded_grad_refuses_before_the_step(cls):
    # torch's in-place clip refuses a gradient whose elements share memory before its step;
    # with write_back_grads ours must refuse before touching params or state as well.
    param = torch.nn.Parameter(torch.randn(4, 3))
    param.grad = torch.randn(1, 3).expand(4, 3)
    opt = cls([param], lr=1e-2, max_grad_norm=0.5, write_back_grads=True)
    before = param.detach().clone()
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        opt.step()
    assert torch.equal(param.detach(), before)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in opt.state[param].values()
               if isinstance(t, torch.Tensor) and t.shape == param.shape)
