// The PercentileClip composite op: the norm, then AutoClip's decision (the "percentile" guard
// policy, csrc/guard/percentile_clip_policy.cpp) and the scaling of the gradients, all on the
// device. Written with ATen ops and the _scale_ kernels only, so it serves CPU, CUDA and Meta.

#include <steadystep/guard.h>

#include "guard/policy.h"
#include "ops/total_norm.h"

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
  at::NoGradGuard no_grad;
  const std::vector<double> args = {quantile, static_cast<double>(history_length)};
  const std::vector<std::string> kinds = {"percentile"};
  guard::check_guard("percentile_clip_", {state}, kinds, args);
  check_dense_layout(grads, "percentile_clip_", "grads");

  // The norm in fp32 (fp64 for fp64 grads) and as clip_grad_norm_ returns it (the grads'
  // dtype): the reference's history holds the latter.
  at::Tensor norm_acc;
  at::Tensor norm_out;
  if (total_norm.has_value()) {
    TORCH_CHECK(total_norm->sym_numel() == 1,
                "percentile_clip_: total_norm must hold one value, got ", total_norm->sizes());
    norm_acc = total_norm->reshape({});
    norm_out = norm_acc;
  } else if (grads.empty()) {
    norm_acc = at::zeros({}, state.options().dtype(at::kFloat));
    norm_out = norm_acc;
  } else {
    norm_acc = total_norm_accumulated(grads, 2.0);
    norm_out = norm_acc.to(total_norm_dtype(grads));
  }
  const guard::Decision decision =
      guard::guard_step(norm_acc, norm_out, {state}, kinds, args, at::Tensor());
  // autoclip clips with clip_grad_norm_, i.e. torch._foreach_mul_ by the coefficient tensor.
  guard::scale_grads_(grads, decision.coef, /*coef_as_float=*/false);
  return norm_out;
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
