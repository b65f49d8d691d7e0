// The fused optimizer steps as composite ops: the global norm and the guard once for all
// param groups, then one backend kernel per group and device. Both frontends (C++ FusedAdam /
// FusedSGD, Python steadystep.optim) call these through the dispatcher.

#include "checks.h"
#include "guard/policy.h"
#include "ops/grouping.h"
#include "ops/optim_checks.h"
#include "ops/optim_params.h"
#include "ops/step_checks.h"
#include "ops/stochastic_rounding.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace steadystep {

namespace {

// NOTE [Fused step]: what torch does in three or four passes (GradScaler.unscale_,
// clip_grad_norm_'s norm and scale, the optimizer step) happens here in two: a norm pass over
// the (still scaled) gradients, whose result is unscaled as a number, then one step pass that
// multiplies each gradient by clip coefficient / grad scale as it reads it. The decision to
// skip (non-finite norm, or GradScaler's found_inf) is a device tensor that the step kernels
// read: no value comes back to the host.
//
// The norm, the clip coefficient and the multiplier are in the gradients' accumulate dtype
// (fp64 when any gradient is fp64, else fp32), as torch's clip_grad_norm_ computes them: an
// fp64 model is clipped and unscaled with an fp64 coefficient.
struct StepGuard {
  at::Tensor norm;        // norm of the unscaled gradients, fp32/fp64 (undefined: not computed)
  at::Tensor multiplier;  // gradient multiplier, fp32/fp64 (undefined: 1)
  at::Tensor skip;        // fp32 1/0 (undefined: never skip)
};

// The guard's inputs: a gradient guard's policies (NOTE [Guard policies]) and where to write
// the step's decisions.
struct GuardArgs {
  at::TensorList states;
  const std::vector<std::string>& kinds;
  c10::ArrayRef<double> args;
  const std::optional<at::Tensor>& decisions;
};

StepGuard guard_step(at::TensorList grads, std::optional<double> max_grad_norm, double norm_type,
                     bool skip_nonfinite, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf,
                     const std::optional<at::Tensor>& grads_norm, const GuardArgs& policies) {
  StepGuard guard;
  const bool guarded = !policies.kinds.empty();
  if (guarded) {
    guard::check_guard("fused step", policies.states, policies.kinds, policies.args);
  }
  const at::ScalarType acc_dtype = accumulate_dtype(grads);
  at::Tensor inv_scale;
  if (grad_scale.has_value() && grad_scale->defined()) {
    TORCH_CHECK(grad_scale->numel() == 1, "grad_scale must hold one value, got ",
                grad_scale->sizes());
    // GradScaler.unscale_'s factor: the reciprocal in fp64, rounded to fp32.
    inv_scale = at::reciprocal(grad_scale->reshape({}).to(at::kDouble)).to(at::kFloat);
    inv_scale = inv_scale.to(acc_dtype);
  }
  if (max_grad_norm || skip_nonfinite || guarded) {
    if (grads_norm.has_value() && grads_norm->defined()) {
      TORCH_CHECK(grads_norm->numel() == 1, "grads_norm must hold one value, got ",
                  grads_norm->sizes());
      guard.norm = grads_norm->reshape({}).to(acc_dtype);
    } else {
      guard.norm = total_norm_accumulated(grads, norm_type).to(acc_dtype);
    }
    if (inv_scale.defined()) {
      guard.norm = guard.norm * inv_scale.to(guard.norm.device());
    }
  }
  if (skip_nonfinite) {
    guard.skip = nonfinite(guard.norm).to(at::kFloat);  // Meta too (total_norm.h)
  }
  if (found_inf.has_value() && found_inf->defined()) {
    TORCH_CHECK(found_inf->numel() == 1, "found_inf must hold one value, got ", found_inf->sizes());
    at::Tensor inf = at::ne(found_inf->reshape({}), 0).to(at::kFloat);
    guard.skip = guard.skip.defined() ? at::maximum(guard.skip, inf.to(guard.skip.device())) : inf;
  }
  // The policies decide after the non-finite guard: a step it skips changes no policy state.
  at::Tensor clip;  // the clip coefficient (undefined: 1)
  if (max_grad_norm) {
    clip = clip_coefficient(*max_grad_norm, guard.norm);
  }
  if (guarded) {
    const guard::Decision decision =
        guard::guard_step(guard.norm, guard.norm, policies.states, policies.kinds, policies.args,
                          guard.skip.defined() ? at::ne(guard.skip, 0) : at::Tensor());
    if (decision.coef.defined()) {
      TORCH_CHECK_VALUE(!max_grad_norm, "a guard with a clip policy (ZScoreClip, PercentileClip) ",
                        "clips by itself: max_grad_norm must be None");
      clip = decision.coef.to(acc_dtype).to(guard.norm.device());
    }
    if (decision.skip.defined()) {
      guard.skip = decision.skip.to(at::kFloat);
    }
  }
  guard.multiplier = clip;
  if (inv_scale.defined()) {
    const auto device = clip.defined()  ? clip.device()
                        : grads.empty() ? inv_scale.device()
                                        : grads[0].device();
    guard.multiplier = clip.defined() ? clip * inv_scale.to(device) : inv_scale.to(device);
  }
  if (policies.decisions.has_value() && policies.decisions->defined()) {
    const at::Tensor& out = *policies.decisions;
    TORCH_CHECK(out.sym_numel() == 3 && out.scalar_type() == at::kFloat,
                "decisions must be a float32 tensor of 3 elements, got ", out.scalar_type(), " ",
                out.sizes());
    const auto value = [&](const at::Tensor& t, double otherwise) {
      return t.defined() ? t.to(out.device(), at::kFloat).reshape({1})
                         : at::full({1}, otherwise, out.options());
    };
    out.copy_(at::cat({value(guard.norm, std::numeric_limits<double>::quiet_NaN()),
                       value(clip, 1.0), value(guard.skip, 0.0)})
                  .view(out.sizes()));
  }
  return guard;
}

std::optional<at::Tensor> on(const at::Tensor& t, const c10::Device& device) {
  if (!t.defined()) {
    return std::nullopt;
  }
  return t.to(device);
}

// The tensors of `list` at `indices` (empty list stays empty).
std::vector<at::Tensor> pick(at::TensorList list, const std::vector<size_t>& indices) {
  std::vector<at::Tensor> out;
  if (list.empty()) {
    return out;
  }
  out.reserve(indices.size());
  for (size_t i : indices) {
    out.push_back(list[i]);
  }
  return out;
}

void check_groups(at::TensorList params, c10::IntArrayRef group_sizes,
                  std::initializer_list<size_t> hyper_sizes) {
  int64_t total = 0;
  for (int64_t n : group_sizes) {
    TORCH_CHECK(n >= 0, "group_sizes must be >= 0");
    total += n;
  }
  TORCH_CHECK(total == static_cast<int64_t>(params.size()), "group_sizes add up to ", total,
              " but there are ", params.size(), " params");
  for (size_t n : hyper_sizes) {
    TORCH_CHECK(n == group_sizes.size(), "one hyper-parameter value per group: got ", n,
                " values for ", group_sizes.size(), " groups");
  }
}

// How one backend call of a group rounds its params (NOTE [Stochastic rounding]): its
// masters (empty: none) and rounding keys (empty: to nearest).
struct Precision {
  std::vector<at::Tensor> masters;
  std::vector<int64_t> rounding_keys;
};

// Whether param i has a master: master_params is empty (none has) or holds, per param, its
// master or a 0-element placeholder (see the schema).
bool has_master(at::TensorList masters, at::TensorList params, size_t i) {
  return !masters.empty() && masters[i].sym_numel() != 0 && params[i].sym_numel() != 0;
}

// The masters are checked before the norm and the guard (which update guard states): a refused
// step changes nothing.
void check_masters(const char* op, at::TensorList params, at::TensorList masters) {
  check_list_length(op, "master_params", masters, params.size(), false);
  for (size_t i = 0; i < masters.size(); ++i) {
    if (has_master(masters, params, i)) {
      check_master(op, i, masters[i], params[i]);
    }
  }
}

// Calls `step(group, indices, device, precision)` for the params of each group on each device
// (split again into params with and without a master: one backend call each), after advancing
// their step counts (by 1, or by 1 - skip on the device).
template <typename StepFn>
void for_each_group(at::TensorList params, at::TensorList steps, c10::IntArrayRef group_sizes,
                    at::TensorList masters, std::optional<int64_t> rounding_seed,
                    const StepGuard& guard, StepFn step) {
  size_t begin = 0;
  for (size_t g = 0; g < group_sizes.size(); ++g) {
    const size_t end = begin + static_cast<size_t>(group_sizes[g]);
    std::vector<std::pair<c10::Device, bool>> parts;
    std::vector<std::vector<size_t>> members;
    for (size_t i = begin; i < end; ++i) {
      const std::pair<c10::Device, bool> part{params[i].device(), has_master(masters, params, i)};
      size_t d = 0;
      while (d < parts.size() && parts[d] != part) {
        ++d;
      }
      if (d == parts.size()) {
        parts.push_back(part);
        members.emplace_back();
      }
      members[d].push_back(i);
    }
    for (size_t d = 0; d < parts.size(); ++d) {
      std::vector<at::Tensor> device_steps = pick(steps, members[d]);
      if (guard.skip.defined()) {
        at::_foreach_add_(device_steps, at::rsub(guard.skip, 1).to(parts[d].first));
      } else {
        at::_foreach_add_(device_steps, at::Scalar(1));
      }
      Precision precision;
      if (parts[d].second) {
        precision.masters = pick(masters, members[d]);
      } else if (rounding_seed) {
        for (size_t i : members[d]) {
          precision.rounding_keys.push_back(
              rounding::rounding_key(*rounding_seed, static_cast<int64_t>(i)));
        }
      }
      step(g, members[d], parts[d].first, precision);
    }
    begin = end;
  }
}

at::Tensor finish(const StepGuard& guard, at::Tensor& skipped_steps) {
  if (guard.skip.defined()) {
    skipped_steps.add_(guard.skip.to(skipped_steps.device(), skipped_steps.scalar_type()));
  }
  // The op returns the norm in fp32 whatever the gradients' dtype (see its schema).
  return guard.norm.defined() ? guard.norm.to(at::kFloat)
                              : at::empty({0}, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor fused_adam_composite(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
    at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList steps,
    c10::IntArrayRef group_sizes, c10::ArrayRef<double> lr, c10::ArrayRef<double> beta1,
    c10::ArrayRef<double> beta2, c10::ArrayRef<double> eps, c10::ArrayRef<double> weight_decay,
    const c10::List<bool>& amsgrad_list, const c10::List<bool>& maximize_list,
    const c10::List<bool>& decoupled_list, std::optional<double> max_grad_norm, double norm_type,
    bool skip_nonfinite, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, at::Tensor& skipped_steps,
    const std::optional<at::Tensor>& grads_norm, at::TensorList guard_states,
    const std::vector<std::string>& guards, c10::ArrayRef<double> guard_args,
    const std::optional<at::Tensor>& decisions, at::TensorList master_params,
    std::optional<int64_t> rounding_seed) {
  const std::vector<bool> amsgrad = amsgrad_list.vec(), maximize = maximize_list.vec(),
                          decoupled_weight_decay = decoupled_list.vec();
  check_groups(params, group_sizes,
               {lr.size(), beta1.size(), beta2.size(), eps.size(), weight_decay.size(),
                amsgrad.size(), maximize.size(), decoupled_weight_decay.size()});
  check_clip_settings(max_grad_norm, norm_type);
  for (size_t g = 0; g < group_sizes.size(); ++g) {
    check_adam_hyper({lr[g], beta1[g], beta2[g], eps[g], weight_decay[g], amsgrad[g], maximize[g],
                      decoupled_weight_decay[g]});
  }
  const bool any_amsgrad = std::find(amsgrad.begin(), amsgrad.end(), true) != amsgrad.end();
  check_list_length("fused_adam_", "grads", grads, params.size(), true);
  check_list_length("fused_adam_", "exp_avgs", exp_avgs, params.size(), true);
  check_list_length("fused_adam_", "exp_avg_sqs", exp_avg_sqs, params.size(), true);
  check_list_length("fused_adam_", "max_exp_avg_sqs", max_exp_avg_sqs, params.size(), any_amsgrad);
  check_list_length("fused_adam_", "steps", steps, params.size(), true);
  check_strided(grads, "fused_adam_", "grads");
  check_masters("fused_adam_", params, master_params);
  static auto kernel =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::_adam_step_", "")
          .typed<void(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                      at::TensorList, at::TensorList, double, double, double, double, double, bool,
                      bool, bool, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, at::TensorList, c10::IntArrayRef)>();
  const StepGuard guard =
      guard_step(grads, max_grad_norm, norm_type, skip_nonfinite, grad_scale, found_inf, grads_norm,
                 {guard_states, guards, guard_args, decisions});
  for_each_group(params, steps, group_sizes, master_params, rounding_seed, guard,
                 [&](size_t g, const std::vector<size_t>& idx, const c10::Device& device,
                     const Precision& precision) {
                   kernel.call(pick(params, idx), pick(grads, idx), pick(exp_avgs, idx),
                               pick(exp_avg_sqs, idx),
                               amsgrad[g] ? pick(max_exp_avg_sqs, idx) : std::vector<at::Tensor>{},
                               pick(steps, idx), lr[g], beta1[g], beta2[g], eps[g], weight_decay[g],
                               amsgrad[g], maximize[g], decoupled_weight_decay[g],
                               on(guard.multiplier, device), on(guard.skip, device),
                               precision.masters, precision.rounding_keys);
                 });
  return finish(guard, skipped_steps);
}

at::Tensor fused_sgd_composite(
    at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
    at::TensorList steps, c10::IntArrayRef group_sizes, c10::ArrayRef<double> lr,
    c10::ArrayRef<double> momentum, c10::ArrayRef<double> dampening,
    c10::ArrayRef<double> weight_decay, const c10::List<bool>& nesterov_list,
    const c10::List<bool>& maximize_list, std::optional<double> max_grad_norm, double norm_type,
    bool skip_nonfinite, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, at::Tensor& skipped_steps,
    const std::optional<at::Tensor>& grads_norm, at::TensorList guard_states,
    const std::vector<std::string>& guards, c10::ArrayRef<double> guard_args,
    const std::optional<at::Tensor>& decisions, at::TensorList master_params,
    std::optional<int64_t> rounding_seed) {
  const std::vector<bool> nesterov = nesterov_list.vec(), maximize = maximize_list.vec();
  check_groups(params, group_sizes,
               {lr.size(), momentum.size(), dampening.size(), weight_decay.size(), nesterov.size(),
                maximize.size()});
  check_clip_settings(max_grad_norm, norm_type);
  for (size_t g = 0; g < group_sizes.size(); ++g) {
    check_sgd_hyper({lr[g], momentum[g], dampening[g], weight_decay[g], nesterov[g], maximize[g]});
  }
  const bool any_momentum =
      std::any_of(momentum.begin(), momentum.end(), [](double m) { return m != 0; });
  check_list_length("fused_sgd_", "grads", grads, params.size(), true);
  check_list_length("fused_sgd_", "momentum_buffers", momentum_buffers, params.size(),
                    any_momentum);
  check_list_length("fused_sgd_", "steps", steps, params.size(), true);
  check_strided(grads, "fused_sgd_", "grads");
  check_masters("fused_sgd_", params, master_params);
  static auto kernel =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::_sgd_step_", "")
          .typed<void(at::TensorList, at::TensorList, at::TensorList, at::TensorList, double,
                      double, double, double, bool, bool, const std::optional<at::Tensor>&,
                      const std::optional<at::Tensor>&, at::TensorList, c10::IntArrayRef)>();
  const StepGuard guard =
      guard_step(grads, max_grad_norm, norm_type, skip_nonfinite, grad_scale, found_inf, grads_norm,
                 {guard_states, guards, guard_args, decisions});
  for_each_group(params, steps, group_sizes, master_params, rounding_seed, guard,
                 [&](size_t g, const std::vector<size_t>& idx, const c10::Device& device,
                     const Precision& precision) {
                   kernel.call(
                       pick(params, idx), pick(grads, idx),
                       momentum[g] != 0 ? pick(momentum_buffers, idx) : std::vector<at::Tensor>{},
                       pick(steps, idx), lr[g], momentum[g], dampening[g], weight_decay[g],
                       nesterov[g], maximize[g], on(guard.multiplier, device),
                       on(guard.skip, device), precision.masters, precision.rounding_keys);
                 });
  return finish(guard, skipped_steps);
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("fused_adam_", &fused_adam_composite);
  m.impl("fused_sgd_", &fused_sgd_composite);
}

}  // namespace steadystep
