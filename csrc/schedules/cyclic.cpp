#include <steadystep/schedules/cyclic.h>

#include <c10/util/Exception.h>

#include <cmath>

namespace steadystep::schedules {

std::pair<double, double> Cyclic::cycle_shape(double step_size_up,
                                              std::optional<double> step_size_down) {
  TORCH_CHECK_VALUE(step_size_up > 0, "CyclicLR: step_size_up must be > 0, got ", step_size_up);
  const double down = step_size_down ? *step_size_down : step_size_up;
  TORCH_CHECK_VALUE(down >= 0, "CyclicLR: step_size_down must be >= 0, got ", down);
  const double total = step_size_up + down;
  return {total, step_size_up / total};
}

Cyclic::Cyclic(std::vector<double> base_lrs, std::vector<double> max_lrs, double total_size,
               double step_ratio, const std::string& mode, double gamma, ScaleFn scale_fn,
               const std::string& scale_mode, bool cycle_momentum,
               std::vector<double> base_momentums, std::vector<double> max_momentums)
    : base_lrs_(std::move(base_lrs)),
      max_lrs_(std::move(max_lrs)),
      base_momentums_(std::move(base_momentums)),
      max_momentums_(std::move(max_momentums)),
      total_size_(total_size),
      step_ratio_(step_ratio),
      gamma_(gamma),
      cycle_momentum_(cycle_momentum),
      scale_fn_(std::move(scale_fn)) {
  TORCH_CHECK_VALUE(base_lrs_.size() == max_lrs_.size(), "CyclicLR: got ", base_lrs_.size(),
                    " base_lr values but ", max_lrs_.size(), " max_lr values");
  TORCH_CHECK_VALUE(total_size > 0, "CyclicLR: the cycle must be longer than 0, got ", total_size);
  if (scale_fn_) {
    mode_ = 3;
    TORCH_CHECK_VALUE(scale_mode == "cycle" || scale_mode == "iterations",
                      "CyclicLR: scale_mode must be 'cycle' or 'iterations', got '", scale_mode,
                      "'");
    scale_by_cycle_ = scale_mode == "cycle";
  } else if (mode == "triangular" || mode == "triangular2") {
    mode_ = mode == "triangular" ? 0 : 1;
    scale_by_cycle_ = true;
  } else if (mode == "exp_range") {
    mode_ = 2;
    scale_by_cycle_ = false;
  } else {
    TORCH_CHECK_VALUE(false, "CyclicLR: mode '", mode,
                      "' is invalid (triangular, triangular2, exp_range) and scale_fn is None");
  }
  if (cycle_momentum_) {
    TORCH_CHECK_VALUE(
        base_momentums_.size() == base_lrs_.size() && max_momentums_.size() == base_lrs_.size(),
        "CyclicLR: base_momentum and max_momentum need one value per param group");
  }
}

double Cyclic::scale(int64_t last_epoch, double* scale_factor) const {
  const double t = static_cast<double>(last_epoch);
  const double cycle = std::floor(1 + t / total_size_);
  const double x = 1.0 + t / total_size_ - cycle;
  *scale_factor = x <= step_ratio_ ? x / step_ratio_ : (x - 1) / (step_ratio_ - 1);
  const double arg = scale_by_cycle_ ? cycle : t;
  switch (mode_) {
    case 0:
      return 1.0;
    case 1:
      return 1 / std::pow(2.0, arg - 1);
    case 2:
      return std::pow(gamma_, arg);
    default:
      return scale_fn_(arg);
  }
}

std::vector<double> Cyclic::lrs(int64_t last_epoch) const {
  double scale_factor;
  const double s = scale(last_epoch, &scale_factor);
  std::vector<double> out(base_lrs_.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double base_height = (max_lrs_[i] - base_lrs_[i]) * scale_factor;
    out[i] = base_lrs_[i] + base_height * s;
  }
  return out;
}

std::vector<double> Cyclic::momentums(int64_t last_epoch) const {
  if (!cycle_momentum_) {
    return {};
  }
  double scale_factor;
  const double s = scale(last_epoch, &scale_factor);
  std::vector<double> out(base_momentums_.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double base_height = (max_momentums_[i] - base_momentums_[i]) * scale_factor;
    out[i] = max_momentums_[i] - base_height * s;
  }
  return out;
}

}  // namespace steadystep::schedules
