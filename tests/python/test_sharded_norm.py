"""The sharded-norm op in one process: its argument checks, its collectives over a one-rank
gloo group (opcheck, torch.compile), and the fused steps' grads_norm input. Several ranks:
test_distributed_clip.py and test_distributed_optim.py."""

import math

import pytest
import torch
import torch.distributed as dist
from torch.library import opcheck

import steadystep

ops = torch.ops.steadystep


@pytest.fixture(scope="module")
def world():
    """A one-rank gloo group in this process; its name, as the functional collectives take it."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield dist.group.WORLD.group_name
    dist.destroy_process_group()


def grads(dtype=torch.float32):
    return [torch.randn(6, 5, dtype=dtype), torch.randn(11, dtype=dtype), torch.randn(3, 2, dtype=dtype)]


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
def test_one_rank_group_gives_the_local_norm(world, p):
    g = grads()
    got = ops.get_total_norm_sharded(g, [], [world], [1], world, p)
    want = torch.nn.utils.get_total_norm(g, p)
    # One rank: the collectives add nothing; p-th power and root round once each (fp32).
    torch.testing.assert_close(got, want, rtol=2e-6, atol=0)


def test_a_tensor_counted_elsewhere_is_left_out(world):
    g = grads()
    got = ops.get_total_norm_sharded(g, [0, -1, 0], [world], [1], None, 2.0)
    torch.testing.assert_close(got, torch.nn.utils.get_total_norm([g[0], g[2]]), rtol=2e-6, atol=0)


def test_fp64_inputs_reduce_in_fp64(world):
    got = ops.get_total_norm_sharded(grads(torch.float64), [], [], [], world, 2.0)
    assert got.dtype == torch.float64


@pytest.mark.parametrize(
    "args, message",
    [
        (([0, 0], [], [0], None, 2.0), "one part index per tensor"),
        (([0, 1, 0], [], [0], None, 2.0), "not -1 or a part index below 1"),
        (([], ["0"], [2], None, 2.0), "adds up to 2 but 1 group names"),
        (([], [], [-1], None, 2.0), "is negative"),
        (([], [], [], "0", 0.0), "needs norm_type > 0 or inf, got 0.0"),
        (([], [], [], "0", -math.inf), "needs norm_type > 0 or inf, got -inf"),
    ],
)
def test_bad_arguments_name_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        ops.get_total_norm_sharded(grads(), *args)


def test_error_if_nonfinite_raises_torchs_error(world):
    g = grads()
    g[1][3] = math.inf
    with pytest.raises(RuntimeError, match="The total norm of order 2.0 for gradients from `parameters` is non-finite"):
        ops.get_total_norm_sharded(g, [], [world], [1], None, 2.0, True)


def test_opcheck_with_collectives(world):
    # test_schema and test_faketensor are left out: both flag torch's own
    # _c10d_functional.wait_tensor, which returns its argument (the no-group case passes them
    # in test_compile.py).
    opcheck(ops.get_total_norm_sharded.default, (grads(), [0, -1, 0], [world], [1], world, 2.0, False),
            test_utils=("test_autograd_registration", "test_aot_dispatch_dynamic"))


def test_compiles_with_the_collectives(world):
    def norm(tensors):
        return ops.get_total_norm_sharded(tensors, [], [world], [1], world, 2.0)

    g = grads()
    compiled = torch.compile(norm, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(g), norm(g), rtol=0, atol=0)


def test_clip_grad_norm_over_a_process_group(world):
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, r in zip(params, reference):
        p.grad = torch.randn_like(p) * 10
        r.grad = p.grad.clone()
    got = steadystep.clip_grad_norm_(params, 1.0, process_group=dist.group.WORLD)
    want = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=0)
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.grad, r.grad, rtol=4e-6, atol=1e-7)


def adam_lists(seed):
    torch.manual_seed(seed)
    params = [torch.randn(7, 3), torch.randn(5)]
    return (params, [torch.randn_like(p) * 5 for p in params], [torch.zeros_like(p) for p in params],
            [torch.zeros_like(p) for p in params], [], [torch.zeros(()) for _ in params])


def adam(lists, grads_norm, max_grad_norm=1.0):
    skipped = torch.zeros((), dtype=torch.int64)
    norm = ops.fused_adam_(*lists, [2], [1e-2], [0.9], [0.999], [1e-8], [0.01], [False], [False], [True],
                           max_grad_norm, 2.0, True, None, None, skipped, grads_norm, [], [], [], None, [], None)
    return norm, skipped


def test_fused_step_takes_the_given_norm():
    own, given = adam_lists(0), adam_lists(0)
    norm, _ = adam(own, None)
    norm_given, _ = adam(given, ops.get_total_norm(adam_lists(0)[1]))
    assert torch.equal(norm, norm_given)
    for a, b in zip(own[0], given[0]):
        assert torch.equal(a, b)
    # A larger norm (as the other ranks' shards would make it) clips harder: the update is the
    # one for the gradients scaled by max_norm / given norm.
    scaled, other = adam_lists(0), adam_lists(0)
    adam(scaled, torch.tensor(50.0))
    coef = 1.0 / (50.0 + 1e-6)
    other = (other[0], [g * coef for g in other[1]], *other[2:])
    adam(other, None, max_grad_norm=None)
    for a, b in zip(scaled[0], other[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_fused_step_skips_on_a_nonfinite_given_norm():
    lists = adam_lists(1)
    before = [t.clone() for t in lists[0] + lists[2] + lists[3]]
    _, skipped = adam(lists, torch.tensor(math.inf))
    assert skipped.item() == 1
    for a, b in zip(before, lists[0] + lists[2] + lists[3]):
        assert torch.equal(a, b)


def _inf_norms_with_a_nan_on_one_rank(rank, world_size):
    group = dist.group.WORLD.group_name
    norms = []
    for bad_rank in range(world_size):
        for bad in (math.nan, math.inf):
            local = [torch.full((3,), float(rank + 1))]
            if rank == bad_rank:
                local[0][1] = bad
            norms.append(ops.get_total_norm_sharded(local, [], [], [], group, math.inf).item())
    return norms


def test_inf_norm_carries_a_nan_from_any_rank():
    """gloo's max all-reduce keeps a finite value over a nan held by a later rank; the norm
    must still be nan on every rank (as torch's norm of the whole), or the ranks' guards
    would disagree."""
    from dist_utils import run_ranks

    results = run_ranks(_inf_norms_with_a_nan_on_one_rank, 2, timeout=60, collective_timeout=20)
    for norms in results:
        assert [math.isnan(n) for n in norms] == [True, False, True, False]
        assert norms[1] == norms[3] == math.inf
