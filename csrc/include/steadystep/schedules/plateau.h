#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace steadystep::schedules {

/// What `ReduceLROnPlateau` remembers between steps (PyTorch's attributes of the same names).
struct PlateauState {
  double best = 0;
  int64_t num_bad_epochs = 0;
  int64_t cooldown_counter = 0;
  int64_t last_epoch = 0;
};

/// PyTorch's `ReduceLROnPlateau` math: lr *= factor (not below `min_lrs`) once the metric has
/// not improved by `threshold` for more than `patience` steps; then `cooldown` steps of rest.
class Plateau {
 public:
  /// `mode`: "min" or "max"; `threshold_mode`: "rel" or "abs"; `factor` < 1.
  Plateau(const std::string& mode, double factor, int64_t patience, double threshold,
          const std::string& threshold_mode, int64_t cooldown, std::vector<double> min_lrs,
          double eps);

  /// A fresh state (best = the worst value for `mode`).
  PlateauState initial_state() const;
  /// One `step(metric)`: updates `state`, returns the new lrs from the current `lrs`.
  std::vector<double> step(PlateauState& state, double metric, std::optional<int64_t> epoch,
                           const std::vector<double>& lrs) const;
  bool is_better(double a, double best) const;

 private:
  bool maximize_, relative_;
  double factor_, threshold_, eps_;
  int64_t patience_, cooldown_;
  std::vector<double> min_lrs_;
};

}  // namespace steadystep::schedules
