// NOTE [Op registry]: every steadystep op is declared here, once. Kernels register themselves
// per dispatch key in their own files (csrc/cpu, csrc/meta, cuda/); composite ops, which are
// written with other ops and so serve every backend, register beside their definition.

#include <torch/library.h>

TORCH_LIBRARY(steadystep, m) {
  // The norm of all `tensors` taken together as one vector, as torch.nn.utils.get_total_norm:
  // a 0-dim tensor on tensors[0]'s device, of their promoted dtype.
  m.def(
      "get_total_norm(Tensor[] tensors, float norm_type=2.0, bool error_if_nonfinite=False) -> "
      "Tensor");
  // Backend kernel of get_total_norm: tensors of one device, p > 0 or inf; returns the norm as
  // a 0-dim fp32 tensor (fp64 if any input is fp64).
  m.def("_total_norm(Tensor[] tensors, float norm_type) -> Tensor");
  // The norm of gradients sharded over ranks (NOTE [Sharded norm] in sharded_norm.cpp): each
  // rank passes its local tensors; parts[i] is tensor i's part (-1: counted by another rank;
  // empty: all in part 0); part k's norm^p is all-reduced over its groups_per_part[k] groups
  // (names, in order), the parts are added, and the sum is all-reduced over process_group.
  // Returns the norm, identical on every rank, 0-dim fp32 (fp64 if an input is fp64) on
  // tensors[0]'s device; no host sync.
  m.def(
      "get_total_norm_sharded(Tensor[] tensors, int[] parts, str[] groups, int[] groups_per_part, "
      "str? process_group=None, float norm_type=2.0, bool error_if_nonfinite=False) -> Tensor");

  // Scale `grads` (in place) by min(1, max_norm / (total_norm + 1e-6)), as
  // torch.nn.utils.clip_grads_with_norm_; the coefficient never leaves the device.
  m.def("clip_grads_with_norm_(Tensor(a!)[] grads, float max_norm, Tensor total_norm) -> ()");
  // get_total_norm followed by clip_grads_with_norm_; returns the norm (0-dim tensor).
  m.def(
      "clip_grad_norm_(Tensor(a!)[] grads, float max_norm, float norm_type=2.0, "
      "bool error_if_nonfinite=False) -> Tensor");
  // Clamp `grads` (in place) into [-clip_value, clip_value], as torch.nn.utils.clip_grad_value_.
  m.def("clip_grad_value_(Tensor(a!)[] grads, float clip_value) -> ()");
  // AGC (NFNets), as timm.utils.adaptive_clip_grad: each unit of grads[i] (a row along dim 0,
  // the whole tensor for ndim <= 1) is scaled in place by max_norm / max(|g unit|, 1e-6) unless
  // its norm is below max_norm = clip_factor * max(|params[i] unit|, eps). One device, no sync.
  m.def(
      "adaptive_clip_grad_(Tensor[] params, Tensor(a!)[] grads, float clip_factor=0.01, "
      "float eps=0.001, float norm_type=2.0) -> ()");
  // Backend kernels: dense tensors of one device. x *= coef unless coef >= 1 (then no pass);
  // coef is a one-element tensor on that device.
  m.def("_scale_(Tensor(a!)[] tensors, Tensor coef) -> ()");
  // x = clamp(x, -clip_value, clip_value), nan kept.
  m.def("_clamp_(Tensor(a!)[] tensors, float clip_value) -> ()");
  // ZClip's adaptive clipping (ZScoreClip, NOTE [ZScoreClip state] in zscore_clip.cpp): the L2
  // norm of `grads` (or `total_norm` when given), the update of `state` (warmup buffer, EMA
  // mean and variance, last norm / coefficient / spike flag), and the scaling of `grads` by
  // the clip coefficient, all on the device. Returns the norm as clip_grad_norm_ does.
  m.def(
      "zscore_clip_(Tensor(a!)[] grads, Tensor(b!) state, float alpha, float z_thresh, "
      "float? max_grad_norm, float eps, int warmup_steps, str mode, str clip_option, "
      "float clip_factor, bool skip_update_on_spike, Tensor? total_norm=None) -> Tensor");
  // AutoClip's global quantile clipping (PercentileClip, autoclip 0.2.1 QuantileClip with
  // global_threshold=True): clip `grads` (in place) to the `quantile` of the last
  // `history_length` norms kept in `state` (a ring buffer on the device), then record this
  // step's norm. Returns the norm as clip_grad_norm_ does.
  m.def(
      "percentile_clip_(Tensor(a!)[] grads, Tensor(b!) state, float quantile, int history_length, "
      "Tensor? total_norm=None) -> Tensor");

  // One fused optimizer step over all param groups (lists flattened, `group_sizes` tensors
  // per group, one hyper-parameter value per group): the global gradient norm (over all
  // groups, AMP-unscaled by grad_scale), clipping to max_grad_norm, the update of params and
  // state, and the non-finite guard (skip_nonfinite, found_inf): a skipped step changes no
  // param and no state and adds one to skipped_steps. Returns the norm (fp32, 0-dim; empty
  // when neither clipping nor the guard needed it). Never reads a device value on the host.
  // grads_norm, when given, is the norm of `grads` as passed (before unscaling) computed by the
  // caller, e.g. over all ranks with get_total_norm_sharded: the op then takes no norm of its
  // own, and the clip coefficient and the skip decision are the same wherever that norm is.
  // guard_states / guards / guard_args: a gradient guard's policies (NOTE [Guard policies] in
  // csrc/guard/policy.h), decided on the unscaled norm after the non-finite guard; their states
  // are updated in place. decisions, when given: fp32[3] set to [norm, clip coefficient,
  // skipped] of this step, for logging without a sync.
  // master_params: empty, or one per param: param i's fp32 master weights (fp16/bf16 params;
  // same shape and strides), updated in fp32 and rounded to nearest into the param in the same
  // pass; a 0-element tensor where param i has none. rounding_seed: bf16 params without a master
  // are rounded stochastically (NOTE [Stochastic rounding] in ops/stochastic_rounding.h), keyed
  // by this seed and their position in params; None rounds to nearest. State tensors may be in
  // their param's dtype, fp32 or bf16 (the math is fp32 either way).
  m.def(
      "fused_adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] steps, "
      "int[] group_sizes, float[] lr, float[] beta1, float[] beta2, float[] eps, "
      "float[] weight_decay, bool[] amsgrad, bool[] maximize, bool[] decoupled_weight_decay, "
      "float? max_grad_norm, float norm_type, bool skip_nonfinite, Tensor? grad_scale, "
      "Tensor? found_inf, Tensor(f!) skipped_steps, Tensor? grads_norm, "
      "Tensor(g!)[] guard_states, str[] guards, float[] guard_args, Tensor(h!)? decisions, "
      "Tensor(i!)[] master_params, int? rounding_seed) -> Tensor");
  m.def(
      "fused_sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "Tensor(c!)[] steps, int[] group_sizes, float[] lr, float[] momentum, float[] dampening, "
      "float[] weight_decay, bool[] nesterov, bool[] maximize, float? max_grad_norm, "
      "float norm_type, bool skip_nonfinite, Tensor? grad_scale, Tensor? found_inf, "
      "Tensor(d!) skipped_steps, Tensor? grads_norm, Tensor(e!)[] guard_states, str[] guards, "
      "float[] guard_args, Tensor(f!)? decisions, Tensor(g!)[] master_params, int? rounding_seed) "
      "-> Tensor");
  // Backend kernels of one param group on one device; steps already advanced for this step.
  // grad_multiplier scales the gradients (clip coefficient / grad scale); a nonzero skip
  // leaves everything untouched. master_params: empty, or one fp32 master per param (then
  // fp16/bf16 params). rounding_keys: empty (round to nearest), or one key per param
  // (rounding::rounding_key) for the stochastic rounding of bf16 params; not with masters.
  m.def(
      "_adam_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor[] steps, float lr, "
      "float beta1, float beta2, float eps, float weight_decay, bool amsgrad, bool maximize, "
      "bool decoupled_weight_decay, Tensor? grad_multiplier, Tensor? skip, "
      "Tensor(e!)[] master_params, int[] rounding_keys) -> ()");
  m.def(
      "_sgd_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "Tensor[] steps, float lr, float momentum, float dampening, float weight_decay, "
      "bool nesterov, bool maximize, Tensor? grad_multiplier, Tensor? skip, "
      "Tensor(c!)[] master_params, int[] rounding_keys) -> ()");
}
