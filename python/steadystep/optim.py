"""Fused optimizers: global-norm clipping and the Adam/AdamW/SGD update in one multi-tensor
step, with a guard that lets no non-finite gradient touch the weights.

``FusedAdam``, ``FusedAdamW`` and ``FusedSGD`` are :class:`torch.optim.Optimizer` subclasses with
torch's constructor arguments (and ``state_dict`` layout: checkpoints load into torch's
optimizers and back), plus keyword-only ``max_grad_norm=None, norm_type=2.0,
skip_nonfinite=True, write_back_grads=False``. A step is one C++ op,
``torch.ops.steadystep.fused_adam_`` / ``fused_sgd_``: a norm pass over all gradients of all
groups, then one update pass per group. Nothing is read back to the host: the norm
(``last_grad_norm``) and the count of skipped steps (``skipped_steps``) stay tensors on the
device. ``torch.amp.GradScaler.step`` hands its scale and ``found_inf`` to the step, which
unscales inside the same passes.

Layouts the kernels cannot walk as one flat array (a non-contiguous param, a gradient or state
whose strides differ from its param's) go through contiguous staging copies that are written
back after the op; complex params step through ``torch.view_as_real``, as torch's do. Sparse
gradients (SGD) are densified. ``differentiable=True`` runs torch's own differentiable update on
the clipped gradients instead of the fused kernels.

Sharded params: DTensor params and gradients (FSDP2 ``fully_shard``, tensor parallel) keep
their state as DTensors with the params' placements (as torch's optimizers do; ``step`` is a
plain tensor) and step on each rank's local shards. Plain params sharded by hand (ZeRO-1/2:
each rank's optimizer owns a disjoint part of the model) pass ``process_group=``. In both
cases the norm that clips and guards is the global one (``steadystep._distributed.global_norm``:
one all-reduce per mesh group, then over ``process_group``), handed to the op as
``grads_norm``: every rank scales by the same coefficient and skips the same steps.
"""

import copy
import itertools
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.adam import adam as _torch_adam
from torch.optim.optimizer import _device_dtype_check_for_fused
from torch.optim.sgd import sgd as _torch_sgd

from . import _C
from ._distributed import global_norm, is_dtensor
from .guard import _Guard
from ._distributed import local as _local  # a DTensor's shard on this rank; the kernels update it in place

__all__ = ["FusedAdam", "FusedAdamW", "FusedSGD"]

# Attributes beyond torch's (defaults, state, param_groups) that a pickled or deep-copied
# optimizer keeps.
_FUSED_ATTRS = (
    "max_grad_norm", "norm_type", "skip_nonfinite", "write_back_grads", "last_grad_norm", "_skipped_steps",
    "_step_supports_amp_scaling", "guard", "_decisions", "master_weights", "stochastic_rounding", "state_dtype",
    "rounding_seed",
)
_STATE_DICT_GUARD = "guard"  # top-level state_dict key: the guard policies' state_dicts, in order
_STATE_DICT_SKIPPED = "skipped_steps"  # top-level state_dict key; torch's load_state_dict ignores it
_STATE_DICT_SEED = "rounding_seed"  # top-level state_dict key: the stochastic rounding's seed
_HALF_DTYPES = (torch.float16, torch.bfloat16)  # the param dtypes that get master weights
_STATE_DTYPES = (torch.float32, torch.bfloat16)  # what state_dtype may be
# The state tensors that follow state_dtype (the math reads them in fp32 whatever they are).
_MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def _any_dtensor(tensors: list[Tensor]) -> bool:
    return any(is_dtensor(t) for t in tensors)


def _as_real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _dense(t: Tensor) -> bool:
    # Non-overlapping and dense (a permutation of contiguous): what the kernels walk flat.
    if t.is_contiguous() or t.numel() == 0:
        return True
    expected = 1
    for stride, size in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(t: Tensor, ref: Tensor) -> bool:
    # The kernels' own test: strides must agree where the size is > 1 (a size-1 dimension's
    # stride never moves through memory).
    return all(n <= 1 or a == b for n, a, b in zip(ref.shape, t.stride(), ref.stride()))


def _kernel_layout(t: Tensor, ref: Tensor, copies: list | None) -> Tensor:
    """`t`, or a staging copy laid out as `ref` (registered in `copies` for write-back) when
    only its strides keep the kernels from walking it beside `ref`. Any other mismatch
    (dtype, device, shape, sparse) goes to the kernel as is, whose check names it."""
    if t.layout == torch.strided and t.is_contiguous() and ref.is_contiguous():
        return t  # the common case, decided in C (a step over thousands of tensors asks this often)
    # A dtype other than the param's is the kernels' to accept (a state in state_dtype, a master)
    # or refuse; the staging copy keeps it.
    if t.layout != torch.strided or t.device != ref.device or t.shape != ref.shape or _same_layout(t, ref):
        return t
    staged = torch.empty_like(ref, dtype=t.dtype, memory_format=torch.preserve_format)
    staged.copy_(t)
    if copies is not None:
        copies.append((t, staged))
    return staged


def _kernel_param(p: Tensor, copies: list) -> Tensor:
    p = _as_real(p)
    if p.layout == torch.strided and not _dense(p):
        staged = p.contiguous()
        copies.append((p, staged))
        return staged
    return p


