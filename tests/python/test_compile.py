"""torch.compile and torch.library.opcheck for every steadystep op (schemas, mutation
annotations, Meta/fake kernels, AOT dispatch)."""

import copy

import pytest
import torch
from torch.library import opcheck

import steadystep
from conftest import devices

ops = torch.ops.steadystep


def tensors(device, dtypes=(torch.float32, torch.float32, torch.float64)):
    shapes = [(5, 3), (7,), (4,)]
    return [torch.randn(s, device=device, dtype=d) for s, d in zip(shapes, dtypes)]


def step_lists(device):
    params = tensors(device, (torch.float32,) * 3)
    like = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
    return params, [torch.randn_like(p) for p in params], like(), like(), like(), [
        torch.zeros((), device=device) for _ in params]


def cases(device):
    p, g, m, v, vmax, steps = step_lists(device)
    sp, sg, buf, _, _, sst = step_lists(device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    agc_params = tensors(device)
    return {
        "get_total_norm": (ops.get_total_norm.default, (tensors(device), 2.0, False)),
        "_total_norm": (ops._total_norm.default, (tensors(device), 3.0)),
        # Without groups, the sharded norm is this rank's part (tensor 1 counted elsewhere); the
        # collectives are checked over a real group in test_sharded_norm.py.
        "get_total_norm_sharded": (ops.get_total_norm_sharded.default,
                                   (tensors(device), [0, -1, 0], [], [0], None, 3.0, False)),
        "clip_grads_with_norm_": (ops.clip_grads_with_norm_.default,
                                  (tensors(device), 1.0, torch.tensor(5.0, device=device))),
        "clip_grad_norm_": (ops.clip_grad_norm_.default, (tensors(device), 1.0, 2.0, False)),
        "clip_grad_value_": (ops.clip_grad_value_.default, (tensors(device), 0.5)),
        "_scale_": (ops._scale_.default, (tensors(device), torch.tensor(0.5, device=device))),
        "_clamp_": (ops._clamp_.default, (tensors(device), 0.5)),
        # A state past its warmup (3 steps: mean 2, var 0.5) that the grads' norm (~5) spikes.
        "zscore_clip_": (ops.zscore_clip_.default,
                         (tensors(device), torch.tensor([5.0, 2.0, 0.5, 0.0, 0.0, 0.0, 1.9, 2.1, 2.0],
                                                        dtype=torch.float64, device=device),
                          0.97, 2.5, 10.0, 1e-6, 3, "zscore", "adaptive_scaling", 1.0, False, None)),
        # A history of 3 of 4 slots (norms 1, 3, 2): the 0.9 quantile 2.8 clips the grads (~5).
        "percentile_clip_": (ops.percentile_clip_.default,
                             (tensors(device), torch.tensor([3.0, 2.0, 2.5, 1.0, 1.0, 3.0, 2.0, 0.0],
                                                            dtype=torch.float64, device=device),
                              0.9, 4, None)),
        "adaptive_clip_grad_": (ops.adaptive_clip_grad_.default,
                                (agc_params, [torch.randn_like(w) for w in agc_params], 0.5, 1e-3, 2.0)),
        "fused_adam_": (ops.fused_adam_.default,
                        (p, g, m, v, vmax, steps, [1, 2], [1e-3, 1e-2], [0.9, 0.8], [0.999, 0.99], [1e-8, 1e-8],
                         [0.0, 0.1], [True, False], [False, True], [False, True], 1.0, 2.0, True, None, None, count,
                         None, [], [], [], torch.zeros(3, device=device), [], None)),
        "fused_sgd_": (ops.fused_sgd_.default,
                       (sp, sg, buf, sst, [3], [0.1], [0.9], [0.0], [0.01], [True], [False], 0.5, 2.0, True,
                        None, None, count.clone(), torch.tensor(7.0, device=device), [], [], [], None, [], None)),
        "_adam_step_": (ops._adam_step_.default,
                        (*step_lists(device), 1e-3, 0.9, 0.999, 1e-8, 0.0, True, False, False,
                         torch.tensor(0.5, device=device), torch.tensor(0.0, device=device), [], [])),
        "_sgd_step_": (ops._sgd_step_.default,
                       (*[step_lists(device)[i] for i in (0, 1, 2)], [torch.ones((), device=device)] * 3,
                        0.1, 0.9, 0.0, 0.0, False, False, None, None, [], [])),
    }


def test_every_op_is_checked():
    registered = {name for name in dir(ops) if not name.startswith("__") and name not in ("name",)}
    assert registered >= set(cases("cpu")), "an op without an opcheck case"
    assert {n for n in registered if hasattr(getattr(ops, n), "default")} <= set(cases("cpu"))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", sorted(cases("cpu")))
def test_opcheck(device, name):
    op, args = cases(device)[name]
    opcheck(op, args)


def guarded_cases(device):
    """fused_adam_ / fused_sgd_ with a guard of every policy kind: a SpikeSkip past its warmup
    whose window (mean 2) the grads' norm (~5) spikes, and the clip policies' states after a
    few steps, so that every branch writes its state."""
    p, g, m, v, vmax, steps = step_lists(device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    f64 = dict(dtype=torch.float64, device=device)
    skip = steadystep.SpikeSkip(z_thresh=2.0, window=4, warmup_steps=2)
    skip_state = torch.tensor([3.0, 2.0, 0.0, 2.0, 0.1, 1.9, 2.1, 2.0, 0.0], **f64)
    zscore = steadystep.ZScoreClip(warmup_steps=3, max_grad_norm=10.0)
    zscore_state = torch.tensor([5.0, 2.0, 0.5, 0.0, 0.0, 0.0, 1.9, 2.1, 2.0], **f64)
    pct = steadystep.PercentileClip(quantile=0.9, history_length=4)
    pct_state = torch.tensor([3.0, 2.0, 2.5, 1.0, 1.0, 3.0, 2.0, 0.0], **f64)
    out = {}
    for name, clip, state in (("zscore", zscore, zscore_state), ("percentile", pct, pct_state)):
        guard = ([skip_state.clone(), state.clone()], [skip._KIND, clip._KIND], skip._args() + clip._args(),
                 torch.zeros(3, device=device))
        out[f"fused_adam_/{name}"] = (ops.fused_adam_.default, (
            p, g, m, v, vmax, steps, [3], [1e-3], [0.9], [0.999], [1e-8], [0.0], [True], [False], [True],
            None, 2.0, True, None, None, count.clone(), None, *guard, [], None))
        out[f"fused_sgd_/{name}"] = (ops.fused_sgd_.default, (
            p, g, m, steps, [3], [0.1], [0.9], [0.0], [0.01], [True], [False], None, 2.0, True, None, None,
            count.clone(), None, *copy.deepcopy(guard), [], None))
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", sorted(guarded_cases("cpu")))
def test_opcheck_guarded_fused_steps(device, name):
    op, args = guarded_cases(device)[name]
    opcheck(op, args)


def precision_cases(device):
    """The fused steps and their backend kernels with the low-precision arguments: fp32 masters
    of fp16/bf16 params (a 0-element placeholder for a param without one), rounding keys / a
    rounding seed for bf16 params (stochastic rounding), and states in bf16 or fp32 whatever the
    param's dtype. Masters differ from their params (as after a few steps) so that the kernels'
    writes of the rounded master are seen."""
    shapes = [(5, 3), (7,), (4,)]
    gen = torch.Generator().manual_seed(3)

    def rand(shape, dtype):
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    def lists(dtypes, state_dtypes, masters=False):
        params = [rand(s, d) for s, d in zip(shapes, dtypes)]
        grads = [rand(s, d) for s, d in zip(shapes, dtypes)]
        # exp_avg_sq >= 0 (its square root is taken).
        states = [[rand(s, sd).abs() for s, sd in zip(shapes, state_dtypes)] for _ in range(3)]
        steps = [torch.full((), 3.0, device=device) for _ in shapes]
        if masters:
            master = [p.float() + 1e-3 * torch.randn(p.shape, generator=gen).to(device) if p.dtype in (
                torch.float16, torch.bfloat16) else torch.empty(0, device=device) for p in params]
        else:
            master = []
        return params, grads, states, steps, master

    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    keys = [123456789, -987654321012345, 2**62 - 1]
    count = torch.zeros((), dtype=torch.int64, device=device)
    out = {}
    # Backend kernels: one group, one dtype of params.
    for name, dtypes, sdt, masters, rkeys in (
        ("masters-bf16", (bf16,) * 3, (fp32,) * 3, True, []),
        ("masters-fp16-bf16_state", (fp16,) * 3, (bf16,) * 3, True, []),
        ("stochastic-bf16", (bf16,) * 3, (bf16,) * 3, False, keys),
        ("stochastic-fp32_state", (bf16,) * 3, (fp32,) * 3, False, keys),
        ("bf16_state-fp32", (fp32,) * 3, (bf16,) * 3, False, []),
        ("fp32_state-bf16", (bf16,) * 3, (fp32,) * 3, False, []),
    ):
        p, g, (m, v, vmax), steps, master = lists(dtypes, sdt, masters)
        out[f"_adam_step_/{name}"] = (ops._adam_step_.default, (
            p, g, m, v, vmax, steps, 1e-3, 0.9, 0.999, 1e-8, 0.01, True, False, True,
            torch.tensor(0.5, device=device), torch.tensor(0.0, device=device), master, list(rkeys)))
        p, g, (buf, _, _), steps, master = lists(dtypes, sdt, masters)
        out[f"_sgd_step_/{name}"] = (ops._sgd_step_.default, (
            p, g, buf, steps, 0.1, 0.9, 0.0, 0.01, True, False, torch.tensor(0.5, device=device), None, master,
            list(rkeys)))
    # The composites: mixed dtypes in one call, clipping on, two groups.
    for name, dtypes, sdt, masters, seed in (
        ("masters", (bf16, fp32, fp16), (fp32, fp32, fp32), True, None),
        ("stochastic", (bf16, fp32, bf16), (bf16, fp32, bf16), False, 2**61 + 12345),
        ("bf16_state", (fp32, bf16, fp32), (bf16, bf16, bf16), False, None),
    ):
        p, g, (m, v, vmax), steps, master = lists(dtypes, sdt, masters)
        out[f"fused_adam_/{name}"] = (ops.fused_adam_.default, (
            p, g, m, v, vmax, steps, [1, 2], [1e-3, 1e-2], [0.9, 0.8], [0.999, 0.99], [1e-8, 1e-8], [0.0, 0.1],
            [True, False], [False, True], [False, True], 1.0, 2.0, True, None, None, count.clone(), None, [], [],
            [], torch.zeros(3, device=device), master, seed))
        p, g, (buf, _, _), steps, master = lists(dtypes, sdt, masters)
        out[f"fused_sgd_/{name}"] = (ops.fused_sgd_.default, (
            p, g, buf, steps, [2, 1], [0.1, 0.05], [0.9, 0.5], [0.0, 0.1], [0.01, 0.0], [True, False],
            [False, False], 0.5, 2.0, True, None, None, count.clone(), None, [], [], [],
            torch.zeros(3, device=device), master, seed))
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", sorted(precision_cases("cpu")))
def test_opcheck_low_precision_steps(device, name):
    op, args = precision_cases(device)[name]
    opcheck(op, args)


@pytest.mark.parametrize("device", devices())
def test_compiled_training_step_matches_eager(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).to(device)
    model_c = copy.deepcopy(model)
    x, y = torch.randn(64, 8, device=device), torch.randn(64, 1, device=device)
    opt = steadystep.optim.FusedAdamW(model.parameters(), lr=1e-2, max_grad_norm=0.5)
    opt_c = steadystep.optim.FusedAdamW(model_c.parameters(), lr=1e-2, max_grad_norm=0.5)

    def train_step(m, o):
        o.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        norm = steadystep.clip_grad_norm_(m.parameters(), 10.0)
        o.step()
        return loss.detach(), norm

    compiled = torch.compile(train_step)
    for _ in range(3):
        eager_out = train_step(model, opt)
        compiled_out = compiled(model_c, opt_c)
        torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-6)
    for p, q in zip(model_c.parameters(), model.parameters()):
        # Inductor may fuse the forward/backward differently: fp32 rounding apart.
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt_c.last_grad_norm is not None


def test_compiled_clip_grad_norm_matches_eager():
    grads = tensors("cpu", (torch.float32,) * 3)

    def clip(gs):
        return torch.ops.steadystep.clip_grad_norm_(gs, 1.0, 2.0, False)

    eager = [g.clone() for g in grads]
    compiled = [g.clone() for g in grads]
    want = clip(eager)
    got = torch.compile(clip, fullgraph=True)(compiled)
    torch.testing.assert_close(got, want)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)
