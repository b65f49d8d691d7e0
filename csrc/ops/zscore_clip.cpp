// The ZScoreClip composite op: the norm, then ZClip's decision (the "zscore" guard policy,
// csrc/guard/zscore_clip_policy.cpp) and the scaling of the gradients, all on the device.
// Written with ATen ops and the _scale_ kernels only, so it serves CPU, CUDA and Meta.

#include <steadystep/guard.h>

#include "guard/policy.h"
#include "guard/zscore_clip_policy.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

namespace steadystep {

namespace {

at::Tensor zscore_clip_composite(at::TensorList grads, const at::Tensor& state, double alpha,
                                 double z_thresh, std::optional<double> max_grad_norm, double eps,
                                 int64_t warmup_steps, c10::string_view mode,
                                 c10::string_view clip_option, double clip_factor,
                                 bool skip_update_on_spike,
                                 const std::optional<at::Tensor>& total_norm) {
  // zclip ignores clip_option in percentile mode; it multiplies each gradient by the
  // coefficient as a Python float.
  return guard::clip_step_(
      "zscore_clip_", grads, state, "zscore",
      guard::zscore_args(alpha, z_thresh, max_grad_norm, eps, warmup_steps, mode,
                         mode == "percentile" ? "adaptive_scaling" : clip_option, clip_factor,
                         skip_update_on_spike),
      total_norm, /*coef_as_float=*/true);
}

}  // namespace

int64_t zscore_clip_buffer_size(int64_t warmup_steps) {
  return guard::zscore_buffer_size(warmup_steps);
}

at::Tensor zscore_clip_state(int64_t warmup_steps, const at::TensorOptions& options) {
  return guard::new_state("zscore",
                          guard::zscore_args(0.97, 2.5, 1.0, 1e-6, warmup_steps, "zscore",
                                             "adaptive_scaling", 1.0, false),
                          options);
}

at::Tensor zscore_clip_(at::TensorList grads, const at::Tensor& state,
                        const ZScoreClipOptions& options,
                        const std::optional<at::Tensor>& total_norm) {
  static auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::zscore_clip_", "")
          .typed<at::Tensor(at::TensorList, const at::Tensor&, double, double,
                            std::optional<double>, double, int64_t, c10::string_view,
                            c10::string_view, double, bool, const std::optional<at::Tensor>&)>();
  return handle.call(grads, state, options.alpha(), options.z_thresh(), options.max_grad_norm(),
                     options.eps(), options.warmup_steps(), options.mode(), options.clip_option(),
                     options.clip_factor(), options.skip_update_on_spike(), total_norm);
}

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("zscore_clip_", &zscore_clip_composite);
}

}  // namespace steadystep
