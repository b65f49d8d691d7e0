"""What only a GPU can show of the fused step: a whole clipped AdamW step captured in a CUDA graph
and replayed, the step on a side stream, one tensor of more than 2^31 elements, no host sync in
a training loop with any scheduler, and params on two devices. Every case skips without CUDA
(`make gpu-check` runs them; its stage fails on such a skip)."""

import math

import pytest
import torch
from conftest import CUDA
from scheduler_cases import BASE_LRS, build, extra_cases, parity_cases

import steadystep
import steadystep.lr_scheduler as ss
from steadystep import optim

SHAPES = [(1000,), (257, 255), (65537,), (3,), (64, 64)]


def make_params(seed: int, shapes=SHAPES, device="cuda") -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.1).to(device)) for s in shapes]


def grad_sequence(steps: int, inf_at: set[int], shapes=SHAPES, device="cuda") -> list[list[torch.Tensor]]:
    """Fresh random gradients, big enough that max_grad_norm=1.0 clips most steps."""
    gen = torch.Generator().manual_seed(1234)
    seq = []
    for t in range(steps):
        grads = [(torch.randn(s, generator=gen) * (0.01 if t % 3 == 0 else 1.0)).to(device) for s in shapes]
        if t in inf_at:
            grads[2].view(-1)[17] = math.inf
        seq.append(grads)
    return seq


def assert_same_optimizer_state(got: optim.FusedAdamW, want: optim.FusedAdamW, where) -> None:
    for p, q in zip(got.param_groups[0]["params"], want.param_groups[0]["params"]):
        assert torch.equal(p, q), where
        for key, value in want.state[q].items():
            assert torch.equal(got.state[p][key], value), (where, key)
    assert torch.equal(got.last_grad_norm, want.last_grad_norm), where


@CUDA
def test_captured_clipped_adamw_step_replays_as_eager_steps():
    """One whole FusedAdamW(max_grad_norm=1.0) step (norm, non-finite guard, update) captured
    once and replayed 100 times equals 100 eager steps bit for bit, with two replays whose
    gradients hold an inf (skipped on the device, without the host knowing)."""
    inf_at = {37, 80}
    seq = grad_sequence(101, inf_at)
    eager, graphed = make_params(0), make_params(0)
    opt_e = optim.FusedAdamW(eager, lr=1e-3, weight_decay=0.01, max_grad_norm=1.0)
    opt_g = optim.FusedAdamW(graphed, lr=1e-3, weight_decay=0.01, max_grad_norm=1.0)
    for p, q, g in zip(eager, graphed, seq[0]):
        p.grad, q.grad = g.clone(), g.clone()  # the graphed grads stay these tensors from here on
    opt_e.step()
    # Warm-up on a side stream creates the state before the capture, as torch's docs ask.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt_g.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt_g.step()  # recorded, not run
    assert_same_optimizer_state(opt_g, opt_e, "after warm-up")
    for t, grads in enumerate(seq[1:], start=1):
        for p, q, g in zip(eager, graphed, grads):
            p.grad.copy_(g)
            q.grad.copy_(g)
        opt_e.step()
        graph.replay()
        torch.cuda.synchronize()
        assert_same_optimizer_state(opt_g, opt_e, t)
    assert opt_g.skipped_steps.item() == opt_e.skipped_steps.item() == len(inf_at)
    assert opt_e.state[eager[0]]["step"].item() == 101 - len(inf_at)


@CUDA
@pytest.mark.parametrize("make", [
    lambda p: optim.FusedAdamW(p, lr=1e-3, max_grad_norm=1.0, amsgrad=True),
    lambda p: optim.FusedSGD(p, lr=1e-2, momentum=0.9, max_grad_norm=1.0),
    lambda p: optim.FusedAdamW(p, lr=1e-3, guard=[steadystep.ZScoreClip(warmup_steps=3)]),
], ids=["adamw", "sgd", "adamw-zscore"])
def test_step_on_a_side_stream_equals_the_default_stream(make):
    seq = grad_sequence(12, inf_at={5})
    default, sided = make_params(0), make_params(0)
    opt_d, opt_s = make(default), make(sided)
    for grads in seq:
        for p, g in zip(default, grads):
            p.grad = g.clone()
        opt_d.step()
    side = torch.cuda.Stream()
    for grads in seq:
        side.wait_stream(torch.cuda.current_stream())  # the grads were made on the default stream
        with torch.cuda.stream(side):
            for p, g in zip(sided, grads):
                p.grad = g.clone()
            opt_s.step()
        torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for p, q in zip(sided, default):
        assert torch.equal(p, q)
        for key, value in opt_d.state[q].items():
            assert torch.equal(opt_s.state[p][key], value), key
    assert opt_s.skipped_steps.item() == opt_d.skipped_steps.item() == 1