def _state_tensor(opt_name: str, state: dict, key: str) -> Tensor:
    value = state[key]  # KeyError for a state that lacks it, as torch's step raises
    if not isinstance(value, Tensor):
        raise TypeError(f"{opt_name}: state['{key}'] of a param must be a Tensor, got {type(value).__name__}")
    return value


def _probe_number(name: str, value: Any) -> None:
    if not isinstance(value, (numbers.Real, Tensor)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


class _FusedOptimizer(Optimizer):
    """What FusedAdam and FusedSGD share: the clipping settings, the AMP hand-over, the device
    counters, pickling, state_dict extras and the lazily placed step counts."""

    _GROUP_DEFAULTS: dict[str, Any] = {}

    @staticmethod
    def _check_fused_args(max_grad_norm: float | None, norm_type: float, skip_nonfinite: bool,
                          write_back_grads: bool) -> None:
        # Before Optimizer.__init__: a bad argument leaves nothing half-built.
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be a bool, got {type(skip_nonfinite).__name__}")
        if not isinstance(write_back_grads, bool):
            raise TypeError(f"write_back_grads must be a bool, got {type(write_back_grads).__name__}")
        _C.check_clip_settings(None if max_grad_norm is None else float(max_grad_norm), float(norm_type))

    @staticmethod
    def _check_guard(guard: Any, max_grad_norm: float | None, differentiable: bool) -> tuple:
        """The guard as a tuple of policies, checked before Optimizer.__init__."""
        if guard is None:
            return ()
        policies = tuple(guard) if isinstance(guard, (list, tuple)) else (guard,)
        for policy in policies:
            if not isinstance(policy, _Guard):
                raise TypeError(f"guard must be a steadystep guard policy (ZScoreClip, PercentileClip, SpikeSkip, "
                                f"AdaptiveGradClip) or a list of them, got {type(policy).__name__}")
        if len(set(map(id, policies))) != len(policies):
            raise ValueError("guard: the same policy object appears twice")
        clips = [p for p in policies if p._ROLE == "clip"]
        if len(clips) > 1:
            raise ValueError(f"guard: at most one clip policy, got {len(clips)}")
        if clips and max_grad_norm is not None:
            raise ValueError(f"guard: {type(clips[0]).__name__} clips by itself; max_grad_norm must be None "
                             "(ZScoreClip has its own max_grad_norm)")
        if policies and differentiable:
            raise ValueError("guard is not supported with differentiable=True")
        return policies

    @staticmethod
    def _check_precision(master_weights: bool, stochastic_rounding: bool, state_dtype: torch.dtype | None,
                         differentiable: bool) -> None:
        # Before Optimizer.__init__, as the other refusals.
        if not isinstance(master_weights, bool):
            raise TypeError(f"master_weights must be a bool, got {type(master_weights).__name__}")
        if not isinstance(stochastic_rounding, bool):
            raise TypeError(f"stochastic_rounding must be a bool, got {type(stochastic_rounding).__name__}")
        if state_dtype is not None and state_dtype not in _STATE_DTYPES:
            raise ValueError(f"state_dtype must be None, torch.float32 or torch.bfloat16, got {state_dtype}")
        if master_weights and stochastic_rounding:
            raise ValueError("stochastic_rounding rounds bf16 params that have no master; with master_weights=True "
                             "the masters carry the precision")
        if differentiable and (master_weights or stochastic_rounding or state_dtype is not None):
            raise ValueError("master_weights, stochastic_rounding and state_dtype are not supported with "
                             "differentiable=True")

    @staticmethod
    def _check_process_group(process_group: Any, differentiable: bool) -> None:
        if process_group is None:
            return
        if not (torch.distributed.is_available() and isinstance(process_group, torch.distributed.ProcessGroup)):
            raise TypeError(f"process_group must be a torch.distributed.ProcessGroup or None, "
                            f"got {type(process_group).__name__}")
        if differentiable:
            raise ValueError("process_group is not supported with differentiable=True")

    @staticmethod
    def _check_impl_flags(foreach: bool | None, differentiable: bool, fused: bool | None) -> None:
        # torch's own refusals (after Optimizer.__init__, as torch raises them).
        if fused:
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _init_fused(self, max_grad_norm: float | None, norm_type: float, skip_nonfinite: bool,
                    write_back_grads: bool, process_group: Any = None, guard: tuple = (),
                    master_weights: bool = False, stochastic_rounding: bool = False,
                    state_dtype: torch.dtype | None = None) -> None:
        # Not in state_dict and not pickled (a ProcessGroup is a live handle): see __getstate__.
        self.process_group = process_group
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.norm_type = float(norm_type)
        self.skip_nonfinite = skip_nonfinite
        self.write_back_grads = write_back_grads
        self.last_grad_norm: Tensor | None = None
        self._skipped_steps: Tensor | None = None
        self.guard = guard
        self._decisions: Tensor | None = None  # fp32 [norm, clip coefficient, skipped], by the op
        # GradScaler.step() sets self.grad_scale / self.found_inf and lets the step unscale.
        self._step_supports_amp_scaling = True
        self.master_weights = master_weights
        self.stochastic_rounding = stochastic_rounding
        self.state_dtype = state_dtype
        # NOTE [Stochastic rounding]: drawn from torch's default generator (torch.manual_seed
        # makes a run reproducible; C++ makes the same draw), and only when it is used, so that
        # other runs' random streams stay as torch's.
        self.rounding_seed: int | None = (
            int(torch.randint(0, 2**62, (), dtype=torch.int64)) if stochastic_rounding else None)

    # ---- pickling, deepcopy, state_dict ----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """torch's pickled state plus the clipping settings. ``process_group`` is left out: a
        ProcessGroup cannot be pickled (and means nothing in another process); an unpickled
        optimizer has ``process_group=None`` until it is set again. ``copy.deepcopy`` keeps the
        same group (a handle, shared, not copied)."""
        state = super().__getstate__()
        for name in _FUSED_ATTRS:
            if name in self.__dict__:
                state[name] = self.__dict__[name]
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> "_FusedOptimizer":
        # What copy.deepcopy does through __reduce_ex__, with the group carried by reference.
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = copy.deepcopy(self.__getstate__(), memo)
        group = self.__dict__.get("process_group")
        new.__setstate__(state)
        new.process_group = group
        return new

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also the last act of load_state_dict (with only state and param_groups): groups from an
        # older torch lack the newer flags; fill them as torch's own __setstate__ does.
        super().__setstate__(state)
        for name, value in (("process_group", None), ("max_grad_norm", None), ("norm_type", 2.0),
                            ("skip_nonfinite", True),
                            ("write_back_grads", False), ("last_grad_norm", None), ("_skipped_steps", None),
                            ("_step_supports_amp_scaling", True), ("guard", ()), ("_decisions", None),
                            ("master_weights", False), ("stochastic_rounding", False), ("state_dtype", None),
                            ("rounding_seed", None)):
            self.__dict__.setdefault(name, value)
        for group in self.param_groups:
            for key, value in self._GROUP_DEFAULTS.items():
                group.setdefault(key, value)
            self._fix_group(group)

    def _fix_group(self, group: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict plus ``"skipped_steps"`` (the skip counter, a tensor), a top-level
        key that torch's optimizers ignore when they load it."""
        state_dict = super().state_dict()
        state_dict[_STATE_DICT_SKIPPED] = self.skipped_steps
        if self.guard:
            state_dict[_STATE_DICT_GUARD] = [policy.state_dict() for policy in self.guard]
        if self.rounding_seed is not None:
            state_dict[_STATE_DICT_SEED] = self.rounding_seed
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict; also restores ``skipped_steps`` when the dict has it (a dict
        from torch's optimizers, without it, leaves the counter as it is)."""
        skipped = state_dict.get(_STATE_DICT_SKIPPED)
        guard = state_dict.get(_STATE_DICT_GUARD)
        if guard is not None and len(guard) != len(self.guard):
            raise ValueError(f"loaded state dict holds a guard of {len(guard)} policies, this optimizer's has "
                             f"{len(self.guard)}")
        super().load_state_dict(state_dict)
        self._restore_precision(state_dict)
        if self.stochastic_rounding and state_dict.get(_STATE_DICT_SEED) is not None:
            self.rounding_seed = int(state_dict[_STATE_DICT_SEED])
        for policy, saved in zip(self.guard, guard or ()):
            policy.load_state_dict(saved)
        if skipped is not None:
            device = self._skipped_steps.device if self._skipped_steps is not None else None
            self._skipped_steps = torch.as_tensor(skipped).to(device=device, dtype=torch.int64).clone()

    def _restore_precision(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict casts every state tensor to its param's dtype; the state in
        ``state_dtype`` and the fp32 masters are taken again from the loaded dict, at full
        precision. A master that this optimizer does not keep is dropped (a param without one
        gets it from the param at its next step)."""
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            state = self.state.get(p)
            if saved is None or state is None:
                continue
            want = self._state_dtype_for(p)
            for key in _MOMENT_KEYS:
                value = saved.get(key)
                if isinstance(value, Tensor) and isinstance(state.get(key), Tensor) and state[key].dtype != want:
                    state[key] = value.detach().to(device=state[key].device, dtype=want, copy=True)
            master = saved.get("master_param")
            if isinstance(master, Tensor) and self._keeps_master(p):
                state["master_param"] = master.detach().to(device=p.device, dtype=torch.float32, copy=True)
            else:
                state.pop("master_param", None)

    # ---- precision ------------------------------------------------------------------------

    def _keeps_master(self, p: Tensor) -> bool:
        return self.master_weights and p.dtype in _HALF_DTYPES

    def _state_dtype_for(self, p: Tensor) -> torch.dtype:
        """The dtype of p's moments: state_dtype for fp32/fp16/bf16 params; fp32 with master
        weights and no state_dtype; else (fp64, complex, no option) the param's own."""
        if p.is_complex() or p.dtype not in (torch.float32, *_HALF_DTYPES):
            return p.dtype
        if self.state_dtype is not None:
            return self.state_dtype
        return torch.float32 if self._keeps_master(p) else p.dtype

    def _new_moment(self, p: Tensor) -> Tensor:
        return torch.zeros_like(p, dtype=self._state_dtype_for(p), memory_format=torch.preserve_format)

    def _master(self, p: Tensor, state: dict, pk: Tensor) -> Tensor | None:
        """The op's master_params entry of p (whose kernel param is pk): its fp32 master, made
        from the param the first time (also after loading a dict without one); a 0-element
        placeholder when p has none; None when the optimizer keeps no masters."""
        if not self.master_weights:
            return None
        if not self._keeps_master(p):
            return torch.empty(0, device=pk.device)
        master = state.get("master_param")
        if master is None:
            master = state["master_param"] = torch.empty_like(
                p, dtype=torch.float32, memory_format=torch.preserve_format).copy_(p.detach())
        return master

    def _precision_args(self, masters: list[Tensor]) -> tuple[list[Tensor], int | None]:
        return masters, (self.rounding_seed if self.stochastic_rounding else None)

    # NOTE [torch.compile]: the step is one fused op already; inside a compiled function it runs
    # eagerly (a graph break), so dynamo need not trace the optimizer's Python bookkeeping.
    @torch.compiler.disable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One fused step (clip, guard, update) over all param groups."""
        loss = self._evaluate(closure)
        if self._differentiable():
            self._check_differentiable_local()
            with torch.set_grad_enabled(True):
                self._differentiable_step()
        else:
            with torch.no_grad():
                self._fused_step()
        return loss

    def _fused_step(self) -> None:
        raise NotImplementedError  # the subclass's one fused op

    def _differentiable_step(self) -> None:
        raise NotImplementedError  # the subclass's torch functional update

    # ---- step helpers ---------------------------------------------------------------------

    def _check_differentiable_local(self) -> None:
        # torch's differentiable update runs on whole tensors with a host-side guard; sharded
        # params would need the global norm inside autograd.
        if self.process_group is not None:
            raise ValueError("process_group is not supported with differentiable=True")
        if _any_dtensor([p for group in self.param_groups for p in group["params"]]):
            raise RuntimeError(f"{type(self).__name__}: differentiable=True does not support DTensor params "
                               "(FSDP2, tensor parallel); use differentiable=False")

    def _grads_norm(self, grads: list[Tensor]) -> Tensor | None:
        """The global norm of `grads` (as the user holds them: DTensors or plain tensors) over
        all ranks, when the step clips or guards and the gradients are sharded (a DTensor or a
        process_group); None otherwise: the op's own norm pass (the local path) is the norm."""
        if self.max_grad_norm is None and not self.skip_nonfinite and not self.guard:
            return None
        if self.process_group is None and not _any_dtensor(grads):
            return None
        return global_norm(grads, self.norm_type, self.process_group)

    def _idle_step(self) -> None:
        """A rank whose params have no gradients this step, with a process_group: it joins the
        norm's all-reduce (the other ranks wait on it), and takes the same decisions from it as
        they do (skip count, guard states), through the fused op with no tensors to step."""
        if self.process_group is None or (self.max_grad_norm is None and not self.skip_nonfinite
                                          and not self.guard):
            return
        device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
        norm = self._grads_norm([torch.zeros(0, device=device)])
        grad_scale, found_inf, skipped = self._controls(device)
        guard = self._guard_args([], [], device)
        self.last_grad_norm = torch.ops.steadystep.fused_sgd_(
            [], [], [], [], [], [], [], [], [], [], [], self.max_grad_norm, self.norm_type, self.skip_nonfinite,
            grad_scale, found_inf, skipped, norm, *guard, *self._precision_args([]))

    @property
    def skipped_steps(self) -> Tensor:
        """Steps skipped (non-finite gradients, GradScaler's found_inf, a skip policy of the guard):
        an int64 device tensor, no sync."""
        if self._skipped_steps is None:
            return torch.zeros((), dtype=torch.int64)
        return self._skipped_steps

    @property
    def last_clip_coef(self) -> Tensor | None:
        """The last step's factor on the (unscaled) gradients: max_grad_norm's or the guard's clip
        coefficient, 1 when not clipped (0-dim fp32 device tensor; None before the first step)."""
        return None if self._decisions is None else self._decisions[1]

    @property
    def last_skipped(self) -> Tensor | None:
        """Whether the last step was skipped (0-dim bool device tensor; None before the first
        step)."""
        return None if self._decisions is None else self._decisions[2] != 0

    def _guard_args(self, params: list[Tensor], grads: list[Tensor], device: torch.device) -> tuple[list, list, list, Tensor]:
        """The op's guard_states, guards, guard_args and decisions; AdaptiveGradClip policies are
        applied here, to the gradients the op reads (it needs the params)."""
        states, kinds, args = [], [], []
        for policy in self.guard:
            if policy._ROLE == "agc":
                if getattr(self, "grad_scale", None) is not None:
                    raise ValueError("guard: AdaptiveGradClip cannot clip gradients still scaled by a GradScaler; "
                                     "call scaler.unscale_(optimizer) before scaler.step(optimizer)")
                torch.ops.steadystep.adaptive_clip_grad_([p.detach() for p in params], grads, *policy._args())
                continue
            states.append(policy._state_on(device))
            kinds.append(policy._KIND)
            args.extend(float(a) for a in policy._args())
        if self._decisions is None or self._decisions.device != device:
            self._decisions = torch.zeros(3, dtype=torch.float32, device=device)
        return states, kinds, args, self._decisions

    def _step_state(self, p: Tensor, state: dict) -> Tensor:
        # torch keeps `step` as a CPU tensor in its non-fused optimizers; ours lives beside the
        # param so that the kernels read and advance it on the device.
        step = state.get("step")
        if step is None:
            step = state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        elif not isinstance(step, Tensor) or step.device != p.device or step.dtype != torch.float32:
            step = state["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device)
        return step

    def _controls(self, device: torch.device) -> tuple[Tensor | None, Tensor | None, Tensor]:
        if self._skipped_steps is None:
            self._skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        elif self._skipped_steps.device != device:
            self._skipped_steps = self._skipped_steps.to(device)
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None), self._skipped_steps

    def _differentiable(self) -> bool:
        return bool(self.defaults.get("differentiable")) or any(g.get("differentiable") for g in self.param_groups)

    @staticmethod
    def _evaluate(closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _check_fused_devices(self) -> None:
        for group in self.param_groups:
            if group.get("fused"):
                for p in group["params"]:
                    if p.grad is not None:
                        _device_dtype_check_for_fused(p)

    def _finish(self, norm: Tensor, grads: list[Tensor], copies: list) -> None:
        for dst, src in copies:
            dst.copy_(src)
        self.last_grad_norm = norm if norm.numel() else None
        if self.write_back_grads:
            self._write_back(grads, self.last_grad_norm)

    def _check_write_back(self, grads: list[Tensor]) -> None:
        # Before the op: torch's in-place unscale/clip would refuse these grads before its step,
        # so nothing may be updated when the write-back cannot happen.
        if self.write_back_grads:
            for g in grads:
                if torch._debug_has_internal_overlap(g) == 1:
                    raise RuntimeError(
                        "unsupported operation: more than one element of the written-to tensor refers to a single "
                        "memory location. Please clone() the tensor before performing the operation."
                    )

    @torch.no_grad()
    def _write_back(self, grads: list[Tensor], norm: Tensor | None) -> None:
        """Leave `.grad` as GradScaler.unscale_ + clip_grad_norm_ leave it: unscaled, then
        multiplied by the clip coefficient (two roundings, as torch's two in-place passes)."""
        grad_scale = getattr(self, "grad_scale", None)
        factors = []
        if grad_scale is not None:
            factors.append(grad_scale.double().reciprocal().float())
        if self.guard and self._decisions is not None:
            factors.append(self._decisions[1])
        elif self.max_grad_norm is not None and norm is not None:
            factors.append(torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0))
        for factor in factors:
            for g in grads:
                g.mul_(factor.to(g.device))

    def _clipped_grads_per_group(self, params_per_group: list[list[Tensor]]) -> list[list[Tensor]]:
        """The differentiable path's clipped gradients of `params_per_group`, split as it is;
        empty when no param has a gradient or the guard skips the step."""
        grads = [p.grad for params in params_per_group for p in params]
        if not grads:
            return []
        clipped, skip = self._clipped_grads(grads)
        if skip:
            return []
        out, index = [], 0
        for params in params_per_group:
            out.append(clipped[index:index + len(params)])
            index += len(params)
        return out

    def _clipped_grads(self, grads: list[Tensor]) -> tuple[list[Tensor], bool]:
        """The differentiable path's clip and guard: grads unscaled and multiplied by a clip
        coefficient computed without autograd (as clip_grad_norm_ does); True when the step is
        to be skipped. Reads the verdict on the host (this path is not sync-free)."""
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if grad_scale is not None:
            inv = grad_scale.double().reciprocal().float()
            grads = [g * inv.to(g.device) for g in grads]
        skip = found_inf is not None and bool(found_inf.ne(0).any())
        if self.max_grad_norm is not None or self.skip_nonfinite:
            with torch.no_grad():
                norms = [torch.linalg.vector_norm(g.detach(), self.norm_type) for g in grads]
                device = grads[0].device
                norm = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), self.norm_type)
            self.last_grad_norm = norm.float()
            if self.skip_nonfinite and not bool(torch.isfinite(norm)):
                skip = True
            if self.max_grad_norm is not None:
                coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
                grads = [g * coef.to(g.device) for g in grads]
        if skip:
            skipped = self._controls(grads[0].device)[2]
            skipped.add_(1)
        return grads, skip


class FusedAdam(_FusedOptimizer):
    r"""Adam (AdamW with ``decoupled_weight_decay=True``) with global-norm clipping, fused.

    The update equals ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, norm_type)``
    followed by :class:`torch.optim.Adam` with the same arguments, to fp32 rounding; fp16/bf16
    params keep their state in their own dtype and do the math in fp32, as torch's
    ``fused=True`` does. With ``skip_nonfinite`` (the default), a step whose gradient norm is inf
    or nan leaves every param and state tensor bit-identical, does not advance ``step``, and
    adds one to :attr:`skipped_steps` — decided on the device.

    Gradients: by default the step reads ``.grad`` and never writes it, so after
    ``scaler.step(opt)`` (GradScaler) the gradients are still scaled, and with ``max_grad_norm``
    they are unclipped, where torch's recipe (``scaler.unscale_(opt)``,
    ``clip_grad_norm_``, ``scaler.step(opt)``) leaves them unscaled and clipped. Code that reads
    ``.grad`` after the step either passes ``write_back_grads=True`` or calls
    ``scaler.unscale_(opt)`` before ``scaler.step(opt)`` (then torch unscales them in place and
    the step only skips on its ``found_inf``).

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: as
            :class:`torch.optim.Adam`.
        foreach, capturable, fused: accepted for compatibility (the step is always fused);
            the combinations torch refuses are refused.
        differentiable: as torch: the update (clipping included) is recorded by autograd; this
            runs torch's own differentiable Adam on the clipped gradients, not the fused kernels,
            and reads the guard's verdict on the host.
        max_grad_norm (float, optional): clip the norm of all gradients (all groups together)
            to this value; None (default) does not clip.
        norm_type (float): order of the norm (> 0 or inf). Default: 2.
        skip_nonfinite (bool): skip steps with a non-finite gradient norm. Default: True.
            The guard reads the norm, so it runs the norm pass (4 bytes per fp32 parameter)
            even without ``max_grad_norm``; turn both off for a bare fused Adam step.
        write_back_grads (bool): after each step, leave ``.grad`` unscaled (GradScaler) and
            clipped, as torch's recipe leaves it; costs one or two more passes over the
            gradients. Default: False (``.grad`` is left as the backward pass wrote it).
        process_group (torch.distributed.ProcessGroup, optional): for plain params sharded by
            hand (each rank's optimizer owns part of the model, ZeRO-1/2 style): the clip norm
            and the non-finite guard are reduced over this group, so every rank clips by the
            same coefficient and skips the same steps. Every rank of the group must call
            ``step()`` (a rank with no gradients joins the reduction). Not needed for DTensor
            params (FSDP2, tensor parallel), whose meshes name their groups; given with them,
            it adds a last reduction (e.g. across pipeline stages). A GradScaler over plain
            hand-sharded gradients finds infs per rank: use one that reduces ``found_inf``
            over the group (``ShardedGradScaler(process_group=...)``) so that its scale stays
            the same on every rank; the guard (``skip_nonfinite=True``) is global either way.
            Not in ``state_dict`` and not pickled (an unpickled optimizer has None); ``deepcopy``
            shares it. Not supported with ``differentiable=True`` (nor are DTensor params).
        guard (optional): a gradient-guard policy of :mod:`steadystep.guard` or a list of them:
            at most one clip policy (:class:`~steadystep.ZScoreClip`,
            :class:`~steadystep.PercentileClip`; then ``max_grad_norm`` must be None), any skip
            policies (:class:`~steadystep.SpikeSkip`), :class:`~steadystep.AdaptiveGradClip`.
            Decided inside the step on the device, after the non-finite guard (a skipped step
            changes no policy state); a step a skip policy vetoes is skipped as a non-finite one
            is. The policies' states are in ``state_dict()["guard"]``;
            :attr:`last_clip_coef` and :attr:`last_skipped` log the decisions without a sync.
        master_weights (bool): keep an fp32 copy of every fp16/bf16 param in
            ``state[p]["master_param"]``; the step updates it in fp32 and writes the param as it
            rounded to nearest, in the same pass, so updates below half a bf16 ulp are not lost.
            The masters follow torch's Adam on fp32 params bit for bit (given the same
            gradients); the moments are fp32 unless ``state_dtype`` says otherwise. A loaded
            state_dict without masters gets them from the params. Default: False.
        stochastic_rounding (bool): round bf16 params (without masters) stochastically: in
            expectation the rounded param is the fp32 result. The random bits are a hash of
            :attr:`rounding_seed` (drawn from torch's default generator at construction, in
            ``state_dict``), the param and its step count, so runs are reproducible and resume
            exactly. Not with ``master_weights``. Default: False.
        state_dtype (torch.dtype, optional): keep ``exp_avg``/``exp_avg_sq`` (and
            ``max_exp_avg_sq``) of fp32/fp16/bf16 params in torch.float32 or torch.bfloat16; the
            math is fp32 either way. None: the param's dtype (fp32 with master weights).
    """

    _GROUP_DEFAULTS = dict(amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
                           decoupled_weight_decay=False, fused=None)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
        write_back_grads: bool = False,
        process_group: Any = None,
        guard: Any = None,
        master_weights: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        # torch.optim.Adam's checks, in its order and with its exception types.
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        for value in (lr, eps, betas[0], betas[1], weight_decay):
            0.0 <= value  # noqa: B015 - torch's comparison: its TypeError for a non-number
        _C.check_adam(float(lr), float(betas[0]), float(betas[1]), float(eps), float(weight_decay))
        if not (all(isinstance(b, float) for b in betas[:2]) or all(isinstance(b, Tensor) for b in betas[:2])):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            if isinstance(betas[i], Tensor):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
                if betas[i].numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        self._check_fused_args(max_grad_norm, norm_type, skip_nonfinite, write_back_grads)
        guard = self._check_guard(guard, max_grad_norm, differentiable)
        self._check_process_group(process_group, differentiable)
        self._check_precision(master_weights, stochastic_rounding, state_dtype, differentiable)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
            foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)
        self._check_impl_flags(foreach, differentiable, fused)
        self._init_fused(max_grad_norm, norm_type, skip_nonfinite, write_back_grads, process_group, guard,
                         master_weights, stochastic_rounding, state_dtype)

    def _gather(self, group: dict[str, Any]) -> list[tuple[Tensor, dict]]:
        name = type(self).__name__
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.layout != torch.strided:
                raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = self._new_moment(p)
                state["exp_avg_sq"] = self._new_moment(p)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = self._new_moment(p)
            _state_tensor(name, state, "exp_avg")
            _state_tensor(name, state, "exp_avg_sq")
            if group["amsgrad"]:
                _state_tensor(name, state, "max_exp_avg_sq")
            out.append((p, state))
        return out

    def _fused_step(self) -> None:
        self._check_fused_devices()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]  # noqa: F841 - torch's unpacking: its ValueError for != 2 betas
        gathered = [self._gather(group) for group in self.param_groups]
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes = [], [], [], [], [], [], []
        user_grads, copies, norm_grads, masters = [], [], [], []
        any_amsgrad = any(g["amsgrad"] for g in self.param_groups)
        for group, members in zip(self.param_groups, gathered):
            for p, state in members:
                # DTensors step on this rank's shards (state is placed as its param).
                pk = _kernel_param(_local(p), copies)
                params.append(pk)
                norm_grads.append(p.grad)
                grad = _as_real(_local(p.grad))
                user_grads.append(grad)
                grads.append(_kernel_layout(grad, pk, None))
                exp_avgs.append(_kernel_layout(_as_real(_local(state["exp_avg"])), pk, copies))
                exp_avg_sqs.append(_kernel_layout(_as_real(_local(state["exp_avg_sq"])), pk, copies))
                if any_amsgrad:
                    # Groups without amsgrad hold a placeholder; their kernels never read it.
                    key = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
                    max_exp_avg_sqs.append(exp_avg_sqs[-1] if key == "exp_avg_sq"
                                           else _kernel_layout(_as_real(_local(state[key])), pk, copies))
                steps.append(self._step_state(p, state))
                master = self._master(p, state, pk)
                if master is not None:
                    masters.append(_kernel_layout(_local(master), pk, copies))
            sizes.append(len(members))
        if not params:
            self._idle_step()
            return
        self._check_write_back(user_grads)
        grads_norm = self._grads_norm(norm_grads)
        grad_scale, found_inf, skipped = self._controls(params[0].device)
        guard = self._guard_args(params, grads, params[0].device)
        groups = self.param_groups
        norm = torch.ops.steadystep.fused_adam_(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes,
            [float(g["lr"]) for g in groups], [float(g["betas"][0]) for g in groups],
            [float(g["betas"][1]) for g in groups], [float(g["eps"]) for g in groups],
            [float(g["weight_decay"]) for g in groups], [bool(g["amsgrad"]) for g in groups],
            [bool(g["maximize"]) for g in groups], [bool(g["decoupled_weight_decay"]) for g in groups],
            self.max_grad_norm, self.norm_type, self.skip_nonfinite, grad_scale, found_inf, skipped, grads_norm,
            *guard, *self._precision_args(masters),
        )
        self._finish(norm, user_grads, copies)

    def _differentiable_step(self) -> None:
        gathered = [self._gather(group) for group in self.param_groups]
        clipped = self._clipped_grads_per_group([[p for p, _ in members] for members in gathered])
        for group, members, grads in zip(self.param_groups, gathered, clipped):
            if not members:
                continue
            beta1, beta2 = group["betas"]
            params = [p for p, _ in members]
            states = [s for _, s in members]
            steps = [self._step_state(p, s) for p, s in members]
            _torch_adam(
                params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [], steps,
                foreach=False, capturable=False, differentiable=True, fused=None,
                has_complex=any(p.is_complex() for p in params),
                decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"], beta1=beta1,
                beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                maximize=group["maximize"],
            )


