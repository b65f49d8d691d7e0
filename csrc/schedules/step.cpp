#include <steadystep/schedules/step.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

Step::Step(double step_size, double gamma) : step_size_(step_size), gamma_(gamma) {
  // PyTorch takes any step_size and fails at the first step for 0 (ZeroDivisionError); a
  // step_size <= 0 or nan is refused here, before the optimizer is touched.
  TORCH_CHECK_VALUE(step_size > 0, "StepLR: step_size must be > 0, got ", step_size);
}

std::vector<double> Step::get_lr(const StepContext& ctx) const {
  const double t = static_cast<double>(ctx.last_epoch);
  if (ctx.last_epoch == 0 || python_mod(t, step_size_) != 0.0) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, gamma_);
}

std::vector<double> Step::closed_form_lr(const StepContext& ctx) const {
  const double factor =
      std::pow(gamma_, python_floordiv(static_cast<double>(ctx.last_epoch), step_size_));
  return scaled(ctx.base_lrs, factor);
}

MultiStep::MultiStep(std::vector<double> milestones, double gamma)
    : sorted_milestones_(std::move(milestones)), gamma_(gamma) {
  for (double m : sorted_milestones_) {
    TORCH_CHECK_VALUE(!std::isnan(m), "MultiStepLR: milestones must be numbers, got nan");
  }
  std::sort(sorted_milestones_.begin(), sorted_milestones_.end());
  for (double m : sorted_milestones_) {
    ++counts_[m];
  }
}

std::vector<double> MultiStep::get_lr(const StepContext& ctx) const {
  const auto it = counts_.find(static_cast<double>(ctx.last_epoch));
  if (it == counts_.end()) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, std::pow(gamma_, static_cast<double>(it->second)));
}

std::vector<double> MultiStep::closed_form_lr(const StepContext& ctx) const {
  // bisect_right: milestones <= last_epoch.
  const auto passed = std::upper_bound(sorted_milestones_.begin(), sorted_milestones_.end(),
                                       static_cast<double>(ctx.last_epoch)) -
                      sorted_milestones_.begin();
  return scaled(ctx.base_lrs, std::pow(gamma_, static_cast<double>(passed)));
}

Exponential::Exponential(double gamma) : gamma_(gamma) {}

std::vector<double> Exponential::get_lr(const StepContext& ctx) const {
  if (ctx.is_initial) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, gamma_);
}

std::vector<double> Exponential::closed_form_lr(const StepContext& ctx) const {
  return scaled(ctx.base_lrs, std::pow(gamma_, static_cast<double>(ctx.last_epoch)));
}

}  // namespace steadystep::schedules
