#include <steadystep/schedules/one_cycle.h>

#include <c10/util/Exception.h>

#include <cmath>

namespace steadystep::schedules {

namespace {
constexpr double kPi = 3.141592653589793;
}  // namespace

std::vector<double> OneCycle::phase_ends(int64_t total_steps, double pct_start, bool three_phase) {
  TORCH_CHECK_VALUE(total_steps > 0, "OneCycleLR: expected positive integer total_steps, got ",
                    total_steps);
  TORCH_CHECK_VALUE(pct_start >= 0 && pct_start <= 1,
                    "OneCycleLR: expected float between 0 and 1 pct_start, got ", pct_start);
  const double n = static_cast<double>(total_steps);
  if (three_phase) {
    return {pct_start * n - 1, 2 * pct_start * n - 2, n - 1};
  }
  return {pct_start * n - 1, n - 1};
}

OneCycle::OneCycle(int64_t total_steps, std::vector<double> end_steps,
                   const std::string& anneal_strategy)
    : total_steps_(total_steps) {
  TORCH_CHECK_VALUE(total_steps > 0, "OneCycleLR: expected positive integer total_steps, got ",
                    total_steps);
  TORCH_CHECK_VALUE(anneal_strategy == "cos" || anneal_strategy == "linear",
                    "OneCycleLR: anneal_strategy must be one of 'cos' or 'linear', got '",
                    anneal_strategy, "'");
  TORCH_CHECK_VALUE(end_steps.size() == 2 || end_steps.size() == 3,
                    "OneCycleLR: two or three phases, got ", end_steps.size());
  cosine_ = anneal_strategy == "cos";
  if (end_steps.size() == 3) {
    phases_ = {{end_steps[0], kInitialLr, kMaxLr, kMaxMomentum, kBaseMomentum},
               {end_steps[1], kMaxLr, kInitialLr, kBaseMomentum, kMaxMomentum},
               {end_steps[2], kInitialLr, kMinLr, kMaxMomentum, kMaxMomentum}};
  } else {
    phases_ = {{end_steps[0], kInitialLr, kMaxLr, kMaxMomentum, kBaseMomentum},
               {end_steps[1], kMaxLr, kMinLr, kBaseMomentum, kMaxMomentum}};
  }
}

double OneCycle::anneal(double start, double end, double pct) const {
  if (cosine_) {
    const double cos_out = std::cos(kPi * pct) + 1;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

std::pair<double, double> OneCycle::at(int64_t step, const OneCycleGroup& g) const {
  TORCH_CHECK_VALUE(step <= total_steps_, "OneCycleLR: tried to step ", step,
                    " times. The specified number of total steps is ", total_steps_);
  const double values[] = {g.initial_lr, g.max_lr, g.min_lr, g.max_momentum, g.base_momentum};
  const double t = static_cast<double>(step);
  double start_step = 0.0;
  for (size_t i = 0; i < phases_.size(); ++i) {
    const Phase& phase = phases_[i];
    if (t <= phase.end_step || i == phases_.size() - 1) {
      const double pct = (t - start_step) / (phase.end_step - start_step);
      return {anneal(values[phase.start_lr], values[phase.end_lr], pct),
              anneal(values[phase.start_momentum], values[phase.end_momentum], pct)};
    }
    start_step = phase.end_step;
  }
  TORCH_INTERNAL_ASSERT(false, "unreachable");
}

}  // namespace steadystep::schedules
