#pragma once

#include <steadystep/schedules/schedule.h>

namespace steadystep::schedules {

/// The schedule math of PyTorch's `CosineAnnealingLR`:
/// lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, computed the way
/// PyTorch 2.11 computes it (recursively from the current lr on each step, in closed form when
/// an explicit epoch is given), so both sequences agree to the last bit and chaining composes
/// alike.
class CosineAnnealing {
 public:
  /// `T_max`: steps in a half period (> 0). `eta_min`: the lowest lr (same units as lr).
  CosineAnnealing(double T_max, double eta_min = 0.0);

  /// The lrs for `ctx.last_epoch`, from the current lrs (PyTorch's `get_lr`).
  std::vector<double> get_lr(const StepContext& ctx) const;
  /// The lrs for `ctx.last_epoch`, from the base lrs (PyTorch's `_get_closed_form_lr`).
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

  double T_max() const { return T_max_; }
  double eta_min() const { return eta_min_; }

 private:
  double T_max_;
  double eta_min_;
};

}  // namespace steadystep::schedules
