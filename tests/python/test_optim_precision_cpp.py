"""C++ and Python agree on the low-precision settings of the fused optimizers (issue 14).

tests/cpp/precision_driver.cpp runs steadystep::FusedAdam (AdamW) or steadystep::FusedSGD with
master_weights / stochastic_rounding / state_dtype on the gradients handed over here (two param
groups, clipping, one non-finite step), optionally through torch::save / torch::load mid-run into
an optimizer made under another torch seed. The Python optimizers run the same steps
(state_dict through torch.save / torch.load at the same step). Both call the same op, so params,
masters, state (values and dtypes), the skip count and the rounding seed are equal bitwise; the
seed is drawn from torch's default generator after torch.manual_seed on both sides.
"""

import io

import pytest
import torch

from conftest import cpp_driver

from steadystep.optim import FusedAdamW, FusedSGD

SHAPES = [(31, 17), (64,), (5, 3, 7)]
ADAM_LR, SGD_LR = 1e-3, 1e-2  # the driver's (its second group at half the lr)
MAX_GRAD_NORM = 1.0
STEPS = 80
NONFINITE_STEP = 20
TORCH_SEED = 1234
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}




def initial_params(dtype):
    return [(torch.sin(torch.arange(torch.Size(s).numel(), dtype=torch.float64) * 0.37 + k) * 0.5)
            .to(dtype).reshape(s) for k, s in enumerate(SHAPES)]


