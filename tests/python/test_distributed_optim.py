"""FusedAdamW / FusedSGD on sharded params (FSDP2 DTensors, hand-sharded plain tensors with
``process_group=``) against one process running torch's ``clip_grad_norm_`` + ``AdamW`` / ``SGD``
on the whole model; the global non-finite guard; distributed checkpoints (DCP).

Spawning ranks costs seconds on a small CI machine, so each spawn runs many scenarios and
returns their records; the tests below only compare records (module-scoped fixtures).

Tolerances: the sharded run and the single-process reference compute the same math in a
different order (the gradient is a reduce-scatter of per-rank means rather than one batch mean;
the norm adds per-shard partial sums), so gradients differ by a few fp32 ulps, and Adam's
division by sqrt(v) keeps that relative error at its size. Measured after 20 steps: at most
6e-8 absolute on params of size ~0.5 (1-2 ulps; SGD 3e-8), norms 1e-7 relative.
rtol=1e-5/atol=1e-6 leaves ~15x headroom over that and is 1e4x below how far every tensor
moves (>= 0.06) and 1e4x below one step's update (lr=1e-2), so a lost or local clip
coefficient, a skipped or repeated step or a rank-local guard fails.
"""

import math

import pytest
import torch

from dist_utils import run_ranks

STEPS = 20
CKPT_STEP = 10
SCALER_STEPS = 5
INF_STEP = 7  # the step (1-based) whose gradient gets an inf on one rank
LR = 1e-2
WD = 0.1
BATCH = 8  # global batch rows (divisible by 1, 2 and 4 ranks)
LOSS_SCALE = 30.0  # makes the gradient norm > max_grad_norm: clipping is active every step
MAX_NORM = 1.0
RTOL, ATOL = 1e-5, 1e-6


# ---- the model and data, identical in every process ---------------------------------------

def _model() -> torch.nn.Module:
    # Odd sizes: FSDP2 shards dim 0 unevenly over 2 ranks (7 -> 4 + 3, 3 -> 2 + 1), and the last
    # layer's weight and bias (1 row) leave rank 1 an empty shard.
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3), torch.nn.Tanh(),
                               torch.nn.Linear(3, 1))


def _batch(step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 5, generator=gen)
    y = torch.randn(BATCH, 1, generator=gen)
    rows = BATCH // world
    return x[rank * rows:(rank + 1) * rows], y[rank * rows:(rank + 1) * rows]


def _loss(model, step, rank=0, world=1):
    # Each rank's mean over its rows; FSDP2 averages the gradients over ranks: the full batch's mean.
    x, y = _batch(step, rank, world)
    return (model(x) - y).square().mean() * LOSS_SCALE


def _make_opt(kind, params, **extra):
    import steadystep.optim as so
    if kind == "adamw":
        return so.FusedAdamW(params, lr=LR, weight_decay=WD, max_grad_norm=MAX_NORM, **extra)
    return so.FusedSGD(params, lr=LR, momentum=0.9, weight_decay=WD, max_grad_norm=MAX_NORM, **extra)


def _reference(kind, steps, skip=()):
    """One process, the whole model: torch's clip_grad_norm_ + AdamW / SGD. Returns the params
    after the last step, the state after it, and the pre-clip norms."""
    model = _model()
    if kind == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    norms = []
    for step in range(1, steps + 1):
        _loss(model, step).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        if step not in skip:
            opt.step()
        opt.zero_grad()
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items() if v is not None} for p in model.parameters()]
    return params, state, norms


# ---- what runs on the ranks ---------------------------------------------------------------

def _fsdp(world_mesh):
    from torch.distributed.fsdp import fully_shard
    model = _model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=world_mesh)
    return fully_shard(model, mesh=world_mesh)


def _full(t):
    from torch.distributed.tensor import DTensor
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def _local(t):
    from torch.distributed.tensor import DTensor
    return (t.to_local() if isinstance(t, DTensor) else t).detach().clone()


