#include <steadystep/schedules/extras.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace steadystep::schedules {

namespace {
constexpr double kPi = 3.141592653589793;

std::vector<double> times_factor(const std::vector<double>& base_lrs, double factor) {
  return scaled(base_lrs, factor);
}
}  // namespace

// ---- WarmupCosine ---------------------------------------------------------------------------

WarmupCosine::WarmupCosine(int64_t warmup_steps, int64_t total_steps, double warmup_start_factor,
                           double eta_min)
    : warmup_steps_(warmup_steps),
      total_steps_(total_steps),
      warmup_start_factor_(warmup_start_factor),
      eta_min_(eta_min) {
  TORCH_CHECK_VALUE(warmup_steps >= 0, "WarmupCosineLR: warmup_steps must be >= 0, got ",
                    warmup_steps);
  TORCH_CHECK_VALUE(total_steps >= warmup_steps && total_steps > 0,
                    "WarmupCosineLR: total_steps must be > 0 and >= warmup_steps (", warmup_steps,
                    "), got ", total_steps);
  TORCH_CHECK_VALUE(warmup_start_factor >= 0 && warmup_start_factor <= 1,
                    "WarmupCosineLR: warmup_start_factor must be in [0, 1], got ",
                    warmup_start_factor);
  TORCH_CHECK_VALUE(eta_min >= 0, "WarmupCosineLR: eta_min must be >= 0, got ", eta_min);
}

std::vector<double> WarmupCosine::closed_form_lr(const StepContext& ctx) const {
  const int64_t t = ctx.last_epoch;
  if (t < warmup_steps_) {
    // transformers: step / max(1, warmup) (start factor 0).
    const double progress =
        static_cast<double>(t) / static_cast<double>(std::max<int64_t>(1, warmup_steps_));
    return times_factor(ctx.base_lrs, warmup_start_factor_ + (1 - warmup_start_factor_) * progress);
  }
  if (t > total_steps_) {
    return std::vector<double>(ctx.base_lrs.size(), eta_min_);
  }
  const double progress = static_cast<double>(t - warmup_steps_) /
                          static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup_steps_));
  const double factor = std::max(0.0, 0.5 * (1.0 + std::cos(kPi * progress)));
  std::vector<double> out(ctx.base_lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = eta_min_ + (ctx.base_lrs[i] - eta_min_) * factor;
  }
  return out;
}

// ---- WarmupStableDecay ----------------------------------------------------------------------

WarmupStableDecay::WarmupStableDecay(int64_t warmup_steps, int64_t stable_steps,
                                     int64_t decay_steps, double warmup_start_factor,
                                     double min_lr_ratio, const std::string& decay_type)
    : warmup_steps_(warmup_steps),
      stable_steps_(stable_steps),
      decay_steps_(decay_steps),
      warmup_start_factor_(warmup_start_factor),
      min_lr_ratio_(min_lr_ratio) {
  TORCH_CHECK_VALUE(warmup_steps >= 0, "WarmupStableDecayLR: warmup_steps must be >= 0, got ",
                    warmup_steps);
  TORCH_CHECK_VALUE(stable_steps >= 0, "WarmupStableDecayLR: stable_steps must be >= 0, got ",
                    stable_steps);
  TORCH_CHECK_VALUE(decay_steps >= 0, "WarmupStableDecayLR: decay_steps must be >= 0, got ",
                    decay_steps);
  TORCH_CHECK_VALUE(warmup_start_factor >= 0 && warmup_start_factor <= 1,
                    "WarmupStableDecayLR: warmup_start_factor must be in [0, 1], got ",
                    warmup_start_factor);
  TORCH_CHECK_VALUE(min_lr_ratio >= 0 && min_lr_ratio <= 1,
                    "WarmupStableDecayLR: min_lr_ratio must be in [0, 1], got ", min_lr_ratio);
  if (decay_type == "linear") {
    decay_type_ = 0;
  } else if (decay_type == "cosine") {
    decay_type_ = 1;
  } else if (decay_type == "1-sqrt") {
    decay_type_ = 2;
  } else {
    TORCH_CHECK_VALUE(false,
                      "WarmupStableDecayLR: decay_type must be 'linear', 'cosine' or "
                      "'1-sqrt', got '",
                      decay_type, "'");
  }
}

double WarmupStableDecay::factor(int64_t t) const {
  if (t < warmup_steps_) {
    const double progress =
        static_cast<double>(t) / static_cast<double>(std::max<int64_t>(1, warmup_steps_));
    return std::max(0.0, progress * (1.0 - warmup_start_factor_) + warmup_start_factor_);
  }
  if (t < warmup_steps_ + stable_steps_) {
    return 1.0;
  }
  if (t < warmup_steps_ + stable_steps_ + decay_steps_) {
    const double progress = static_cast<double>(t - warmup_steps_ - stable_steps_) /
                            static_cast<double>(std::max<int64_t>(1, decay_steps_));
    double f;
    if (decay_type_ == 0) {
      f = 1.0 - progress;
    } else if (decay_type_ == 1) {
      f = 0.5 * (1.0 + std::cos(kPi * progress));
    } else {
      f = 1.0 - std::sqrt(progress);
    }
    return std::max(0.0, f * (1.0 - min_lr_ratio_) + min_lr_ratio_);
  }
  return min_lr_ratio_;
}

