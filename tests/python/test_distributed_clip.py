"""The global gradient norm and clip over ranks (DTensor grads from FSDP2, tensor parallel, HSDP,
several meshes, pipeline stages; hand-sharded plain tensors with ``process_group=``) against
torch on the FULL gradients in one process.

Each rank returns, per scenario and norm type, the full gradients before clipping
(``full_tensor()``, or its own slice of hand-sharded ones), steadystep's norm, the full
gradients after ``steadystep.clip_grad_norm_``, and what torch's ``clip_grad_norm_`` returns on
the same DTensor gradients. The parent rebuilds the full gradients and compares: the norm with
the fp64 norm of the full gradients (rel 1e-6, as test_clip_grad's fp32 bound), the clipped
gradients with torch's ``clip_grad_norm_`` applied to the full gradients (its fp32 norm is off
by up to 1.5e-6 for p=3, see test_clip_grad.torch_rtol: the same widening here), the result's
type/placements with torch's own on the same DTensors.

Spawning ranks costs seconds here (each process imports torch), so one 4-rank spawn runs every
scenario, the 2-rank ones on 2-rank meshes and groups inside it (ranks {0, 1} and {2, 3} each run
them), and one 2-rank spawn checks that a mismatched collective fails instead of hanging; the
tests read the module-scoped records. A scenario that raises on a rank is recorded with its
traceback and fails its own test only.
"""

import math
import re
import time
import traceback

import pytest
import torch

from dist_utils import run_ranks

NORMS = [2.0, 1.0, 3.0, 0.5, math.inf]
RTOL_NORM = 1e-6  # steadystep's fp32 norm against the fp64 norm of the full gradients
CLIP_FRACTION = 0.3  # max_norm = 0.3 * the full norm: every scenario actually clips


def _torch_rtol(norm_type):
    # torch's fp32 norm (the clip reference) for p outside {1, 2, inf}: up to 1.5e-6 off, and
    # x**(1/p) amplifies it by 1/p for p < 1 (test_clip_grad.torch_rtol).
    return 1e-6 if norm_type in (1.0, 2.0, math.inf) else 4e-6 * max(1.0, 1.0 / norm_type)


# ---- rank side --------------------------------------------------------------------------------

def _full(t):
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t.detach().clone()


