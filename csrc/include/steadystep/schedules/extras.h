#pragma once

// The schedules people train with that PyTorch does not ship. Each is a closed form of the
// step index, so resuming from a checkpoint or stepping to an epoch gives the same lrs.

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace steadystep::schedules {

/// Linear warmup from `warmup_start_factor * base` to `base` over `warmup_steps`, then a half
/// cosine to `eta_min` at `total_steps`, then `eta_min`. With the defaults it equals
/// transformers' `get_cosine_schedule_with_warmup` up to `total_steps`.
class WarmupCosine {
 public:
  WarmupCosine(int64_t warmup_steps, int64_t total_steps, double warmup_start_factor = 0.0,
               double eta_min = 0.0);
  std::vector<double> get_lr(const StepContext& ctx) const { return closed_form_lr(ctx); }
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  int64_t warmup_steps_, total_steps_;
  double warmup_start_factor_, eta_min_;
};

/// Warmup-stable-decay (WSD), the LLM pre-training schedule: linear warmup from
/// `warmup_start_factor`, `stable_steps` at the base lr, then a "linear", "cosine" or "1-sqrt"
/// decay over `decay_steps` to `min_lr_ratio * base`, then held there. Equals transformers'
/// `get_wsd_schedule` (linear warmup) when `warmup_start_factor == min_lr_ratio`.
class WarmupStableDecay {
 public:
  WarmupStableDecay(int64_t warmup_steps, int64_t stable_steps, int64_t decay_steps,
                    double warmup_start_factor = 0.0, double min_lr_ratio = 0.0,
                    const std::string& decay_type = "cosine");
  std::vector<double> get_lr(const StepContext& ctx) const { return closed_form_lr(ctx); }
  std::vector<double> closed_form_lr(const StepContext& ctx) const;
  double factor(int64_t step) const;

 private:
  int64_t warmup_steps_, stable_steps_, decay_steps_;
  double warmup_start_factor_, min_lr_ratio_;
  int decay_type_;  // 0 linear, 1 cosine, 2 1-sqrt
};

/// Linear warmup over `warmup_steps`, then lr = base / sqrt((t + timescale - warmup) /
/// timescale). `timescale` defaults to `warmup_steps` (10,000 when that is 0). Equals
/// transformers' `get_inverse_sqrt_schedule`.
class InverseSqrt {
 public:
  InverseSqrt(int64_t warmup_steps, std::optional<int64_t> timescale = std::nullopt);
  std::vector<double> get_lr(const StepContext& ctx) const { return closed_form_lr(ctx); }
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  int64_t warmup_steps_, timescale_;
};

/// lr = max(base * decay_rate ** (t / decay_steps), min_lr); the exponent is floored when
/// `staircase` (TensorFlow's exponential_decay, with a floor).
class ExponentialDecay {
 public:
  ExponentialDecay(double decay_rate, int64_t decay_steps, bool staircase = false,
                   double min_lr = 0.0);
  std::vector<double> get_lr(const StepContext& ctx) const { return closed_form_lr(ctx); }
  std::vector<double> closed_form_lr(const StepContext& ctx) const;

 private:
  double decay_rate_;
  int64_t decay_steps_;
  bool staircase_;
  double min_lr_;
};

/// A random lr in [min_lr, max_lr] (log-uniform or uniform), drawn anew every `period` steps
/// and shared by all param groups. The draw for a period is a counter-based hash of
/// (seed, period index): the same seed gives the same sequence in C++ and Python, and a
/// scheduler resumed at any step continues it.
class Random {
 public:
  Random(double min_lr, double max_lr, int64_t period = 1, bool log_uniform = true,
         uint64_t seed = 0);
  std::vector<double> get_lr(const StepContext& ctx) const { return closed_form_lr(ctx); }
  std::vector<double> closed_form_lr(const StepContext& ctx) const;
  /// The lr drawn for step `t`.
  double draw(int64_t t) const;

 private:
  double min_lr_, max_lr_;
  int64_t period_;
  bool log_uniform_;
  uint64_t seed_;
};

/// Every lr clamped into [min_lr, max_lr] (what `BoundedLR` applies after its scheduler).
std::vector<double> clamp_lrs(const std::vector<double>& lrs, double min_lr, double max_lr);
/// Checks 0 <= min_lr <= max_lr for `BoundedLR`.
void check_bounds(double min_lr, double max_lr);

}  // namespace steadystep::schedules
