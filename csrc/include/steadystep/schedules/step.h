#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <map>
#include <vector>

namespace steadystep::schedules {

/// PyTorch's `StepLR` math: lr *= gamma every `step_size` steps.
class Step {
 public:
  /// `step_size`: steps between decays (> 0). `gamma`: the decay factor.
  Step(int64_t step_size, double gamma = 0.1);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  int64_t step_size_;
  double gamma_;
};

/// PyTorch's `MultiStepLR` math: lr *= gamma at each milestone (a repeated milestone decays
/// once per repetition).
class MultiStep {
 public:
  MultiStep(std::vector<int64_t> milestones, double gamma = 0.1);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  std::vector<int64_t> sorted_milestones_;
  std::map<int64_t, int64_t> counts_;
  double gamma_;
};

/// PyTorch's `ExponentialLR` math: lr *= gamma every step.
class Exponential {
 public:
  explicit Exponential(double gamma);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double gamma_;
};

}  // namespace steadystep::schedules