LARGE = 2**31 + 2**20 + 3  # int32 offsets overflow past 2^31 elements


@CUDA
def test_more_than_2_to_the_31_elements_through_the_norm_and_the_adam_step():
    """One bf16 tensor of 2^31 + 2^20 + 3 elements (~4 GiB; ~18 GiB with grad and state). The
    norm's exact value is known; its large entries sit past 2^31, where an int32 offset would
    have wrapped, and weigh ~4% of the norm (far above fp32 summation error). The Adam step is
    elementwise: slices at the start, across 2^31 and at the end equal the CPU step on them."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs ~24 GiB of free GPU memory, has {free / 2**30:.1f}")
    grad = torch.ones(LARGE, dtype=torch.bfloat16, device="cuda")
    grad[-1000:] = 256.0
    grad[2**31 + 5] = 4096.0
    want = math.sqrt((LARGE - 1001) * 1.0 + 1000 * 256.0**2 + 4096.0**2)
    got = steadystep.get_total_norm([grad])
    assert got.dtype == torch.float32
    assert abs(got.item() - want) <= 1e-5 * want, (got.item(), want)

    grad.normal_()  # fresh values for the step: every slice differs
    param = torch.nn.Parameter((torch.randn(LARGE, dtype=torch.bfloat16, device="cuda") * 0.02))
    slices = [slice(0, 4096), slice(2**31 - 2048, 2**31 + 2048), slice(LARGE - 4096, LARGE)]
    before = [(param.detach()[s].cpu(), grad[s].cpu()) for s in slices]
    param.grad = grad
    opt = optim.FusedAdamW([param], lr=1e-2, weight_decay=0.01)
    opt.step()
    for s, (p0, g0) in zip(slices, before):
        ref = torch.nn.Parameter(p0.clone())
        ref.grad = g0
        ref_opt = optim.FusedAdamW([ref], lr=1e-2, weight_decay=0.01)
        ref_opt.step()
        # bf16 params: the CPU and CUDA steps agree to a bf16 rounding of the same fp32 value.
        torch.testing.assert_close(param.detach()[s].cpu(), ref.detach(), rtol=1.6e-2, atol=1e-5)
        torch.testing.assert_close(opt.state[param]["exp_avg"][s].cpu(), ref_opt.state[ref]["exp_avg"])
        assert not torch.equal(param.detach()[s].cpu(), p0)  # the step reached this slice


def scheduler_cases():
    # Built for 200 steps (OneCycleLR's steps_per_epoch is steps // 100), stepped 8 times.
    cases = parity_cases(steps=200) + extra_cases(steps=200)
    return [pytest.param(case, id=f"{case.name}-{i}") for i, case in enumerate(cases)]


@CUDA
@pytest.mark.parametrize("case", scheduler_cases())
def test_a_training_loop_with_each_scheduler_has_no_host_sync(case):
    """The fused step and every scheduler's step under torch.cuda.set_sync_debug_mode("error"):
    the schedulers write Python floats into the groups and the step reads them as arguments."""
    params = make_params(0, shapes=[(100,)] * len(BASE_LRS))
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)]
    if case.optimizer == "adam":
        opt = optim.FusedAdam(groups, lr=BASE_LRS[0], max_grad_norm=1.0)
    else:
        opt = optim.FusedSGD(groups, lr=BASE_LRS[0], momentum=0.9, max_grad_norm=1.0)
    sched = build(case.spec, ss, opt)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # creates the state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(8):
            for p in params:
                p.grad.normal_()
            opt.step()
            sched.step() if case.step_values is None else sched.step(case.step_values[i])
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason=f"needs two CUDA devices; this machine has {torch.cuda.device_count()}")
def test_params_on_two_devices_are_clipped_and_stepped_per_device():
    """The norm spans both devices (as clip_grad_norm_'s does), the step runs on each."""
    shapes = [(1000,), (64, 64)]
    ours = make_params(0, shapes, "cuda:0") + make_params(1, shapes, "cuda:1")
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for p, q in zip(ours, theirs):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    got = steadystep.clip_grad_norm_(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert got.device == want.device
    torch.testing.assert_close(got, want)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad, q.grad)
    opt, ref = optim.FusedAdamW(ours, lr=1e-3), torch.optim.AdamW(theirs, lr=1e-3, fused=True)
    opt.step()
    ref.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q)
