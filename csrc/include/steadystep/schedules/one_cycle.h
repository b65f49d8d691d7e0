#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace steadystep::schedules {

/// The per-group values OneCycle anneals between (PyTorch keeps them in the param groups).
struct OneCycleGroup {
  double initial_lr, max_lr, min_lr, max_momentum, base_momentum;
};

/// PyTorch's `OneCycleLR` math: lr warms from `initial_lr` to `max_lr` over `pct_start` of
/// `total_steps` and anneals to `min_lr` (three phases with `three_phase`), momentum in
/// antiphase; cosine or linear annealing.
class OneCycle {
 public:
  /// `end_steps`: where each phase ends, as `phase_ends` computes them (two or three phases).
  OneCycle(int64_t total_steps, std::vector<double> end_steps, const std::string& anneal_strategy);
  /// PyTorch's phase boundaries for `pct_start` of `total_steps`.
  static std::vector<double> phase_ends(int64_t total_steps, double pct_start, bool three_phase);

  /// (lr, momentum) of a group at `step`; a step past `total_steps` is an error, as in PyTorch.
  std::pair<double, double> at(int64_t step, const OneCycleGroup& group) const;
  int64_t total_steps() const { return total_steps_; }

 private:
  enum Field { kInitialLr, kMaxLr, kMinLr, kMaxMomentum, kBaseMomentum };
  struct Phase {
    double end_step;
    Field start_lr, end_lr, start_momentum, end_momentum;
  };
  double anneal(double start, double end, double pct) const;

  int64_t total_steps_;
  bool cosine_;
  std::vector<Phase> phases_;
};

}  // namespace steadystep::schedules
