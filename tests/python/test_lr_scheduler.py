"""steadystep.lr_scheduler against torch.optim.lr_scheduler itself."""

import math
import random
import warnings

import pytest
import torch

import steadystep
from steadystep import lr_scheduler as ss


def make_optimizer(lrs=(0.1, 0.03, 1.0)):
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def lr_sequence(make_scheduler, steps, lrs=(0.1, 0.03, 1.0)):
    """lr of every group after construction and after each of `steps` steps."""
    opt = make_optimizer(lrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about step order without optimizer.step()
        sched = make_scheduler(opt)
        seq = [[g["lr"] for g in opt.param_groups]]
        for _ in range(steps):
            opt.step()
            sched.step()
            seq.append([g["lr"] for g in opt.param_groups])
    return seq, sched


def assert_sequences_close(ours, theirs, bases, rel=1e-10):
    # Relative 1e-10, with an absolute floor of 1e-10 * base lr where the lr passes through 0.
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for g, (x, y) in enumerate(zip(a, b)):
            assert math.isclose(x, y, rel_tol=rel, abs_tol=rel * bases[g]), (step, g, x, y)


@pytest.mark.parametrize("T_max", [1, 3, 10, 97, 2500])
@pytest.mark.parametrize("eta_min", [0.0, 1e-3])
def test_cosine_annealing_matches_torch_over_10000_steps(T_max, eta_min):
    bases = (0.1, 0.03, 1.0)
    ours, _ = lr_sequence(lambda o: ss.CosineAnnealingLR(o, T_max, eta_min), 10_000, bases)
    theirs, _ = lr_sequence(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max, eta_min), 10_000, bases)
    assert_sequences_close(ours, theirs, bases)


def test_cosine_annealing_is_bit_identical_to_torch():
    # Same libm, same operation order: the doubles themselves agree.
    rng = random.Random(0)
    for _ in range(5):
        T_max, eta_min = rng.randint(1, 500), rng.uniform(0, 0.01)
        bases = tuple(rng.uniform(0.01, 1) for _ in range(3))
        ours, _ = lr_sequence(lambda o: ss.CosineAnnealingLR(o, T_max, eta_min), 2000, bases)
        theirs, _ = lr_sequence(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max, eta_min), 2000, bases)
        assert ours == theirs


def test_cosine_annealing_step_with_epoch_matches_torch():
    def run(cls):
        opt = make_optimizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = cls(opt, 10, 0.01)
            out = []
            for epoch in [3, 7, 7, 12, 1]:
                sched.step(epoch)
                out.append(sched.get_last_lr())
        return out

    assert run(ss.CosineAnnealingLR) == run(torch.optim.lr_scheduler.CosineAnnealingLR)


def test_cosine_annealing_state_dict_cross_loads_with_torch():
    for src_cls, dst_cls in [
        (torch.optim.lr_scheduler.CosineAnnealingLR, ss.CosineAnnealingLR),
        (ss.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR),
    ]:
        full, _ = lr_sequence(lambda o: src_cls(o, 17, 1e-4), 60)
        opt = make_optimizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = src_cls(opt, 17, 1e-4)
            for _ in range(25):
                opt.step()
                src.step()
            state = src.state_dict()
            dst = dst_cls(opt, 5, 0.5)  # wrong hyper-parameters, overwritten by the state
            dst.load_state_dict(state)
            seq = []
            for _ in range(35):
                opt.step()
                dst.step()
                seq.append([g["lr"] for g in opt.param_groups])
        assert seq == full[26:]
        assert sorted(state) == sorted(dst.state_dict())


def test_cosine_annealing_is_an_lrscheduler():
    opt = make_optimizer()
    sched = ss.CosineAnnealingLR(opt, T_max=5)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert sched.get_last_lr() == [0.1, 0.03, 1.0]
    assert sched.last_epoch == 0


@pytest.mark.parametrize("T_max", [0, -2])
def test_cosine_annealing_rejects_bad_T_max_without_touching_optimizer(T_max):
    opt = make_optimizer()
    with pytest.raises(ValueError, match="T_max"):
        ss.CosineAnnealingLR(opt, T_max)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.03, 1.0]
    assert all("initial_lr" not in g for g in opt.param_groups)


def test_version():
    assert steadystep.__version__.count(".") == 2