class FusedAdamW(FusedAdam):
    r""":class:`FusedAdam` with decoupled weight decay and AdamW's defaults, the fused
    counterpart of :class:`torch.optim.AdamW` (``weight_decay=1e-2``). As torch's AdamW, every
    group (a loaded Adam checkpoint's too) has ``decoupled_weight_decay=True``."""

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
        write_back_grads: bool = False,
        process_group: Any = None,
        guard: Any = None,
        master_weights: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
            max_grad_norm=max_grad_norm, norm_type=norm_type, skip_nonfinite=skip_nonfinite,
            write_back_grads=write_back_grads, process_group=process_group, guard=guard,
            master_weights=master_weights, stochastic_rounding=stochastic_rounding, state_dtype=state_dtype,
        )

    def _fix_group(self, group: dict[str, Any]) -> None:
        group["decoupled_weight_decay"] = True


class FusedSGD(_FusedOptimizer):
    r"""SGD (momentum, dampening, nesterov, weight decay, maximize) with global-norm clipping,
    fused; equals ``clip_grad_norm_`` followed by :class:`torch.optim.SGD` to fp32 rounding.

    Besides torch's ``momentum_buffer`` each param's state holds a device ``step`` count. As in
    torch, a momentum buffer is initialised from the gradient whenever it is absent (first step,
    momentum switched on mid-run, a momentum-free checkpoint loaded). Sparse gradients are
    densified (a dense copy of each) and take the fused step; the momentum buffer is dense.

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as :class:`torch.optim.SGD`.
        foreach, fused: accepted for compatibility (the combinations torch refuses are refused).
        differentiable: as :class:`FusedAdam` (torch's own SGD update on clipped gradients).
        max_grad_norm, norm_type, skip_nonfinite, write_back_grads, process_group, guard: as
            :class:`FusedAdam`.
        master_weights, stochastic_rounding, state_dtype: as :class:`FusedAdam`
            (``state_dtype`` sets the ``momentum_buffer``'s dtype).
    """

    _GROUP_DEFAULTS = dict(nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        skip_nonfinite: bool = True,
        write_back_grads: bool = False,
        process_group: Any = None,
        guard: Any = None,
        master_weights: bool = False,
        stochastic_rounding: bool = False,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        # torch.optim.SGD's checks, in its order and with its exception types.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        for value in (lr, momentum, weight_decay):
            value < 0.0  # noqa: B015 - torch's comparison: its TypeError for a non-number
        _probe_number("dampening", dampening)
        _C.check_sgd(float(lr), float(momentum), float(dampening), float(weight_decay), bool(nesterov))
        self._check_fused_args(max_grad_norm, norm_type, skip_nonfinite, write_back_grads)
        guard = self._check_guard(guard, max_grad_norm, differentiable)
        self._check_process_group(process_group, differentiable)
        self._check_precision(master_weights, stochastic_rounding, state_dtype, differentiable)
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused,
        )
        super().__init__(params, defaults)
        self._check_impl_flags(foreach, differentiable, fused)
        self._init_fused(max_grad_norm, norm_type, skip_nonfinite, write_back_grads, process_group, guard,
                         master_weights, stochastic_rounding, state_dtype)

    def _sgd_step_state(self, p: Tensor, state: dict, momentum: float) -> Tensor:
        if "step" not in state:
            # A buffer from torch's SGD means its first step has been taken.
            buffer = state.get("momentum_buffer")
            state["step"] = torch.full((), 0.0 if buffer is None else 1.0, dtype=torch.float32, device=p.device)
        if momentum != 0 and state.get("momentum_buffer") is None:
            # The kernels initialise the buffer from the gradient on a param's first step, so
            # an absent buffer (momentum switched on, a momentum-free checkpoint) restarts the
            # count: torch sets buf = grad whenever the buffer is missing.
            state["momentum_buffer"] = self._new_moment(p)
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        return self._step_state(p, state)

    def _fused_step(self) -> None:
        self._check_fused_devices()
        params, grads, buffers, steps, sizes, user_grads, copies, norm_grads = [], [], [], [], [], [], [], []
        masters = []
        name = type(self).__name__
        for group in self.param_groups:
            count = 0
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if momentum != 0 and state.get("momentum_buffer") is not None:
                    _state_tensor(name, state, "momentum_buffer")
                step = self._sgd_step_state(p, state, momentum)
                # DTensors step on this rank's shards (the buffer is placed as its param).
                pk = _kernel_param(_local(p), copies)
                grad = _local(p.grad)
                if grad.layout != torch.strided:
                    grad = grad.to_dense()  # torch's SGD takes sparse gradients; the kernels dense ones
                    norm_grads.append(grad)
                else:
                    norm_grads.append(p.grad)
                    user_grads.append(_as_real(grad))
                gk = _kernel_layout(_as_real(grad), pk, None)
                params.append(pk)
                grads.append(gk)
                if momentum != 0:
                    buffers.append(_kernel_layout(_as_real(_local(state["momentum_buffer"])), pk, copies))
                else:
                    buffers.append(gk)  # placeholder: the kernels never read it without momentum
                steps.append(step)
                master = self._master(p, state, pk)
                if master is not None:
                    masters.append(_kernel_layout(_local(master), pk, copies))
                count += 1
            sizes.append(count)
        if not params:
            self._idle_step()
            return
        self._check_write_back(user_grads)
        grads_norm = self._grads_norm(norm_grads)
        grad_scale, found_inf, skipped = self._controls(params[0].device)
        guard = self._guard_args(params, grads, params[0].device)
        groups = self.param_groups
        norm = torch.ops.steadystep.fused_sgd_(
            params, grads, buffers, steps, sizes,
            [float(g["lr"]) for g in groups], [float(g["momentum"]) for g in groups],
            [float(g["dampening"]) for g in groups], [float(g["weight_decay"]) for g in groups],
            [bool(g["nesterov"]) for g in groups], [bool(g["maximize"]) for g in groups],
            self.max_grad_norm, self.norm_type, self.skip_nonfinite, grad_scale, found_inf, skipped, grads_norm,
            *guard, *self._precision_args(masters),
        )
        self._finish(norm, user_grads, copies)

    def _differentiable_step(self) -> None:
        members = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        clipped = self._clipped_grads_per_group(members)
        for group, params, grads in zip(self.param_groups, members, clipped):
            if not params:
                continue
            momentum = group["momentum"]
            buffers = [self.state[p].get("momentum_buffer") if momentum != 0 else None for p in params]
            _torch_sgd(
                params, grads, buffers, has_sparse_grad=False, foreach=False, fused=None,
                weight_decay=group["weight_decay"], momentum=momentum, lr=group["lr"],
                dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
            )
            for p, buf in zip(params, buffers):
                state = self.state[p]
                if momentum != 0:
                    state["momentum_buffer"] = buf
                with torch.no_grad():
                    self._step_state(p, state).add_(1)
