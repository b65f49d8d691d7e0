#include <steadystep/schedules/cosine_warm_restarts.h>

#include <c10/util/Exception.h>

#include <cmath>

namespace steadystep::schedules {

namespace {
constexpr double kPi = 3.141592653589793;

int64_t ipow(int64_t base, int64_t exp) {
  int64_t out = 1;
  for (int64_t i = 0; i < exp; ++i) {
    out *= base;
  }
  return out;
}
}  // namespace

CosineWarmRestarts::CosineWarmRestarts(int64_t T_0, int64_t T_mult, double eta_min)
    : T_0_(T_0), T_mult_(T_mult), eta_min_(eta_min) {
  TORCH_CHECK_VALUE(T_0 > 0, "CosineAnnealingWarmRestarts: expected positive integer T_0, got ",
                    T_0);
  TORCH_CHECK_VALUE(T_mult >= 1, "CosineAnnealingWarmRestarts: expected integer T_mult >= 1, got ",
                    T_mult);
}

WarmRestartsState CosineWarmRestarts::initial_state(int64_t last_epoch) const {
  return {static_cast<double>(last_epoch), static_cast<double>(T_0_), last_epoch};
}

// NOTE [Warm restarts]: PyTorch's own step() logic, operation for operation, including the
// logarithm that finds the cycle of an explicit epoch when T_mult > 1.
WarmRestartsState CosineWarmRestarts::advance(WarmRestartsState s,
                                              std::optional<double> epoch) const {
  if (!epoch && s.last_epoch < 0) {
    epoch = 0.0;
  }
  double e;
  if (!epoch) {
    e = static_cast<double>(s.last_epoch + 1);
    s.T_cur = s.T_cur + 1;
    if (s.T_cur >= s.T_i) {
      s.T_cur = python_mod(s.T_cur, s.T_i);
      s.T_i = s.T_i * static_cast<double>(T_mult_);
    }
  } else {
    e = *epoch;
    TORCH_CHECK_VALUE(e >= 0, "CosineAnnealingWarmRestarts: expected non-negative epoch, got ", e);
    if (e >= static_cast<double>(T_0_)) {
      if (T_mult_ == 1) {
        s.T_cur = python_mod(e, static_cast<double>(T_0_));
      } else {
        const double x = e / static_cast<double>(T_0_) * static_cast<double>(T_mult_ - 1) + 1;
        const auto n = static_cast<int64_t>(std::log(x) / std::log(static_cast<double>(T_mult_)));
        s.T_cur = e - static_cast<double>(T_0_ * (ipow(T_mult_, n) - 1)) /
                          static_cast<double>(T_mult_ - 1);
        s.T_i = static_cast<double>(T_0_ * ipow(T_mult_, n));
      }
    } else {
      s.T_i = static_cast<double>(T_0_);
      s.T_cur = e;
    }
  }
  s.last_epoch = static_cast<int64_t>(std::floor(e));
  return s;
}

std::vector<double> CosineWarmRestarts::lr(const WarmRestartsState& s,
                                           const std::vector<double>& base_lrs) const {
  std::vector<double> out(base_lrs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = eta_min_ + (base_lrs[i] - eta_min_) * (1 + std::cos(kPi * s.T_cur / s.T_i)) / 2;
  }
  return out;
}

}  // namespace steadystep::schedules
