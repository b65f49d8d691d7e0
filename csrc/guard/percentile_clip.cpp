// PercentileClip: the C++ class over the steadystep::percentile_clip_ op (the math is the
// "percentile" policy's, csrc/guard/percentile_clip_policy.cpp).

#include <steadystep/clip_grad.h>
#include <steadystep/guard.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace steadystep {

PercentileClip::PercentileClip(PercentileClipOptions options) : options_(options) {
  // autoclip's QuantileClip checks and messages.
  TORCH_CHECK_VALUE(options_.quantile() >= 0.0 && options_.quantile() <= 1.0,
                    "QuantileClip quantile value must be between 0.0 and 1.0.");
  TORCH_CHECK_VALUE(options_.history_length() > 0,
                    "QuantileClip history length must be greater than zero.");
}

std::vector<double> PercentileClip::args() const {
  return {options_.quantile(), static_cast<double>(options_.history_length())};
}

at::Tensor PercentileClip::clip_(at::TensorList parameters) {
  return clip_grads_(grads_of(parameters));
}

at::Tensor PercentileClip::clip_grads_(at::TensorList grads,
                                       const std::optional<at::Tensor>& total_norm) {
  return percentile_clip_(grads, state_for(grads, total_norm), options_, total_norm);
}

at::Tensor PercentileClip::step_count() const {
  return slot(0);
}
at::Tensor PercentileClip::last_norm() const {
  return slot(1);
}
at::Tensor PercentileClip::last_threshold() const {
  return slot(2);
}
at::Tensor PercentileClip::last_clip_coef() const {
  return slot(3);
}

}  // namespace steadystep