def _full_state(opt, model):
    return [{k: _full(v) for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
            for p in model.parameters()]


def _train(model, opt, steps, rank, world, inject=None, on_step=None):
    for step in steps:
        _loss(model, step, rank, world).backward()
        if inject is not None and step == inject[0] and rank == inject[1]:
            # Only this rank's shard of one gradient: the other rank sees finite gradients.
            _local_view(next(model.parameters()).grad).view(-1)[0] = inject[2] if len(inject) > 2 else math.inf
        if on_step is not None:
            on_step(step, "before")
        opt.step()
        if on_step is not None:
            on_step(step, "after")
        opt.zero_grad()


def _local_view(t):
    from torch.distributed.tensor import DTensor
    return t.to_local() if isinstance(t, DTensor) else t


def _ranks_main(rank, world, ckpt_dir):
    """Spawn 1 (2 ranks), one record per scenario: FSDP2 + FusedAdamW (DCP checkpoint after step
    10), FSDP2 + FusedSGD, an inf on rank 1 at INF_STEP, a NaN on rank 1 with the inf-norm,
    process_group= on hand-sharded plain params, a rank with no gradients, a sparse gradient,
    write_back_grads on DTensors, GradScaler, and the API checks (pickling, deepcopy, refusals)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    import steadystep.optim as so
    mesh = init_device_mesh("cpu", (world,))
    out = {}

    # 1. AdamW, uninterrupted 20 steps, DCP checkpoint after step 10.
    model = _fsdp(mesh)
    opt = _make_opt("adamw", model.parameters())
    norms = []

    def save(step, when):
        if when == "after":
            norms.append(opt.last_grad_norm.clone())
            if step == CKPT_STEP:
                dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                         checkpoint_id=ckpt_dir)

    _train(model, opt, range(1, STEPS + 1), rank, world, on_step=save)
    out["adamw"] = dict(params=[_full(p) for p in model.parameters()], state=_full_state(opt, model),
                        norms=torch.stack(norms), skipped=opt.skipped_steps.clone())

    # 2. SGD with momentum.
    model = _fsdp(mesh)
    opt = _make_opt("sgd", model.parameters())
    _train(model, opt, range(1, STEPS + 1), rank, world)
    out["sgd"] = dict(params=[_full(p) for p in model.parameters()], state=_full_state(opt, model))

    # 3. An inf in rank 1's shard of one gradient at INF_STEP: every rank must skip that step.
    model = _fsdp(mesh)
    opt = _make_opt("adamw", model.parameters())
    around = {}

    def record(step, when):
        if step == INF_STEP:
            around[when] = dict(
                params=[_local(p) for p in model.parameters()],
                state=[{k: _local(v) for k, v in opt.state[p].items()} for p in model.parameters()],
            )
            if when == "after":
                around["norm"] = opt.last_grad_norm.clone()
                around["skipped"] = opt.skipped_steps.clone()

    _train(model, opt, range(1, STEPS + 1), rank, world, inject=(INF_STEP, 1), on_step=record)
    out["inf"] = dict(around=around, params=[_full(p) for p in model.parameters()],
                      state=_full_state(opt, model), skipped=opt.skipped_steps.clone())

    # 4. The inf-norm with a NaN on rank 1 only: a max all-reduce must not drop the NaN.
    model = _fsdp(mesh)
    opt = so.FusedAdamW(model.parameters(), lr=LR, max_grad_norm=MAX_NORM, norm_type=math.inf)
    _train(model, opt, range(1, 3), rank, world, inject=(2, 1, math.nan))
    out["nan_inf_norm"] = dict(skipped=opt.skipped_steps.clone(), norm=opt.last_grad_norm.clone(),
                               finite=all(bool(torch.isfinite(_full(p)).all()) for p in model.parameters()))

    # 5. process_group=: plain params, rank r's optimizer owns params i with i % world == r; the
    # test all-reduces the gradients (as ZeRO-2 would reduce-scatter them) and broadcasts each
    # param from its owner after the step.
    model = _model()
    params = list(model.parameters())
    owned = [p for i, p in enumerate(params) if i % world == rank]
    opt = _make_opt("adamw", owned, process_group=dist.group.WORLD)
    pg_skipped = []
    for step in range(1, STEPS + 1):
        _loss(model, step, rank, world).backward()
        for p in params:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
        if step == INF_STEP and rank == world - 1:
            owned[0].grad.view(-1)[0] = math.inf
        opt.step()
        if step == INF_STEP:
            pg_skipped.append(opt.skipped_steps.clone())
        opt.zero_grad()
        for i, p in enumerate(params):
            dist.broadcast(p.data, src=i % world)
        for p in params:
            p.grad = None
    pg_opt = opt
    out["pg"] = dict(params=[p.detach().clone() for p in params], skipped=pg_skipped,
                     state={i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(params)
                            if i % world == rank})

    # 6. process_group= where one rank's params have no gradient (rank 1 owns a param the loss
    # never reads): that rank still joins the norm's all-reduce (else rank 0 waits forever) and
    # counts rank 0's skip. Step 2 has an inf on rank 0.
    model = _model()
    unused = torch.nn.Parameter(torch.ones(3))
    opt = _make_opt("adamw", list(model.parameters()) if rank == 0 else [unused], process_group=dist.group.WORLD)
    idle = []
    for step in (1, 2):
        if rank == 0:
            _loss(model, step).backward()
            if step == 2:
                next(model.parameters()).grad.view(-1)[0] = math.inf
        opt.step()
        idle.append((opt.skipped_steps.clone(), opt.last_grad_norm.clone()))
        opt.zero_grad()
    out["idle"] = dict(record=idle, unused=unused.detach().clone(), state=len(opt.state))

    # 7. FusedSGD with process_group= on a sparse gradient (each rank its own embedding): the
    # norm over both ranks of the densified gradients.
    emb = torch.nn.Embedding(6, 3, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(18.0).view(6, 3) * (rank + 1))
    opt = so.FusedSGD(emb.parameters(), lr=LR, process_group=dist.group.WORLD, max_grad_norm=MAX_NORM)
    emb(torch.tensor([1, 4, 4])).square().sum().backward()
    square = emb.weight.grad.to_dense().square().sum()
    dist.all_reduce(square)
    opt.step()
    out["sparse"] = dict(norm=opt.last_grad_norm.clone(), want=square.sqrt())

    # 8. write_back_grads=True on DTensor grads: .grad left clipped by the global coefficient.
    model = _fsdp(mesh)
    opt = _make_opt("adamw", model.parameters(), write_back_grads=True)
    _loss(model, 1, rank, world).backward()
    opt.step()
    out["write_back"] = [_full(p.grad) for p in model.parameters()]

    # 9. GradScaler hands its scale and found_inf to the step; the sharded norm is taken of the
    # scaled gradients and unscaled in the op. An inf on rank 1 at step 3.
    model = _fsdp(mesh)
    opt = _make_opt("adamw", model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scales = []
    for step in range(1, SCALER_STEPS + 1):
        scaler.scale(_loss(model, step, rank, world)).backward()
        if step == 3 and rank == 1:
            _local_view(next(model.parameters()).grad).view(-1)[0] = math.inf
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        scales.append((float(scaler.get_scale()), int(opt.skipped_steps)))
    out["scaler"] = dict(scales=scales, params=[_full(p) for p in model.parameters()])

    out["api"] = _api_checks(pg_opt, _fsdp(mesh))
    dist.barrier()  # every rank done with its collectives before the harness tears the group down
    return out


def _api_checks(opt, fsdp_model):
    """What the process_group and DTensor params do outside the step: pickling, deepcopy, the
    refusals of differentiable=True. Returns {check: outcome}."""
    import copy
    import io

    import steadystep.optim as so
    out = {}
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    out["unpickled_group"] = torch.load(buffer, weights_only=False).process_group
    clone = copy.deepcopy(opt)
    out["deepcopy_shares_group"] = clone.process_group is opt.process_group
    pairs = [(opt.state[p]["exp_avg"], clone.state[q]["exp_avg"])
             for p, q in zip(opt.param_groups[0]["params"], clone.param_groups[0]["params"])]
    out["deepcopy_copies_state"] = all(a is not b and torch.equal(a, b) for a, b in pairs)
    out["state_dict_keys"] = sorted(opt.state_dict())
    try:
        so.FusedAdamW([torch.nn.Parameter(torch.ones(2))], differentiable=True, process_group=opt.process_group)
    except ValueError as error:
        out["differentiable_pg"] = str(error)
    diff = so.FusedAdamW(fsdp_model.parameters(), differentiable=True)
    fsdp_model(torch.ones(2, 5)).sum().backward()
    try:
        diff.step()
    except RuntimeError as error:
        out["differentiable_dtensor"] = str(error)
    return out


def _ranks_resume(rank, world, ckpt_dir):
    """Spawn 2 (a fresh group): load the step-10 checkpoint into a fresh FSDP2 model and
    FusedAdamW, train steps 11..20."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    model = _fsdp(mesh)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-3.0)  # not the checkpoint's values: the load must replace them
    opt = _make_opt("adamw", model.parameters())
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=ckpt_dir)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    loaded_steps = [float(_full(opt.state[p]["step"])) for p in model.parameters()]
    _train(model, opt, range(CKPT_STEP + 1, STEPS + 1), rank, world)
    out = dict(params=[_full(p) for p in model.parameters()], state=_full_state(opt, model),
               loaded_steps=loaded_steps, skipped=opt.skipped_steps.clone())

    # DCP's flattened optimizer state dict ("state.<fqn>.exp_avg", "param_groups.<fqn>.lr"):
    # from this optimizer into a fresh one on the same model.
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    flat = StateDictOptions(flatten_optimizer_state_dict=True)
    other = _make_opt("adamw", model.parameters())
    before = [_local(p) for p in model.parameters()]
    set_optimizer_state_dict(model, other, get_optimizer_state_dict(model, opt, options=flat), options=flat)
    out["flat"] = dict(
        same_state=all(torch.equal(_local(opt.state[p][k]), _local(other.state[p][k]))
                       for p in model.parameters() for k in ("step", "exp_avg", "exp_avg_sq")),
        params_kept=all(torch.equal(a, _local(p)) for a, p in zip(before, model.parameters())),
        lr=[g["lr"] for g in other.param_groups],
    )

    # Resharding: the same 2-rank checkpoint into a 1-rank FSDP2 group (each rank its own),
    # steps 11..20 on the whole batch.
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh
    solo, _ = dist.new_subgroups(group_size=1)
    model = _fsdp(DeviceMesh.from_group(solo, "cpu"))
    opt = _make_opt("adamw", model.parameters())
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=ckpt_dir, process_group=solo)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    _train(model, opt, range(CKPT_STEP + 1, STEPS + 1), 0, 1)
    out["solo"] = dict(params=[_full(p) for p in model.parameters()], state=_full_state(opt, model))
    dist.barrier()
    return out


