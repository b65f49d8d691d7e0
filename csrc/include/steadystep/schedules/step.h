#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <map>
#include <vector>

namespace steadystep::schedules {

/// PyTorch's `StepLR` math: lr *= gamma every `step_size` steps.
class Step {
 public:
  /// `step_size`: steps between decays (> 0). A double because PyTorch's Python class takes any
  /// real number: a non-integral one decays at the steps that are multiples of it (2.5: 5, 10,
  /// ...), as Python's `%` and `//` make it. `gamma`: the decay factor.
  Step(double step_size, double gamma = 0.1);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double step_size_;
  double gamma_;
};

/// PyTorch's `MultiStepLR` math: lr *= gamma at each milestone (a repeated milestone decays
/// once per repetition). Milestones are doubles as in Python, where `[2.0, 5.0]` equals
/// `[2, 5]` and a non-integral milestone is never reached by a step but counts in the closed
/// form.
class MultiStep {
 public:
  MultiStep(std::vector<double> milestones, double gamma = 0.1);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  std::vector<double> sorted_milestones_;
  std::map<double, int64_t> counts_;
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
