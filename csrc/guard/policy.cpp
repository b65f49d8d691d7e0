// The guard policy registry and the two steps every guard shares: deciding (guard_step) and
// scaling the gradients (scale_grads_). NOTE [Guard policies] in policy.h.

#include "guard/policy.h"

#include "checks.h"
#include "ops/grouping.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <map>
#include <string>

namespace steadystep::guard {

namespace {

std::map<std::string, const Policy*, std::less<>>& registry() {
  static std::map<std::string, const Policy*, std::less<>> policies;
  return policies;
}

}  // namespace

PolicyRegistrar::PolicyRegistrar(const Policy& policy) {
  const bool inserted = registry().emplace(policy.kind, &policy).second;
  TORCH_INTERNAL_ASSERT(inserted, "guard policy '", policy.kind, "' registered twice");
}

const Policy& find_policy(c10::string_view kind) {
  const auto it = registry().find(std::string(kind));
  if (it == registry().end()) {
    std::string known;
    for (const auto& entry : registry()) {
      known += (known.empty() ? "" : ", ") + entry.first;
    }
    TORCH_CHECK_VALUE(false, "unknown gradient guard policy '", kind, "' (known: ", known, ")");
  }
  return *it->second;
}

at::Tensor new_state(c10::string_view kind, c10::ArrayRef<double> args,
                     const at::TensorOptions& options) {
  const Policy& policy = find_policy(kind);
  policy.check(args);
  return at::zeros({policy.state_size(args)}, options.dtype(at::kDouble));
}

void check_guard(const char* who, at::TensorList states, c10::ArrayRef<std::string> kinds,
                 c10::ArrayRef<double> args) {
  TORCH_CHECK_VALUE(states.size() == kinds.size(), who, ": ", kinds.size(), " guard policies but ",
                    states.size(), " guard states");
  size_t offset = 0;
  int clips = 0;
  for (size_t i = 0; i < kinds.size(); ++i) {
    const Policy& policy = find_policy(kinds[i]);
    TORCH_CHECK_VALUE(offset + policy.num_args <= args.size(), who, ": guard policy '", kinds[i],
                      "' takes ", policy.num_args, " args; guard_args ends first");
    const auto own = args.slice(offset, policy.num_args);
    policy.check(own);
    offset += policy.num_args;
    clips += policy.role == Role::kClip;
    const at::Tensor& state = states[i];
    const int64_t size = policy.state_size(own);
    TORCH_CHECK_VALUE(
        state.dim() == 1 && state.scalar_type() == at::kDouble && state.sym_size(0) == size, who,
        ": the state of guard policy '", kinds[i], "' must be a 1-D float64 ", "tensor of ", size,
        " elements, got ", state.scalar_type(), " ", state.sizes());
  }
  TORCH_CHECK_VALUE(offset == args.size(), who, ": guard_args has ", args.size(),
                    " values, the policies take ", offset);
  TORCH_CHECK_VALUE(clips <= 1, who, ": a guard holds at most one clip policy, got ", clips);
}

Decision guard_step(const at::Tensor& norm, const at::Tensor& reported_norm, at::TensorList states,
                    c10::ArrayRef<std::string> kinds, c10::ArrayRef<double> args,
                    const at::Tensor& skipped) {
  check_guard("guard", states, kinds, args);
  Decision decision;
  decision.skip = skipped;
  // Offsets of each policy's args, and the clip policy's index (skip policies run first).
  std::vector<size_t> offsets;
  size_t offset = 0;
  int64_t clip = -1;
  for (size_t i = 0; i < kinds.size(); ++i) {
    offsets.push_back(offset);
    const Policy& policy = find_policy(kinds[i]);
    offset += policy.num_args;
    if (policy.role == Role::kClip) {
      clip = static_cast<int64_t>(i);
    }
  }
  const auto run = [&](size_t i, const at::Tensor& frozen) {
    const Policy& policy = find_policy(kinds[i]);
    const at::Tensor& state = states[i];
    const Verdict verdict = policy.decide(norm.to(state.device()), reported_norm.to(state.device()),
                                          state, args.slice(offsets[i], policy.num_args));
    // A frozen step writes the state back unchanged: one copy either way, no branch on the host.
    state.copy_(frozen.defined() ? at::where(frozen.to(state.device()), state, verdict.state)
                                 : verdict.state);
    return verdict;
  };
  at::Tensor policy_skip;
  for (size_t i = 0; i < kinds.size(); ++i) {
    if (static_cast<int64_t>(i) == clip) {
      continue;
    }
    const Verdict verdict = run(i, skipped);
    policy_skip = policy_skip.defined() ? at::logical_or(policy_skip, verdict.skip) : verdict.skip;
  }
  if (policy_skip.defined()) {
    decision.skip = skipped.defined()
                        ? at::logical_or(skipped.to(policy_skip.device()), policy_skip)
                        : policy_skip;
  }
  if (clip >= 0) {
    decision.coef = run(static_cast<size_t>(clip), decision.skip).coef;
  }
  return decision;
}

at::Tensor clip_step_(const char* who, at::TensorList grads, const at::Tensor& state,
                      const std::string& kind, const std::vector<double>& args,
                      const std::optional<at::Tensor>& total_norm, bool coef_as_float) {
  at::NoGradGuard no_grad;
  const std::vector<std::string> kinds = {kind};
  check_guard(who, {state}, kinds, args);
  check_dense_layout(grads, who, "grads");
  at::Tensor norm_acc;
  at::Tensor norm_out;
  if (total_norm.has_value()) {
    TORCH_CHECK(total_norm->sym_numel() == 1, who, ": total_norm must hold one value, got ",
                total_norm->sizes());
    norm_acc = total_norm->reshape({});
    norm_out = norm_acc;
  } else if (grads.empty()) {
    norm_acc = at::zeros({}, state.options().dtype(at::kFloat));
    norm_out = norm_acc;
  } else {
    norm_acc = total_norm_accumulated(grads, 2.0);
    norm_out = norm_acc.to(total_norm_dtype(grads));
  }
  const Decision decision = guard_step(norm_acc, norm_out, {state}, kinds, args, at::Tensor());
  scale_grads_(grads, decision.coef, coef_as_float);
  return norm_out;
}

void scale_grads_(at::TensorList grads, const at::Tensor& coef, bool coef_as_float) {
  if (grads.empty()) {
    return;
  }
  static auto scale = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("steadystep::_scale_", "")
                          .typed<void(at::TensorList, const at::Tensor&)>();
  DeviceGroups groups;
  for (const auto& g : grads) {
    groups.add(g);
  }
  for (size_t i = 0; i < groups.devices.size(); ++i) {
    const at::Tensor c = coef.to(groups.devices[i]);
    std::vector<at::Tensor> kernel;
    for (const auto& g : groups.tensors[i]) {
      // A Python float multiplier is read in fp32 for bf16/fp16 data, where the multi-tensor
      // kernel (torch's foreach_mul_ by a tensor) reads it in the data's dtype; ATen's mul_ by
      // a 0-dim tensor reads it as the float is read.
      if (in_place_kernel_tensor(g) &&
          !(coef_as_float && at::isReducedFloatingType(g.scalar_type()))) {
        kernel.push_back(g);
      } else {
        g.mul_(c);
      }
    }
    if (!kernel.empty()) {
      scale.call(kernel, c);
    }
  }
}

}  // namespace steadystep::guard