# ---- fixtures: one spawn each ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dcp"))


@pytest.fixture(scope="module")
def main_run(ckpt_dir):
    return run_ranks(_ranks_main, 2, ckpt_dir, timeout=120, collective_timeout=60)


@pytest.fixture(scope="module")
def resumed(main_run, ckpt_dir):
    return run_ranks(_ranks_resume, 2, ckpt_dir, timeout=120, collective_timeout=60)


def _assert_params(got, want, rtol=RTOL, atol=ATOL):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _assert_state(got, want, keys):
    for a, b in zip(got, want):
        for key in keys:
            torch.testing.assert_close(a[key].float(), b[key].float(), rtol=RTOL, atol=ATOL)


# ---- tests ----------------------------------------------------------------------------------

def test_fsdp2_adamw_matches_single_process_clip_and_adamw(main_run):
    params, state, norms = _reference("adamw", STEPS)
    assert min(norms) > 2 * MAX_NORM  # clipping is active at every step
    for rank_out in main_run:
        run = rank_out["adamw"]
        _assert_params(run["params"], params)
        _assert_state(run["state"], state, ("exp_avg", "exp_avg_sq", "step"))
        # The norm each rank used is the global one (pre-clip), identical on every rank.
        torch.testing.assert_close(run["norms"], torch.tensor(norms), rtol=1e-5, atol=0)
        assert int(run["skipped"]) == 0
    assert torch.equal(main_run[0]["adamw"]["norms"], main_run[1]["adamw"]["norms"])


