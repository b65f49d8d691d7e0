#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace steadystep::schedules {

/// A custom amplitude scale of `CyclicLR`: a function of the cycle or of the step.
using ScaleFn = std::function<double(double)>;

/// PyTorch's `CyclicLR` math: the lr (and optionally momentum, in antiphase) cycles between
/// `base_lrs` and `max_lrs`, up for `step_size_up` steps, down for `step_size_down`.
class Cyclic {
 public:
  /// `mode`: "triangular", "triangular2" or "exp_range" (ignored when `scale_fn` is given);
  /// `scale_mode`: "cycle" or "iterations" (used with `scale_fn` only, as in PyTorch).
  /// `base_momentums`/`max_momentums` are used when `cycle_momentum`.
  /// `total_size` and `step_ratio` as `cycle_shape` computes them (PyTorch keeps these two).
  Cyclic(std::vector<double> base_lrs, std::vector<double> max_lrs, double total_size,
         double step_ratio, const std::string& mode, double gamma, ScaleFn scale_fn,
         const std::string& scale_mode, bool cycle_momentum, std::vector<double> base_momentums,
         std::vector<double> max_momentums);

  /// PyTorch's (total_size, step_ratio) for `step_size_up` and `step_size_down` (default: up).
  static std::pair<double, double> cycle_shape(double step_size_up,
                                               std::optional<double> step_size_down);

  /// The lrs at `last_epoch`.
  std::vector<double> lrs(int64_t last_epoch) const;
  /// The momentums at `last_epoch` (empty without `cycle_momentum`).
  std::vector<double> momentums(int64_t last_epoch) const;

 private:
  double scale(int64_t last_epoch, double* scale_factor) const;

  std::vector<double> base_lrs_, max_lrs_, base_momentums_, max_momentums_;
  double total_size_, step_ratio_, gamma_;
  int mode_;  // 0 triangular, 1 triangular2, 2 exp_range, 3 custom
  bool scale_by_cycle_;
  bool cycle_momentum_;
  ScaleFn scale_fn_;
};

}  // namespace steadystep::schedules
