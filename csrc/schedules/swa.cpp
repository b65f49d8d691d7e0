#include <steadystep/schedules/swa.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

namespace {
constexpr double kPi = 3.141592653589793;
}  // namespace

SWA::SWA(std::vector<double> swa_lrs, int64_t anneal_epochs, const std::string& anneal_strategy)
    : swa_lrs_(std::move(swa_lrs)), anneal_epochs_(anneal_epochs) {
  TORCH_CHECK_VALUE(anneal_strategy == "cos" || anneal_strategy == "linear",
                    "SWALR: anneal_strategy must be one of 'cos' or 'linear', got '",
                    anneal_strategy, "'");
  TORCH_CHECK_VALUE(anneal_epochs >= 0, "SWALR: anneal_epochs must be >= 0, got ", anneal_epochs);
  cosine_ = anneal_strategy == "cos";
}

double SWA::anneal(double t) const {
  return cosine_ ? (1 - std::cos(kPi * t)) / 2 : t;
}

std::vector<double> SWA::get_lr(const StepContext& ctx) const {
  int64_t step = ctx.step_count - 1;
  if (anneal_epochs_ == 0) {
    step = std::max<int64_t>(1, step);
  }
  const double span = static_cast<double>(std::max<int64_t>(1, anneal_epochs_));
  const double prev_t = std::max(0.0, std::min(1.0, static_cast<double>(step - 1) / span));
  const double prev_alpha = anneal(prev_t);
  const double t = std::max(0.0, std::min(1.0, static_cast<double>(step) / span));
  const double alpha = anneal(t);
  std::vector<double> out(ctx.lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    // The lr the annealing started from, recovered from the current one.
    const double prev_lr =
        prev_alpha == 1 ? swa_lrs_[i] : (ctx.lrs[i] - prev_alpha * swa_lrs_[i]) / (1 - prev_alpha);
    out[i] = swa_lrs_[i] * alpha + prev_lr * (1 - alpha);
  }
  return out;
}

}  // namespace steadystep::schedules
