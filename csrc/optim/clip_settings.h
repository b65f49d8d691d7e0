#pragma once

// The optimizer-wide clipping settings of FusedAdam and FusedSGD. The fused op clips over the
// gradients of all param groups together, with one max_grad_norm, norm_type and skip_nonfinite,
// taken from the optimizer's defaults; a group's copy of them that differs would be silently
// ignored, so it is refused instead.

#include <torch/optim/optimizer.h>

#include <optional>
#include <string>

namespace steadystep {

struct ClipSettings {
  std::optional<double> max_grad_norm;
  double norm_type;
  bool skip_nonfinite;
};

template <typename Options>
ClipSettings clip_settings(const Options& options) {
  return {options.max_grad_norm(), options.norm_type(), options.skip_nonfinite()};
}

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
