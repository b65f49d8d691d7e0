#include <steadystep/schedules/cosine_annealing.h>

#include <c10/util/Exception.h>

#include <cmath>

namespace steadystep::schedules {

namespace {
constexpr double kPi = 3.141592653589793;  // Python's math.pi, the same double
}  // namespace

CosineAnnealing::CosineAnnealing(double T_max, double eta_min) : T_max_(T_max), eta_min_(eta_min) {
  TORCH_CHECK_VALUE(T_max > 0, "CosineAnnealingLR: T_max must be > 0, got ", T_max);
  TORCH_CHECK_VALUE(std::isfinite(eta_min), "CosineAnnealingLR: eta_min must be finite, got ",
                    eta_min);
}

// NOTE [Recursive form]: PyTorch derives each lr from the previous one (so that a lr changed
// by another scheduler in between carries over). Every expression below keeps PyTorch's order
// of operations: the same doubles come out.
std::vector<double> CosineAnnealing::get_lr(const StepContext& ctx) const {
  if (ctx.is_initial) {
    return ctx.lrs;
  }
  const double t = static_cast<double>(ctx.last_epoch);
  std::vector<double> out(ctx.lrs.size());
  if (ctx.step_count == 1 && ctx.last_epoch > 0) {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = eta_min_ + (ctx.base_lrs[i] - eta_min_) * (1 + std::cos(t * kPi / T_max_)) / 2;
    }
  } else if (python_mod(t - 1 - T_max_, 2 * T_max_) == 0) {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = ctx.lrs[i] + (ctx.base_lrs[i] - eta_min_) * (1 - std::cos(kPi / T_max_)) / 2;
    }
  } else {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = (1 + std::cos(kPi * t / T_max_)) / (1 + std::cos(kPi * (t - 1) / T_max_)) *
                   (ctx.lrs[i] - eta_min_) +
               eta_min_;
    }
  }
  return out;
}

std::vector<double> CosineAnnealing::closed_form_lr(const StepContext& ctx) const {
  const double t = static_cast<double>(ctx.last_epoch);
  std::vector<double> out(ctx.base_lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = eta_min_ + (ctx.base_lrs[i] - eta_min_) * (1 + std::cos(kPi * t / T_max_)) / 2;
  }
  return out;
}

}  // namespace steadystep::schedules
