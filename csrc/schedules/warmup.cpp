#include <steadystep/schedules/warmup.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

Constant::Constant(double factor, double total_iters) : factor_(factor), total_iters_(total_iters) {
  // PyTorch's message first, so code matching on it keeps working.
  TORCH_CHECK_VALUE(factor >= 0 && factor <= 1.0,
                    "Constant multiplicative factor expected to be between 0 and 1. "
                    "ConstantLR got factor=",
                    factor);
}

std::vector<double> Constant::get_lr(const StepContext& ctx) const {
  if (ctx.last_epoch == 0) {
    return scaled(ctx.lrs, factor_);
  }
  if (static_cast<double>(ctx.last_epoch) != total_iters_) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, 1.0 / factor_);
}

std::vector<double> Constant::closed_form_lr(const StepContext& ctx) const {
  const double passed = static_cast<double>(ctx.last_epoch) >= total_iters_ ? 1.0 : 0.0;
  return scaled(ctx.base_lrs, factor_ + passed * (1 - factor_));
}

Linear::Linear(double start_factor, double end_factor, double total_iters)
    : start_factor_(start_factor), end_factor_(end_factor), total_iters_(total_iters) {
  TORCH_CHECK_VALUE(start_factor > 0 && start_factor <= 1.0,
                    "Starting multiplicative factor expected to be greater than 0 and less or "
                    "equal to 1. LinearLR got start_factor=",
                    start_factor);
  TORCH_CHECK_VALUE(end_factor >= 0 && end_factor <= 1.0,
                    "Ending multiplicative factor expected to be between 0 and 1. LinearLR got "
                    "end_factor=",
                    end_factor);
}

std::vector<double> Linear::get_lr(const StepContext& ctx) const {
  if (ctx.last_epoch == 0) {
    return scaled(ctx.lrs, start_factor_);
  }
  const double t = static_cast<double>(ctx.last_epoch);
  if (ctx.is_initial || t > total_iters_) {
    return ctx.lrs;
  }
  const double factor =
      1.0 + (end_factor_ - start_factor_) /
                (total_iters_ * start_factor_ + (t - 1) * (end_factor_ - start_factor_));
  return scaled(ctx.lrs, factor);
}

std::vector<double> Linear::closed_form_lr(const StepContext& ctx) const {
  const double done = std::min(total_iters_, static_cast<double>(ctx.last_epoch));
  return scaled(ctx.base_lrs, start_factor_ + (end_factor_ - start_factor_) * done / total_iters_);
}

Polynomial::Polynomial(double total_iters, double power)
    : total_iters_(total_iters), power_(power) {}

std::vector<double> Polynomial::get_lr(const StepContext& ctx) const {
  const double t = static_cast<double>(ctx.last_epoch);
  if (ctx.is_initial || t > total_iters_) {
    return ctx.lrs;
  }
  const double n = total_iters_;
  const double decay = std::pow((1.0 - t / n) / (1.0 - (t - 1) / n), power_);
  return scaled(ctx.lrs, decay);
}

std::vector<double> Polynomial::closed_form_lr(const StepContext& ctx) const {
  const double done = std::min(total_iters_, static_cast<double>(ctx.last_epoch));
  return scaled(ctx.base_lrs, std::pow(1.0 - done / total_iters_, power_));
}

}  // namespace steadystep::schedules
