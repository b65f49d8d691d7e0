#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <vector>

namespace steadystep::schedules {

/// PyTorch's `ConstantLR` math: lr * factor for the first `total_iters` steps, then lr.
class Constant {
 public:
  /// `factor` in [0, 1]; `total_iters` steps at the reduced lr (a double, as PyTorch's Python
  /// class compares it with the step index: a non-integral one never restores the lr by
  /// stepping, while the closed form restores it past it).
  Constant(double factor = 1.0 / 3, double total_iters = 5);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double factor_;
  double total_iters_;
};

/// PyTorch's `LinearLR` math: the factor on the base lr moves linearly from `start_factor` to
/// `end_factor` over `total_iters` steps.
class Linear {
 public:
  /// `start_factor` in (0, 1], `end_factor` in [0, 1]; `total_iters` a double as in Python.
  Linear(double start_factor = 1.0 / 3, double end_factor = 1.0, double total_iters = 5);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double start_factor_;
  double end_factor_;
  double total_iters_;
};

/// PyTorch's `PolynomialLR` math: lr = base * (1 - t / total_iters) ** power, then constant.
class Polynomial {
 public:
  /// `total_iters` a double as in Python.
  Polynomial(double total_iters = 5, double power = 1.0);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double total_iters_;
  double power_;
};

}  // namespace steadystep::schedules