def test_fsdp2_sgd_momentum_matches_single_process(main_run):
    params, state, _ = _reference("sgd", STEPS)
    for rank_out in main_run:
        _assert_params(rank_out["sgd"]["params"], params)
        _assert_state(rank_out["sgd"]["state"], state, ("momentum_buffer",))


def test_inf_on_one_rank_skips_the_step_on_every_rank(main_run):
    for rank, rank_out in enumerate(main_run):
        around = rank_out["inf"]["around"]
        # Bit-identical params and state across the skipped step, on the rank with the inf and
        # on the rank whose own shards were finite.
        for a, b in zip(around["before"]["params"], around["after"]["params"]):
            assert torch.equal(a, b), rank
        for sa, sb in zip(around["before"]["state"], around["after"]["state"]):
            assert sa.keys() == sb.keys()
            for key in sa:
                assert torch.equal(sa[key], sb[key]), (rank, key)
        assert not torch.isfinite(around["norm"])
        assert int(around["skipped"]) == 1
        assert int(rank_out["inf"]["skipped"]) == 1


def test_inf_run_continues_as_a_run_without_that_step(main_run):
    params, state, _ = _reference("adamw", STEPS, skip=(INF_STEP,))
    for rank_out in main_run:
        _assert_params(rank_out["inf"]["params"], params)
        _assert_state(rank_out["inf"]["state"], state, ("exp_avg", "exp_avg_sq", "step"))
    # Both ranks hold the same full model: no shard diverged.
    for a, b in zip(main_run[0]["inf"]["params"], main_run[1]["inf"]["params"]):
        assert torch.equal(a, b)


def test_process_group_on_hand_sharded_params(main_run):
    params, state, _ = _reference("adamw", STEPS, skip=(INF_STEP,))
    for rank, rank_out in enumerate(main_run):
        run = rank_out["pg"]
        _assert_params(run["params"], params)
        for i, st in run["state"].items():
            assert i % 2 == rank
            _assert_state([st], [state[i]], ("exp_avg", "exp_avg_sq", "step"))
        # The inf was in rank 1's params only; rank 0 skipped too.
        assert [int(s) for s in run["skipped"]] == [1]


