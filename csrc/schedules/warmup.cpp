#include <steadystep/schedules/warmup.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

Constant::Constant(double factor, int64_t total_iters)
    : factor_(factor), total_iters_(total_iters) {
  TORCH_CHECK_VALUE(factor >= 0 && factor <= 1.0,
                    "ConstantLR: factor must be between 0 and 1, got ", factor);
}

std::vector<double> Constant::get_lr(const StepContext& ctx) const {
  if (ctx.last_epoch == 0) {
    return scaled(ctx.lrs, factor_);
  }
  if (ctx.last_epoch != total_iters_) {
    return ctx.lrs;
  }
  return scaled(ctx.lrs, 1.0 / factor_);
}

std::vector<double> Constant::closed_form_lr(const StepContext& ctx) const {
  const double passed = ctx.last_epoch >= total_iters_ ? 1.0 : 0.0;
  return scaled(ctx.base_lrs, factor_ + passed * (1 - factor_));
}

Linear::Linear(double start_factor, double end_factor, int64_t total_iters)
    : start_factor_(start_factor), end_factor_(end_factor), total_iters_(total_iters) {
  TORCH_CHECK_VALUE(start_factor > 0 && start_factor <= 1.0,
                    "LinearLR: start_factor must be in (0, 1], got ", start_factor);
  TORCH_CHECK_VALUE(end_factor >= 0 && end_factor <= 1.0,
                    "LinearLR: end_factor must be in [0, 1], got ", end_factor);
}

std::vector<double> Linear::get_lr(const StepContext& ctx) const {
  if (ctx.last_epoch == 0) {
    return scaled(ctx.lrs, start_factor_);
  }
  if (ctx.is_initial || ctx.last_epoch > total_iters_) {
    return ctx.lrs;
  }
  const double t = static_cast<double>(ctx.last_epoch);
  const double factor =
      1.0 + (end_factor_ - start_factor_) / (static_cast<double>(total_iters_) * start_factor_ +
                                             (t - 1) * (end_factor_ - start_factor_));
  return scaled(ctx.lrs, factor);
}

std::vector<double> Linear::closed_form_lr(const StepContext& ctx) const {
  const double done = static_cast<double>(std::min(total_iters_, ctx.last_epoch));
  return scaled(ctx.base_lrs, start_factor_ + (end_factor_ - start_factor_) * done /
                                                  static_cast<double>(total_iters_));
}

Polynomial::Polynomial(int64_t total_iters, double power)
    : total_iters_(total_iters), power_(power) {}

std::vector<double> Polynomial::get_lr(const StepContext& ctx) const {
  if (ctx.is_initial || ctx.last_epoch > total_iters_) {
    return ctx.lrs;
  }
  const double t = static_cast<double>(ctx.last_epoch);
  const double n = static_cast<double>(total_iters_);
  const double decay = std::pow((1.0 - t / n) / (1.0 - (t - 1) / n), power_);
  return scaled(ctx.lrs, decay);
}

std::vector<double> Polynomial::closed_form_lr(const StepContext& ctx) const {
  const double done = static_cast<double>(std::min(total_iters_, ctx.last_epoch));
  return scaled(ctx.base_lrs, std::pow(1.0 - done / static_cast<double>(total_iters_), power_));
}

}  // namespace steadystep::schedules