std::vector<double> WarmupStableDecay::closed_form_lr(const StepContext& ctx) const {
  return times_factor(ctx.base_lrs, factor(ctx.last_epoch));
}

// ---- InverseSqrt ----------------------------------------------------------------------------

InverseSqrt::InverseSqrt(int64_t warmup_steps, std::optional<int64_t> timescale)
    : warmup_steps_(warmup_steps),
      timescale_(timescale ? *timescale : (warmup_steps != 0 ? warmup_steps : 10000)) {
  TORCH_CHECK_VALUE(warmup_steps >= 0, "InverseSqrtLR: warmup_steps must be >= 0, got ",
                    warmup_steps);
  TORCH_CHECK_VALUE(timescale_ > 0, "InverseSqrtLR: timescale must be > 0, got ", timescale_);
}

std::vector<double> InverseSqrt::closed_form_lr(const StepContext& ctx) const {
  const int64_t t = ctx.last_epoch;
  if (t < warmup_steps_) {
    return times_factor(ctx.base_lrs, static_cast<double>(t) /
                                          static_cast<double>(std::max<int64_t>(1, warmup_steps_)));
  }
  const int64_t shift = timescale_ - warmup_steps_;
  const double decay =
      1.0 / std::sqrt(static_cast<double>(t + shift) / static_cast<double>(timescale_));
  return times_factor(ctx.base_lrs, decay);
}

// ---- ExponentialDecay -----------------------------------------------------------------------

ExponentialDecay::ExponentialDecay(double decay_rate, int64_t decay_steps, bool staircase,
                                   double min_lr)
    : decay_rate_(decay_rate), decay_steps_(decay_steps), staircase_(staircase), min_lr_(min_lr) {
  TORCH_CHECK_VALUE(decay_rate > 0, "ExponentialDecayLR: decay_rate must be > 0, got ", decay_rate);
  TORCH_CHECK_VALUE(decay_steps > 0, "ExponentialDecayLR: decay_steps must be > 0, got ",
                    decay_steps);
  TORCH_CHECK_VALUE(min_lr >= 0, "ExponentialDecayLR: min_lr must be >= 0, got ", min_lr);
}

std::vector<double> ExponentialDecay::closed_form_lr(const StepContext& ctx) const {
  double exponent = static_cast<double>(ctx.last_epoch) / static_cast<double>(decay_steps_);
  if (staircase_) {
    exponent = std::floor(exponent);
  }
  const double factor = std::pow(decay_rate_, exponent);
  std::vector<double> out(ctx.base_lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = std::max(ctx.base_lrs[i] * factor, min_lr_);
  }
  return out;
}

// ---- Random ---------------------------------------------------------------------------------

Random::Random(double min_lr, double max_lr, int64_t period, bool log_uniform, uint64_t seed)
    : min_lr_(min_lr), max_lr_(max_lr), period_(period), log_uniform_(log_uniform), seed_(seed) {
  TORCH_CHECK_VALUE(std::isfinite(min_lr), "RandomLR: min_lr must be finite, got ", min_lr);
  TORCH_CHECK_VALUE(std::isfinite(max_lr), "RandomLR: max_lr must be finite, got ", max_lr);
  TORCH_CHECK_VALUE(min_lr <= max_lr, "RandomLR: min_lr (", min_lr, ") must be <= max_lr (", max_lr,
                    ")");
  TORCH_CHECK_VALUE(log_uniform ? min_lr > 0 : min_lr >= 0, "RandomLR: min_lr must be ",
                    log_uniform ? "> 0 for log_uniform" : ">= 0", ", got ", min_lr);
  TORCH_CHECK_VALUE(period >= 1, "RandomLR: period must be >= 1, got ", period);
}

double Random::draw(int64_t t) const {
  // NOTE [Counter-based draws]: splitmix64 of (seed, period index) is a pure function of the
  // step, so there is no generator state to save, and C++ and Python agree by construction.
  uint64_t z = seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(python_floordiv(t, period_));
  for (int round = 0; round < 2; ++round) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
  }
  const double u = static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
  if (log_uniform_) {
    return std::exp(std::log(min_lr_) + u * (std::log(max_lr_) - std::log(min_lr_)));
  }
  return min_lr_ + u * (max_lr_ - min_lr_);
}

std::vector<double> Random::closed_form_lr(const StepContext& ctx) const {
  return std::vector<double>(ctx.lrs.size(), draw(ctx.last_epoch));
}

// ---- Bounds ---------------------------------------------------------------------------------

void check_bounds(double min_lr, double max_lr) {
  TORCH_CHECK_VALUE(min_lr >= 0, "BoundedLR: min_lr must be >= 0, got ", min_lr);
  TORCH_CHECK_VALUE(min_lr <= max_lr, "BoundedLR: min_lr (", min_lr, ") must be <= max_lr (",
                    max_lr, ")");
}

std::vector<double> clamp_lrs(const std::vector<double>& lrs, double min_lr, double max_lr) {
  std::vector<double> out(lrs.size());
  for (size_t i = 0; i < lrs.size(); ++i) {
    out[i] = std::min(std::max(lrs[i], min_lr), max_lr);
  }
  return out;
}

}  // namespace steadystep::schedules
