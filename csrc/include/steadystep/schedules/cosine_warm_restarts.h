#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace steadystep::schedules {

/// Where `CosineAnnealingWarmRestarts` is in its cycles (PyTorch's attributes of the same names).
struct WarmRestartsState {
  double T_cur = -1;  // steps (possibly fractional) since the last restart
  double T_i = 0;     // length of the current cycle
  int64_t last_epoch = -1;
};

/// PyTorch's `CosineAnnealingWarmRestarts` math (SGDR): a cosine from base lr to `eta_min` over
/// `T_i` steps, restarting with `T_i *= T_mult`; fractional epochs allowed in `advance`.
class CosineWarmRestarts {
 public:
  CosineWarmRestarts(int64_t T_0, int64_t T_mult = 1, double eta_min = 0.0);

  /// The state PyTorch's `step(epoch)` reaches from `state` (`epoch` empty: the next step).
  WarmRestartsState advance(WarmRestartsState state, std::optional<double> epoch) const;
  /// The lrs at `state`.
  std::vector<double> lr(const WarmRestartsState& state, const std::vector<double>& base_lrs) const;
  /// The state a scheduler constructed with `last_epoch` starts from.
  WarmRestartsState initial_state(int64_t last_epoch) const;

 private:
  int64_t T_0_;
  int64_t T_mult_;
  double eta_min_;
};

}  // namespace steadystep::schedules