def test_dcp_checkpoint_resumes_in_a_fresh_group(main_run, resumed):
    for rank in range(2):
        want = main_run[rank]["adamw"]
        got = resumed[rank]
        assert got["loaded_steps"] == [float(CKPT_STEP)] * len(got["params"])
        # get/set_optimizer_state_dict carry state and param_groups only (README): the counter
        # of the resumed optimizer starts at 0; the lr=0 step DCP takes to create state skips nothing.
        assert int(got["skipped"]) == 0
        # Same sharding, same ops from the same state: bitwise.
        for a, b in zip(got["params"], want["params"]):
            assert torch.equal(a, b)
        for sa, sb in zip(got["state"], want["state"]):
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[key].float(), sb[key].float()), key


def test_dcp_flattened_optimizer_state_dict(resumed):
    for rank_out in resumed:
        assert rank_out["flat"]["same_state"]
        assert rank_out["flat"]["params_kept"]  # the lr=0 step DCP takes to create state moves nothing
        assert rank_out["flat"]["lr"] == [LR]


def test_dcp_checkpoint_reshards_to_one_rank(main_run, resumed):
    # 2 shards saved, 1 loaded: a different summation order from step 11 on, so fp32 rounding.
    for rank in range(2):
        want = main_run[rank]["adamw"]
        got = resumed[rank]["solo"]
        _assert_params(got["params"], want["params"])
        _assert_state(got["state"], want["state"], ("exp_avg", "exp_avg_sq", "step"))


def test_process_group_is_not_pickled_and_shared_by_deepcopy(main_run):
    for rank_out in main_run:
        api = rank_out["api"]
        assert api["unpickled_group"] is None
        assert api["deepcopy_shares_group"]
        assert api["deepcopy_copies_state"]
        assert api["state_dict_keys"] == ["param_groups", "skipped_steps", "state"]


def test_differentiable_refuses_sharded_params(main_run):
    for rank_out in main_run:
        api = rank_out["api"]
        assert api["differentiable_pg"] == "process_group is not supported with differentiable=True"
        assert "differentiable=True does not support DTensor params" in api["differentiable_dtensor"]


def test_process_group_must_be_a_process_group():
    import steadystep.optim as so
    for cls in (so.FusedAdam, so.FusedAdamW, so.FusedSGD):
        with pytest.raises(TypeError, match="process_group must be a torch.distributed.ProcessGroup"):
            cls([torch.nn.Parameter(torch.ones(2))], process_group="0")


def test_nan_on_one_rank_skips_everywhere_with_the_inf_norm(main_run):
    # gloo's max all-reduce keeps a NaN only from some ranks; the guard must see it from all.
    for rank_out in main_run:
        run = rank_out["nan_inf_norm"]
        assert int(run["skipped"]) == 1
        assert not torch.isfinite(run["norm"])
        assert run["finite"]


def test_process_group_rank_without_gradients_joins_the_norm(main_run):
    want = _reference("adamw", 1)[2][0]  # step 1's norm of the whole model
    for rank, rank_out in enumerate(main_run):
        run = rank_out["idle"]
        (skipped1, norm1), (skipped2, norm2) = run["record"]
        torch.testing.assert_close(norm1, torch.tensor(want), rtol=1e-6, atol=0)
        assert int(skipped1) == 0 and int(skipped2) == 1
        assert not torch.isfinite(norm2)
    assert torch.equal(main_run[1]["idle"]["unused"], torch.ones(3))
    assert main_run[1]["idle"]["state"] == 0


def test_write_back_grads_on_dtensors_are_globally_clipped(main_run):
    model = _model()
    _loss(model, 1).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    assert norm > MAX_NORM
    for rank_out in main_run:
        _assert_params(rank_out["write_back"], [p.grad for p in model.parameters()])


def test_process_group_with_sparse_gradients(main_run):
    for rank_out in main_run:
        torch.testing.assert_close(rank_out["sparse"]["norm"], rank_out["sparse"]["want"], rtol=1e-6, atol=0)


def test_grad_scaler_on_fsdp2(main_run):
    # A power-of-two scale unscales exactly: the reference is the unscaled run without step 3.
    params, _, _ = _reference("adamw", SCALER_STEPS, skip=(3,))
    for rank_out in main_run:
        run = rank_out["scaler"]
        assert run["scales"] == [(1024.0, 0), (1024.0, 0), (512.0, 1), (512.0, 1), (512.0, 1)]
        _assert_params(run["params"], params)
