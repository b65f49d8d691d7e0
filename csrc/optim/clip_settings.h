#pragma once

// The optimizer-wide settings of FusedAdam and FusedSGD. The fused op clips over the
// gradients of all param groups together, with one max_grad_norm, norm_type and skip_nonfinite,
// and takes the norm over the ranks of one process_group (if any), taken from the optimizer's
// defaults; the low-precision settings (master_weights, stochastic_rounding, state_dtype) are
// the optimizer's too, as in the Python optimizers. A group's copy of them that differs would be
// silently ignored, so it is refused instead.

#include <steadystep/guard.h>

#include <torch/optim/optimizer.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace steadystep {

struct ClipSettings {
  std::optional<double> max_grad_norm;
  double norm_type;
  bool skip_nonfinite;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group;
  std::vector<std::shared_ptr<GradientGuard>> guard;
  bool master_weights;
  bool stochastic_rounding;
  std::optional<c10::ScalarType> state_dtype;
};

template <typename Options>
ClipSettings clip_settings(const Options& options) {
  return {options.max_grad_norm(),       options.norm_type(),  options.skip_nonfinite(),
          options.process_group(),       options.guard(),      options.master_weights(),
          options.stochastic_rounding(), options.state_dtype()};
}

/// The low-precision settings' own checks: a c10::ValueError (Python's ValueError) for
/// master_weights with stochastic_rounding, or a state_dtype other than kFloat / kBFloat16.
void check_precision(bool master_weights, bool stochastic_rounding,
                     std::optional<c10::ScalarType> state_dtype);

/// Whether `param` keeps an fp32 master copy: fp16/bf16 params when master_weights is on.
bool keeps_master(const at::Tensor& param, bool master_weights);

/// The dtype `param`'s state tensors are kept in: fp64 (and complex) params their own;
/// otherwise state_dtype when set, else fp32 for a param with a master, else the param's.
c10::ScalarType state_dtype_for(const at::Tensor& param, bool master_weights,
                                std::optional<c10::ScalarType> state_dtype);

/// With master_weights on, what the fused op takes in master_params for `param`: the fp32
/// master in `state` (made from the param, with its strides, when the state has none: its
/// first step, an archive without one), or a 0-element placeholder for a param that keeps none.
template <typename State>
at::Tensor master_for(const at::Tensor& param, State& state) {
  if (!keeps_master(param, /*master_weights=*/true)) {
    return at::empty({0}, param.options().dtype(at::kFloat));
  }
  if (!state.master_param().defined()) {
    state.master_param(
        at::empty_like(param, param.options().dtype(at::kFloat), at::MemoryFormat::Preserve)
            .copy_(param.detach()));
  }
  return state.master_param();
}

/// The norm of `grads` over the ranks of `settings.process_group`, when one is set and clipping
/// or the guard needs the norm, for the fused op's `grads_norm`; none otherwise (the op then
/// takes the local norm itself). With a group every rank must call it, also a rank with no
/// gradient (it adds 0), or the others wait for it.
std::optional<at::Tensor> global_grads_norm(const std::vector<at::Tensor>& grads,
                                            const ClipSettings& settings);

/// Throws a c10::Error (ValueError in Python) naming the first setting of param group `group`
/// that differs from the optimizer's.
void check_group_clip(const std::string& who, size_t group, const ClipSettings& in_group,
                      const ClipSettings& optimizer_wide);

/// check_group_clip for every param group of `optimizer`, whose options are `Options`: at
/// construction and at each step (add_param_group is not virtual, so a group added later is
/// caught there).
template <typename Options>
void check_groups_clip(const torch::optim::Optimizer& optimizer, const std::string& who) {
  const auto wide = clip_settings(static_cast<const Options&>(optimizer.defaults()));
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
    check_group_clip(
        who, g, clip_settings(static_cast<const Options&>(optimizer.param_groups()[g].options())),
        wide);
  }
}

}  // namespace steadystep
