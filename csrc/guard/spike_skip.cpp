// SpikeSkip: the C++ class of the "spike_skip" guard policy (csrc/guard/spike_skip_policy.cpp),
// which only the fused optimizers run.

#include <steadystep/guard.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <limits>

namespace steadystep {

SpikeSkip::SpikeSkip(SpikeSkipOptions options) : options_(options) {
  TORCH_CHECK_VALUE(options_.max_norm().has_value() || options_.z_thresh().has_value(),
                    "SpikeSkip: max_norm or z_thresh must be given");
  TORCH_CHECK_VALUE(!options_.max_norm().has_value() || *options_.max_norm() >= 0,
                    "SpikeSkip: max_norm must be >= 0, got ", options_.max_norm().value_or(0));
  TORCH_CHECK_VALUE(!options_.z_thresh().has_value() || *options_.z_thresh() >= 0,
                    "SpikeSkip: z_thresh must be >= 0, got ", options_.z_thresh().value_or(0));
  TORCH_CHECK_VALUE(options_.window() >= 2, "SpikeSkip: window must be an integer >= 2, got ",
                    options_.window());
  TORCH_CHECK_VALUE(options_.warmup_steps() >= 2 && options_.warmup_steps() <= options_.window(),
                    "SpikeSkip: warmup_steps must be an integer in [2, window=", options_.window(),
                    "], got ", options_.warmup_steps());
}

std::vector<double> SpikeSkip::args() const {
  constexpr double none = std::numeric_limits<double>::quiet_NaN();
  return {options_.max_norm().value_or(none), options_.z_thresh().value_or(none),
          static_cast<double>(options_.window()), static_cast<double>(options_.warmup_steps())};
}

at::Tensor SpikeSkip::step_count() const {
  return slot(0);
}
at::Tensor SpikeSkip::last_norm() const {
  return slot(1);
}
at::Tensor SpikeSkip::last_skipped() const {
  return slot(2).to(at::kBool);
}
at::Tensor SpikeSkip::mean() const {
  return slot(3);
}
at::Tensor SpikeSkip::std() const {
  return slot(4);
}

}  // namespace steadystep
