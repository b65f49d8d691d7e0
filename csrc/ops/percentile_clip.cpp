// The PercentileClip composite op: the norm, then AutoClip's decision (the "percentile" guard
// policy, csrc/guard/percentile_clip_policy.cpp) and the scaling of the gradients, all on the
// device. Written with ATen ops and the _scale_ kernels only, so it serves CPU, CUDA and Meta.

#include <steadystep/guard.h>

#include "guard/policy.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace steadystep {

namespace {

at::Tensor percentile_clip_composite(at::TensorList grads, const at::Tensor& state, double quantile,
                                     int64_t history_length,
                                     const std::optional<at::Tensor>& total_norm) {
  // autoclip clips with clip_grad_norm_, i.e. torch._foreach_mul_ by the coefficient tensor.
  return guard::clip_step_("percentile_clip_", grads, state, "percentile",
                           {quantile, static_cast<double>(history_length)}, total_norm,
                           /*coef_as_float=*/false);
}

}  // namespace

at::Tensor percentile_clip_state(int64_t history_length, const at::TensorOptions& options) {
  return guard::new_state("percentile", {0.9, static_cast<double>(history_length)}, options);
}

at::Tensor percentile_clip_(at::TensorList grads, const at::Tensor& state,
                            const PercentileClipOptions& options,
                            const std::optional<at::Tensor>& total_norm) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("steadystep::percentile_clip_", "")
                           .typed<at::Tensor(at::TensorList, const at::Tensor&, double, int64_t,
                                             const std::optional<at::Tensor>&)>();
  return handle.call(grads, state, options.quantile(), options.history_length(), total_norm);
}

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("percentile_clip_", &percentile_clip_composite);
}

}  // namespace steadystep
