// ZScoreClip: the C++ class over the steadystep::zscore_clip_ op (the math is the op's).

#include <steadystep/clip_grad.h>
#include <steadystep/guard.h>

#include "guard/zscore_clip_policy.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>

namespace steadystep {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

ZScoreClip::ZScoreClip(ZScoreClipOptions options) : options_(std::move(options)) {
  options_.mode(lower(options_.mode()));  // zclip lower-cases the mode (not clip_option)
  TORCH_CHECK_VALUE(options_.mode() == "zscore" || options_.mode() == "percentile",
                    "mode must be either 'zscore' or 'percentile'.");
  TORCH_CHECK_VALUE(options_.mode() != "zscore" || options_.clip_option() == "mean" ||
                        options_.clip_option() == "adaptive_scaling",
                    "For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.");
}

at::Tensor ZScoreClip::clip_(at::TensorList parameters) {
  return clip_grads_(grads_of(parameters));
}

at::Tensor ZScoreClip::clip_grads_(at::TensorList grads,
                                   const std::optional<at::Tensor>& total_norm) {
  return zscore_clip_(grads, state_for(grads, total_norm), options_, total_norm);
}

std::vector<double> ZScoreClip::args() const {
  return guard::zscore_args(
      options_.alpha(), options_.z_thresh(), options_.max_grad_norm(), options_.eps(),
      options_.warmup_steps(), options_.mode(),
      options_.mode() == "percentile" ? "adaptive_scaling" : options_.clip_option(),
      options_.clip_factor(), options_.skip_update_on_spike());
}

at::Tensor ZScoreClip::step_count() const {
  return slot(0);
}
at::Tensor ZScoreClip::mean() const {
  return slot(1);
}
at::Tensor ZScoreClip::var() const {
  return slot(2);
}
at::Tensor ZScoreClip::last_norm() const {
  return slot(3);
}
at::Tensor ZScoreClip::last_clip_coef() const {
  return slot(4);
}
at::Tensor ZScoreClip::last_spike() const {
  return slot(5).to(at::kBool);
}

}  // namespace steadystep
