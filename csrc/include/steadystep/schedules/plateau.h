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
  /// One `step(metric)`: updates `state`, returns the new lrs from the current `lrs`
  /// (`observe`, then, when a reduction is due, `reduce` and `rest`).
  std::vector<double> step(PlateauState& state, double metric, std::optional<int64_t> epoch,
                           const std::vector<double>& lrs) const;
  /// PyTorch's `step` up to the decision: sets `last_epoch`, updates `best`, the bad-epoch and
  /// cooldown counters, and says whether the lrs are due for a reduction.
  bool observe(PlateauState& state, double metric, std::optional<int64_t> epoch) const;
  /// PyTorch's `_reduce_lr`: each lr times `factor`, not below its min_lr, changed only when
  /// it drops by more than `eps`. Raises PyTorch's RuntimeError when the number of lrs differs
  /// from the number of min_lrs (a param group added since construction).
  std::vector<double> reduce(const std::vector<double>& lrs) const;
  /// What follows a reduction: the cooldown starts and the bad epochs are forgotten.
  void rest(PlateauState& state) const;
  bool is_better(double a, double best) const;
  const std::vector<double>& min_lrs() const { return min_lrs_; }

 private:
  bool maximize_, relative_;
  double factor_, threshold_, eps_;
  int64_t patience_, cooldown_;
  std::vector<double> min_lrs_;
};

}  // namespace steadystep::schedules