def grad_sequence(dtype):
    """Random gradients (their own generator) whose norm wanders around MAX_GRAD_NORM, so that
    the clip bites on some steps; one step has an inf (skipped)."""
    gen = torch.Generator().manual_seed(7)
    seq = []
    for t in range(STEPS):
        scale = 0.04 * (1.0 + 0.6 * torch.sin(torch.tensor(0.3 * t, dtype=torch.float64)).item())
        grads = [(torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(dtype) for s in SHAPES]
        if t == NONFINITE_STEP:
            grads[1][5] = float("inf")
        seq.append(grads)
    return seq


def make_python(kind, params, master_weights, stochastic_rounding, state_dtype):
    common = dict(max_grad_norm=MAX_GRAD_NORM, master_weights=master_weights,
                  stochastic_rounding=stochastic_rounding, state_dtype=state_dtype)
    if kind == "adamw":
        groups = [{"params": params[:1]}, {"params": params[1:], "lr": ADAM_LR / 2}]
        return FusedAdamW(groups, lr=ADAM_LR, weight_decay=1e-2, **common)
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": SGD_LR / 2}]
    return FusedSGD(groups, lr=SGD_LR, momentum=0.9, weight_decay=1e-3, **common)


def run_python(kind, dtype, master_weights, stochastic_rounding, state_dtype, seq, resume_at):
    params = [p.clone().requires_grad_() for p in initial_params(dtype)]
    torch.manual_seed(TORCH_SEED)
    opt = make_python(kind, params, master_weights, stochastic_rounding, state_dtype)
    for t, grads in enumerate(seq):
        if t == resume_at:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            params = [p.detach().clone().requires_grad_() for p in params]
            torch.manual_seed(TORCH_SEED + 1)
            opt = make_python(kind, params, master_weights, stochastic_rounding, state_dtype)
            buffer.seek(0)
            opt.load_state_dict(torch.load(buffer, weights_only=False))
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return opt, params


CASES = [
    # kind, param dtype, master_weights, stochastic_rounding, state_dtype
    ("adamw", "bfloat16", True, False, None),
    ("adamw", "float16", True, False, None),
    ("adamw", "bfloat16", True, False, "bfloat16"),
    ("adamw", "bfloat16", False, True, None),
    ("adamw", "bfloat16", False, True, "bfloat16"),
    ("adamw", "float32", False, False, "bfloat16"),
    ("adamw", "bfloat16", False, False, "float32"),
    ("sgd", "bfloat16", True, False, None),
    ("sgd", "float16", True, False, "bfloat16"),
    ("sgd", "bfloat16", False, True, None),
    ("sgd", "float32", False, False, "bfloat16"),
]


@pytest.mark.parametrize("resume_at", [-1, 37], ids=["straight", "resumed"])
@pytest.mark.parametrize("kind,dtype,master_weights,stochastic_rounding,state_dtype", CASES,
                         ids=["-".join(str(v) for v in case) for case in CASES])
def test_cpp_and_python_agree_bitwise(kind, dtype, master_weights, stochastic_rounding, state_dtype, resume_at):
    driver = cpp_driver("_precision_driver")
    seq = grad_sequence(DTYPES[dtype])
    init = initial_params(DTYPES[dtype])
    got = driver.run(kind, dtype, master_weights, stochastic_rounding, state_dtype, TORCH_SEED,
                     [p.double().flatten().tolist() for p in init], [list(s) for s in SHAPES],
                     [[g.double().flatten().tolist() for g in grads] for grads in seq], resume_at, MAX_GRAD_NORM)
    opt, params = run_python(kind, DTYPES[dtype], master_weights, stochastic_rounding,
                             None if state_dtype is None else DTYPES[state_dtype], seq, resume_at)

    # The seed: the same draw from the same default generator (0 / None when not used).
    if stochastic_rounding:
        assert got["rounding_seed"] == opt.rounding_seed
        assert opt.rounding_seed != 0
    else:
        assert got["rounding_seed"] == 0 and opt.rounding_seed is None
    assert got["skipped_steps"] == opt.skipped_steps.item() == 1
    for i, (p, flat) in enumerate(zip(params, got["params"])):
        assert torch.equal(p.detach().double().flatten(), torch.tensor(flat, dtype=torch.float64)), i
    for i, (p, cpp_state) in enumerate(zip(params, got["states"])):
        state = opt.state[p]
        assert set(cpp_state) == {k for k, v in state.items() if isinstance(v, torch.Tensor)}, i
        for key, (dtype_name, flat) in cpp_state.items():
            assert str(state[key].dtype) == "torch." + dtype_name, (i, key)
            assert torch.equal(state[key].detach().double().flatten(), torch.tensor(flat, dtype=torch.float64)), (i, key)
    # The settings did what they say (so that agreement is not agreement on doing nothing).
    low = DTYPES[dtype] in (torch.float16, torch.bfloat16)
    for i, p in enumerate(params):
        state = opt.state[p]
        assert ("master_param" in state) == (master_weights and low), i
        if "master_param" in state:
            assert state["master_param"].dtype == torch.float32
            assert torch.equal(p.detach(), state["master_param"].to(p.dtype)), i
        moment = state["exp_avg"] if kind == "adamw" else state["momentum_buffer"]
        want = DTYPES[state_dtype] if state_dtype else (torch.float32 if master_weights and low else p.dtype)
        assert moment.dtype == want, i


def test_stochastic_rounding_differs_from_nearest_and_between_seeds():
    """The agreement above is about a rounding that matters: with stochastic rounding the C++
    run differs from the round-to-nearest run and from a run under another seed."""
    driver = cpp_driver("_precision_driver")
    seq = grad_sequence(torch.bfloat16)
    init = [p.double().flatten().tolist() for p in initial_params(torch.bfloat16)]
    grads = [[g.double().flatten().tolist() for g in gs] for gs in seq]
    shapes = [list(s) for s in SHAPES]
    sr = driver.run("adamw", "bfloat16", False, True, None, TORCH_SEED, init, shapes, grads)
    sr_again = driver.run("adamw", "bfloat16", False, True, None, TORCH_SEED, init, shapes, grads)
    other = driver.run("adamw", "bfloat16", False, True, None, TORCH_SEED + 5, init, shapes, grads)
    nearest = driver.run("adamw", "bfloat16", False, False, None, TORCH_SEED, init, shapes, grads)
    assert sr["params"] == sr_again["params"]
    assert sr["params"] != other["params"]
    assert sr["params"] != nearest["params"]