def _describe(value):
    """Type, placements and mesh of a returned norm (what is compared with torch's)."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return dict(type="DTensor", placements=tuple(repr(p) for p in value.placements),
                    mesh=tuple(value.device_mesh.mesh.flatten().tolist()),
                    mesh_shape=tuple(value.device_mesh.mesh.shape), local=value.to_local().clone(),
                    full=value.full_tensor())
    return dict(type=type(value).__name__, placements=None, mesh=None, mesh_shape=None,
                local=value.detach().clone(), full=value.detach().clone())


def _full_norm64(grads, norm_type):
    return torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads]), norm_type)


def _steadystep():
    import steadystep  # in the rank's process only: the parent never needs the extension

    return steadystep


def _clip_records(params, norm_type, process_group=None, full_grads=None, torch_ok=True, every_grad=None):
    """Norm and clip of ``params``' grads by steadystep (and by torch, on the same DTensor grads).

    ``full_grads``: the full grads to report (default: the params' grads, gathered);
    ``every_grad``: all grads the norm is over, for max_norm (default: ``full_grads``)."""
    steadystep = _steadystep()

    originals = [p.grad.clone() for p in params]
    full_before = [_full(g) for g in originals] if full_grads is None else full_grads
    max_norm = CLIP_FRACTION * float(_full_norm64(full_before if every_grad is None else every_grad, norm_type))
    kw = {} if process_group is None else dict(process_group=process_group)
    rec = dict(max_norm=max_norm, full_before=full_before)

    def restore():
        for p, g in zip(params, originals):
            p.grad = g.clone()

    # torch on the same DTensor grads: the type/placements steadystep must return.
    if torch_ok:
        restore()
        try:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            rec["torch"] = _describe(norm)
            rec["torch_clipped"] = [_full(p.grad) for p in params]
        except Exception as e:  # e.g. grads on several meshes (pytorch#180346)
            rec["torch"] = dict(error=repr(e)[:200])
        else:  # torch's own norm (Partial(max) for inf) fed to steadystep's clip_grads_with_norm_
            restore()
            steadystep.clip_grads_with_norm_(params, max_norm, norm)
            rec["clipped_with_torch_norm"] = [_full(p.grad) for p in params]

    restore()
    rec["norm_get"] = _describe(steadystep.get_total_norm([p.grad for p in params], norm_type, **kw))
    norm = steadystep.clip_grad_norm_(params, max_norm, norm_type, **kw)
    rec["norm"] = _describe(norm)
    rec["clipped"] = [_full(p.grad) for p in params]

    # clip_grads_with_norm_ with the norm get_total_norm returned (a DTensor for DTensor grads)
    restore()
    total = steadystep.get_total_norm([p.grad for p in params], norm_type, **kw)
    steadystep.clip_grads_with_norm_(params, max_norm, total)
    rec["clipped_with_norm"] = [_full(p.grad) for p in params]
    restore()
    return rec


def _train_grads(model, seed, n_in):
    torch.manual_seed(seed)
    x = torch.randn(4, n_in)
    (model(x).square().sum() * 3.0).backward()


def _mlp(seed, sizes):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def _fsdp(model, mesh, **kw):
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh, **kw)
    return fully_shard(model, mesh=mesh, **kw)


def _scenario_fsdp_1d(rank, mesh):
    # Odd sizes: 7 -> 4 + 3 over 2 ranks, 2+2+2+1 over 4; 3 -> 1+1+1+0 (an empty shard).
    model = _fsdp(_mlp(0, [5, 7, 3]), mesh)
    _train_grads(model, 100 + mesh.get_local_rank(), 5)
    params = list(model.parameters())
    # torch's own inf-norm fails on a rank whose shard is empty ("_foreach_norm cannot compute the
    # infinity norm on an empty tensor"): no torch record there, steadystep must still work.
    any_empty = torch.tensor(float(any(p.to_local().numel() == 0 for p in params)))
    torch.distributed.all_reduce(any_empty, group=mesh.get_group())
    return {p: _clip_records(params, p, torch_ok=not (p == math.inf and any_empty.item() > 0)) for p in NORMS}


def _scenario_nonfinite(rank, mesh):
    """An inf in one rank's shard: the norm is inf on every rank, and error_if_nonfinite raises on
    every rank (the decision is global: no rank goes on alone into the next collective)."""
    steadystep = _steadystep()
    model = _fsdp(_mlp(0, [5, 7, 3]), mesh)
    _train_grads(model, 500, 5)
    params = list(model.parameters())
    if mesh.get_local_rank() == 1:
        params[0].grad.to_local()[0, 0] = float("inf")
    out = {}
    for p in (2.0, math.inf):
        originals = [q.grad.clone() for q in params]
        out[p] = dict(norm=_describe(steadystep.clip_grad_norm_(params, 1.0, p)))
        for q, g in zip(params, originals):
            q.grad = g.clone()
        for who, fn in (("ours", steadystep.clip_grad_norm_), ("torch", torch.nn.utils.clip_grad_norm_)):
            try:
                fn(params, 1.0, p, error_if_nonfinite=True)
                out[p][who] = None
            except RuntimeError as e:
                out[p][who] = str(e)
            for q, g in zip(params, originals):
                q.grad = g.clone()
    return out


def _scenario_fsdp_tp(rank, mesh2d):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5),
                                torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    # Rowwise's bias stays Replicate on tp: it must count once. LayerNorm and the last Linear get no
    # tp: FSDP shards them on mesh["dp"] only, so the grads live on two meshes.
    parallelize_module(model, mesh2d["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    from torch.distributed.fsdp import fully_shard

    fully_shard(model, mesh=mesh2d["dp"])
    _train_grads(model, 200 + mesh2d.get_coordinate()[0], 6)  # same input within a tp group
    params = list(model.parameters())
    out = {p: _clip_records(params, p) for p in NORMS}
    # The TP part alone: grads on the 2-D mesh only, where torch's clip works.
    tp_params = params[:4]
    out["tp_only"] = _clip_records(tp_params, 2.0)
    out["placements"] = [tuple(repr(x) for x in p.grad.placements) for p in params]
    return out


def _scenario_hsdp(rank, mesh2d):
    model = _fsdp(_mlp(1, [6, 7, 3]), mesh2d)  # placements (Replicate, Shard(0))
    _train_grads(model, 300 + rank, 6)
    params = list(model.parameters())
    out = {p: _clip_records(params, p) for p in NORMS}
    out["placements"] = [tuple(repr(x) for x in p.grad.placements) for p in params]
    return out


def _scenario_pipeline(rank, mesh_pp_dp, pp_group):
    stage = mesh_pp_dp.get_coordinate()[0]
    sizes = [[5, 7, 4], [4, 6, 3]][stage]  # different layers per stage
    model = _fsdp(_mlp(10 + stage, sizes), mesh_pp_dp["dp"])
    _train_grads(model, 400 + rank, sizes[0])
    params = list(model.parameters())
    # max_norm is the same on every stage: from the full grads of both stages.
    local_full = [_full(p.grad) for p in params]
    gathered = [None, None]
    torch.distributed.all_gather_object(gathered, local_full, group=pp_group)
    every = gathered[0] + gathered[1]
    out = {"stage": stage}
    for p in NORMS:
        out[p] = _clip_records(params, p, process_group=pp_group, full_grads=local_full, torch_ok=False,
                               every_grad=every)
    return out


def _scenario_handmade(rank, mesh, layouts):
    """DTensor grads built by hand, one per layout (placements per mesh dim, "P" = a Partial sum of
    rank-specific locals): Shard on other dims than 0, uneven, Replicate on every dim, Partial."""
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    make = {"R": Replicate(), "S0": Shard(0), "S1": Shard(1), "P": Partial()}
    gen = torch.Generator().manual_seed(11)
    params = []
    for i, layout in enumerate(layouts):
        full = torch.randn(5, 3, generator=gen) * (i + 1)
        placements = [make[x] for x in layout]
        if "P" in layout:  # this rank's addend of a pending sum: differs per rank
            coordinate = sum(c * 10 ** d for d, c in enumerate(mesh.get_coordinate()))
            local_gen = torch.Generator().manual_seed(1000 * i + coordinate)
            local = distribute_tensor(full, mesh, [Replicate() if x == "P" else make[x] for x in layout]).to_local()
            local = local + torch.randn(local.shape, generator=local_gen)
            grad = DTensor.from_local(local, mesh, placements, run_check=False, shape=full.shape,
                                      stride=full.stride())
        else:
            grad = distribute_tensor(full, mesh, placements)
        param = distribute_tensor(torch.zeros(5, 3), mesh, [Replicate()] * mesh.ndim).requires_grad_()
        param.grad = grad
        params.append(param)
    return {p: _clip_records(params, p) for p in NORMS}


HANDMADE_1D = [("S1",), ("R",), ("S0",), ("P",)]
HANDMADE_2D = [("S0", "S1"), ("R", "S0"), ("S1", "R"), ("R", "R"), ("P", "S0"), ("S0", "P")]
# Each grad replicated on the dim the other is sharded on: rank (1, 1) counts neither, and must
# still join both of the mesh's reductions (it once skipped them, and the others hung).
HANDMADE_2D_CROSSED = [("S0", "R"), ("R", "S0")]
ZERO_SHAPES = [(7, 5), (7,), (3, 7), (3,), (2, 2, 3), (1,)]


def _zero_full_grads():
    gen = torch.Generator().manual_seed(7)
    return [torch.randn(s, generator=gen) * (i + 1) for i, s in enumerate(ZERO_SHAPES)]


def _scenario_zero_slices(rank, group):
    """ZeRO-2 style: each rank of ``group`` holds a slice of each flat gradient (some empty)."""
    import torch.distributed as dist

    r, n = dist.get_rank(group), dist.get_world_size(group)
    full = _zero_full_grads()
    params = []
    for g in full:
        piece = torch.tensor_split(g.flatten(), n)[r].clone()
        params.append(torch.zeros_like(piece, requires_grad=True))
        params[-1].grad = piece
    return {p: _clip_records(params, p, process_group=group, full_grads=full, torch_ok=False) for p in NORMS}


def _scenario_zero_disjoint(rank, group, empty_last=False):
    """Each rank of ``group`` holds whole gradients, disjoint from the others' (round robin)."""
    import torch.distributed as dist

    r, n = dist.get_rank(group), dist.get_world_size(group)
    full = _zero_full_grads()
    params = []
    for i, g in enumerate(full):
        owner = i % n if not empty_last else i % (n - 1)
        if owner == r:
            params.append(torch.zeros_like(g, requires_grad=True))
            params[-1].grad = g.clone()
    return {p: _clip_records(params, p, process_group=group, full_grads=full, torch_ok=False) for p in NORMS}


def _scenario_get_total_norm_pg(rank, group):
    """get_total_norm(process_group=) on plain slices, fp64 too."""
    import torch.distributed as dist

    steadystep = _steadystep()
    r, n = dist.get_rank(group), dist.get_world_size(group)
    out = {}
    for dtype in (torch.float32, torch.float64):
        full = [g.to(dtype) for g in _zero_full_grads()]
        mine = [torch.tensor_split(g.flatten(), n)[r] for g in full]
        out[str(dtype)] = {p: _describe(steadystep.get_total_norm(mine, p, process_group=group)) for p in NORMS}
    return out


def _ranks_all(rank, world):
    """Every scenario on 4 ranks; each one's record or its traceback."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    assert world == 4
    mesh_pairs = init_device_mesh("cpu", (2, 2), mesh_dim_names=("pair", "in_pair"))  # {0,1}, {2,3}
    mesh_world = init_device_mesh("cpu", (4,))
    mesh_dp_tp = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    mesh_hsdp = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    mesh_pp_dp = init_device_mesh("cpu", (2, 2), mesh_dim_names=("pp", "dp"))
    # pipeline: the group pairing the stages' ranks {0, 2}, {1, 3}; ZeRO on pairs {0, 1}, {2, 3}
    pp_group, _ = dist.new_subgroups_by_enumeration([[0, 2], [1, 3]])
    pair_group, _ = dist.new_subgroups_by_enumeration([[0, 1], [2, 3]])

    scenarios = {
        "fsdp_2ranks": lambda: _scenario_fsdp_1d(rank, mesh_pairs["in_pair"]),
        "handmade_1d": lambda: _scenario_handmade(rank, mesh_pairs["in_pair"], HANDMADE_1D),
        "handmade_2d": lambda: _scenario_handmade(rank, mesh_dp_tp, HANDMADE_2D),
        "handmade_2d_crossed": lambda: _scenario_handmade(rank, mesh_dp_tp, HANDMADE_2D_CROSSED),
        "nonfinite": lambda: _scenario_nonfinite(rank, mesh_pairs["in_pair"]),
        "fsdp_4ranks": lambda: _scenario_fsdp_1d(rank, mesh_world),
        "fsdp_tp": lambda: _scenario_fsdp_tp(rank, mesh_dp_tp),
        "hsdp": lambda: _scenario_hsdp(rank, mesh_hsdp),
        "pipeline": lambda: _scenario_pipeline(rank, mesh_pp_dp, pp_group),
        "zero_slices_2ranks": lambda: _scenario_zero_slices(rank, pair_group),
        "zero_slices_world": lambda: _scenario_zero_slices(rank, dist.group.WORLD),
        "zero_disjoint_world": lambda: _scenario_zero_disjoint(rank, dist.group.WORLD),
        "get_total_norm_pg": lambda: _scenario_get_total_norm_pg(rank, pair_group),
        # last: a rank holding no gradient at all must still join the reduction
        "zero_disjoint_empty_rank": lambda: _scenario_zero_disjoint(rank, dist.group.WORLD, empty_last=True),
    }
    out = {}
    for name, run in scenarios.items():
        start = time.monotonic()
        try:
            out[name] = dict(ok=True, value=run())
        except Exception:
            out[name] = dict(ok=False, error=traceback.format_exc())
        out[name]["seconds"] = time.monotonic() - start  # for whoever trims this file's run time
    return out


# ---- parent side -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def records():
    return run_ranks(_ranks_all, 4, timeout=180, collective_timeout=30)


def _scenario(records, name):
    got = [r[name] for r in records]
    for rank, g in enumerate(got):
        assert g["ok"], f"rank {rank} failed in {name}:\n{g['error']}"
    return [g["value"] for g in got]


def _check_norm(rec, full, norm_type, where):
    want = _full_norm64(full, norm_type)
    for key in ("norm", "norm_get"):
        for field in ("local", "full"):
            got = rec[key][field]
            assert got.dtype == torch.float32, (where, key, got.dtype)
            assert float(got) == pytest.approx(float(want), rel=RTOL_NORM), (where, key, field)


def _check_clipped(clipped, full, max_norm, norm_type, where):
    copies = [g.clone().requires_grad_() for g in full]
    for c, g in zip(copies, full):
        c.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(copies, max_norm, norm_type)
    assert len(clipped) == len(copies)
    for i, (got, ref) in enumerate(zip(clipped, copies)):
        torch.testing.assert_close(got, ref.grad, rtol=_torch_rtol(norm_type), atol=1e-8,
                                   msg=lambda m: f"{where} grad {i}: {m}")


def _check_like_torch(rec, norm_type, where):
    """steadystep returns what torch returns on the same DTensor grads: a DTensor on the same mesh,
    Replicate. For inf torch returns Partial(max) on the sharded dims (a pending max: its local
    value is this rank's own); steadystep's is Replicate there too, so every rank reads the
    global value locally, as for the other norms."""
    theirs, ours = rec["torch"], rec["norm"]
    assert "error" not in theirs, (where, theirs)
    assert float(theirs["full"]) == pytest.approx(float(ours["full"]), rel=_torch_rtol(norm_type)), where
    want = dict(theirs)
    if norm_type == math.inf:  # e.g. (Partial(max),) for FSDP, (Replicate(), Partial(max)) for HSDP
        assert "Partial(max)" in theirs["placements"], (where, theirs["placements"])
        want["placements"] = tuple("Replicate()" for _ in theirs["placements"])
    for key in ("type", "placements", "mesh", "mesh_shape"):
        assert ours[key] == want[key], (where, key, ours[key], want[key])
        assert rec["norm_get"][key] == want[key], (where, "get_total_norm", key, rec["norm_get"][key], want[key])


def _check_dtensor_scenario(values, name, like_torch=NORMS, torch_scales_partial=True):
    for rank, value in enumerate(values):
        for p in NORMS:
            rec = value[p]
            where = f"{name} rank {rank} p={p}"
            full = rec["full_before"]
            # every rank sees the same full grads (a sanity check of the gathering itself)
            for a, b in zip(full, values[0][p]["full_before"]):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            _check_norm(rec, full, p, where)
            _check_clipped(rec["clipped"], full, rec["max_norm"], p, where)
            _check_clipped(rec["clipped_with_norm"], full, rec["max_norm"], p, where + " clip_grads_with_norm_")
            if p in like_torch:
                _check_like_torch(rec, p, where)
                if torch_scales_partial:
                    _check_clipped(rec["torch_clipped"], full, rec["max_norm"], p, where + " torch itself")
                _check_clipped(rec["clipped_with_torch_norm"], full, rec["max_norm"], p,
                               where + " clip_grads_with_norm_(torch's norm)")


def test_fsdp2_two_ranks(records):
    _check_dtensor_scenario(_scenario(records, "fsdp_2ranks"), "fsdp_2ranks")


def test_fsdp2_four_ranks_with_empty_shards(records):
    # rank 3 holds an empty shard of the last bias (3 rows over 4 ranks): torch's inf-norm fails there
    _check_dtensor_scenario(_scenario(records, "fsdp_4ranks"), "fsdp_4ranks", like_torch=[2.0, 1.0, 3.0, 0.5])


# torch 2.11's clip_grad_norm_ leaves a Partial(sum) grad unscaled (its _foreach_mul_ by the
# Replicate coefficient is dropped; checked by hand on 2 gloo ranks): its norm and type are still
# compared with steadystep's, its clipped grads are not used as a reference.
def test_handmade_dtensors_on_a_1d_mesh(records):
    _check_dtensor_scenario(_scenario(records, "handmade_1d"), "handmade_1d", torch_scales_partial=False)


def test_handmade_dtensors_on_a_2d_mesh(records):
    _check_dtensor_scenario(_scenario(records, "handmade_2d"), "handmade_2d", torch_scales_partial=False)


def test_a_rank_that_counts_no_grad_still_joins_the_reductions(records):
    _check_dtensor_scenario(_scenario(records, "handmade_2d_crossed"), "handmade_2d_crossed")


def test_nonfinite_in_one_shard_is_seen_by_every_rank(records):
    for rank, value in enumerate(_scenario(records, "nonfinite")):
        for p in (2.0, math.inf):
            assert value[p]["norm"]["type"] == "DTensor"
            assert math.isinf(float(value[p]["norm"]["local"])), (rank, p, value[p]["norm"])
            # every rank raises, with torch's message (torch's own check, on the same grads)
            assert value[p]["ours"] is not None, (rank, p)
            assert value[p]["ours"] == value[p]["torch"], (rank, p, value[p])


def test_fsdp2_with_tensor_parallel_on_2d_mesh(records):
    values = _scenario(records, "fsdp_tp")
    placements = values[0]["placements"]
    # the layout the scenario is about: 2-D sharded, Replicate on tp, and dp-only grads
    assert ("Shard(dim=0)", "Shard(dim=1)") in placements
    assert ("Shard(dim=0)", "Replicate()") in placements
    assert ("Shard(dim=0)",) in placements
    # torch cannot take the norm of grads on two meshes (pytorch#180346): steadystep must, and
    # return a Replicate DTensor on the first grad's (2-D) mesh.
    _check_dtensor_scenario(values, "fsdp_tp", like_torch=())
    for value in values:
        for p in NORMS:
            assert value[p]["norm"]["type"] == "DTensor"
            assert value[p]["norm"]["placements"] == ("Replicate()", "Replicate()")
            assert value[p]["norm"]["mesh"] == (0, 1, 2, 3)
    # the TP-only subset is on one mesh, where torch works: compare with torch there
    for rank, value in enumerate(values):
        rec = value["tp_only"]
        where = f"fsdp_tp tp_only rank {rank}"
        _check_norm(rec, rec["full_before"], 2.0, where)
        _check_clipped(rec["clipped"], rec["full_before"], rec["max_norm"], 2.0, where)
        _check_like_torch(rec, 2.0, where)


def test_hsdp_2d_mesh(records):
    values = _scenario(records, "hsdp")
    assert set(values[0]["placements"]) == {("Replicate()", "Shard(dim=0)")}
    _check_dtensor_scenario(values, "hsdp")


def test_pipeline_stages_with_process_group(records):
    values = _scenario(records, "pipeline")
    stages = {v["stage"]: rank for rank, v in enumerate(values)}
    assert stages == {0: 1, 1: 3}  # ranks 0, 1: stage 0; ranks 2, 3: stage 1
    for rank, value in enumerate(values):
        for p in NORMS:
            rec = value[p]
            where = f"pipeline rank {rank} p={p}"
            full = values[0][p]["full_before"] + values[2][p]["full_before"]  # both stages
            _check_norm(rec, full, p, where)
            assert rec["max_norm"] == pytest.approx(CLIP_FRACTION * float(_full_norm64(full, p)), rel=1e-12)
            n0 = len(values[0][p]["full_before"])
            mine = slice(0, n0) if value["stage"] == 0 else slice(n0, None)
            for key in ("clipped", "clipped_with_norm"):
                copies = [g.clone().requires_grad_() for g in full]
                for c, g in zip(copies, full):
                    c.grad = g.clone()
                torch.nn.utils.clip_grad_norm_(copies, rec["max_norm"], p)
                for got, ref in zip(rec[key], copies[mine]):
                    torch.testing.assert_close(got, ref.grad, rtol=_torch_rtol(p), atol=1e-8)
            # the result is the stage's own Replicate DTensor, as torch returns for the stage
            assert rec["norm"]["type"] == "DTensor" and rec["norm"]["placements"] == ("Replicate()",)


def _check_plain_group(values, name, rebuild):
    """Hand-sharded plain grads: norm over the group == full norm; the clipped pieces match."""
    full = _zero_full_grads()
    for p in NORMS:
        for rank, value in enumerate(values):
            rec = value[p]
            where = f"{name} rank {rank} p={p}"
            for key in ("norm", "norm_get"):
                assert rec[key]["type"] == "Tensor", (where, rec[key]["type"])  # plain, as the grads
            _check_norm(rec, full, p, where)
        for key in ("clipped", "clipped_with_norm"):
            pieces = [v[p][key] for v in values]
            _check_clipped(rebuild(pieces), full, values[0][p]["max_norm"], p, f"{name} {key} p={p}")


def _rebuild_slices(groups):
    def rebuild(pieces):  # pieces[rank][i]: rank's slice of grad i
        out = []
        for i, shape in enumerate(ZERO_SHAPES):
            out.append(torch.cat([pieces[r][i] for r in groups]).reshape(shape))
        return out
    return rebuild


def test_zero_slices_over_a_two_rank_group(records):
    values = _scenario(records, "zero_slices_2ranks")
    _check_plain_group(values[:2], "zero_slices_2ranks {0,1}", _rebuild_slices([0, 1]))
    _check_plain_group(values[2:], "zero_slices_2ranks {2,3}", _rebuild_slices([0, 1]))


def test_zero_slices_over_the_world(records):
    _check_plain_group(_scenario(records, "zero_slices_world"), "zero_slices_world", _rebuild_slices([0, 1, 2, 3]))


def _rebuild_disjoint(owners):
    def rebuild(pieces):
        taken = [0] * len(pieces)
        out = []
        for owner in owners:
            out.append(pieces[owner][taken[owner]])
            taken[owner] += 1
        return out
    return rebuild


def test_zero_disjoint_tensors_over_the_world(records):
    owners = [i % 4 for i in range(len(ZERO_SHAPES))]
    _check_plain_group(_scenario(records, "zero_disjoint_world"), "zero_disjoint_world", _rebuild_disjoint(owners))


def test_zero_a_rank_without_gradients_still_joins(records):
    owners = [i % 3 for i in range(len(ZERO_SHAPES))]
    _check_plain_group(_scenario(records, "zero_disjoint_empty_rank"), "zero_disjoint_empty_rank",
                       _rebuild_disjoint(owners))


def test_get_total_norm_with_process_group(records):
    values = _scenario(records, "get_total_norm_pg")
    for dtype, rtol in ((torch.float32, RTOL_NORM), (torch.float64, 1e-12)):
        full = _zero_full_grads()
        for rank, value in enumerate(values):
            for p in NORMS:
                got = value[str(dtype)][p]
                assert got["type"] == "Tensor" and got["local"].dtype == dtype, (rank, p, got["type"])
                assert float(got["local"]) == pytest.approx(float(_full_norm64(full, p)), rel=rtol), (dtype, rank, p)


# ---- a failed or mismatched collective ends in an error, not a hang ---------------------------

COLLECTIVE_TIMEOUT = 3.0


def _ranks_mismatch(rank, world):
    """Rank 0 reduces over both ranks; rank 1 over a group of its own (a different group size),
    then stays alive without joining: only rank 0's collective timeout can end rank 0's wait."""
    import torch.distributed as dist

    steadystep = _steadystep()
    alone = dist.new_group([1])
    grads = [torch.randn(5)]
    start = time.monotonic()
    try:
        norm = steadystep.get_total_norm(grads, 2.0, process_group=dist.group.WORLD if rank == 0 else alone)
    except RuntimeError as e:
        raise RuntimeError(f"the norm raised after {time.monotonic() - start:.1f} s") from e
    if rank == 1:
        assert float(norm) == pytest.approx(float(grads[0].norm()), rel=1e-6)  # its own group: its own norm
        time.sleep(60)
    return float(norm)


def test_mismatched_group_fails_within_the_collective_timeout():
    # run_ranks' own deadline raises TimeoutError (not a RuntimeError): reaching it fails the test
    with pytest.raises(RuntimeError) as info:
        run_ranks(_ranks_mismatch, 2, timeout=90, collective_timeout=COLLECTIVE_TIMEOUT)
    message = str(info.value)
    # rank 0's own reduction raised, inside the norm op, at its collective timeout
    assert "--- rank 0:" in message and "get_total_norm_sharded" in message, message
    assert "Timed out" in message, message
    seconds = float(re.search(r"the norm raised after ([0-9.]+) s", message).group(1))
    assert COLLECTIVE_TIMEOUT - 0.5 <= seconds < COLLECTIVE_TIMEOUT + 10, message
