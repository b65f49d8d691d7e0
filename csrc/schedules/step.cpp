#include <steadystep/schedules/step.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

Step::Step(int64_t step_size, double gamma) : step_size_(step_size), gamma_(gamma) {
  TORCH_CHECK_VALUE(step_size > 0, "StepLR: step_size must be > 0, got ", step_size);
}

std::vector<double> Step::get_lr(const StepContext& ctx) const {
  if (ctx.last_epoch == 0 || ctx.last_epoch % step_size_ != 0) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, gamma_);
}

std::vector<double> Step::closed_form_lr(const StepContext& ctx) const {
  const double factor =
      std::pow(gamma_, static_cast<double>(python_floordiv(ctx.last_epoch, step_size_)));
  return scaled(ctx.base_lrs, factor);
}

MultiStep::MultiStep(std::vector<int64_t> milestones, double gamma)
    : sorted_milestones_(std::move(milestones)), gamma_(gamma) {
  std::sort(sorted_milestones_.begin(), sorted_milestones_.end());
  for (int64_t m : sorted_milestones_) {
    ++counts_[m];
  }
}

std::vector<double> MultiStep::get_lr(const StepContext& ctx) const {
  const auto it = counts_.find(ctx.last_epoch);
  if (it == counts_.end()) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, std::pow(gamma_, static_cast<double>(it->second)));
}

std::vector<double> MultiStep::closed_form_lr(const StepContext& ctx) const {
  // bisect_right: milestones <= last_epoch.
  const auto passed =
      std::upper_bound(sorted_milestones_.begin(), sorted_milestones_.end(), ctx.last_epoch) -
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
