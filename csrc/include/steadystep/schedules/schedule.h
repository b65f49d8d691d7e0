#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace steadystep::schedules {

/// What a schedule sees when it is asked for the next learning rates. It mirrors the fields
/// of PyTorch's Python `LRScheduler` that its `get_lr()` reads, so that one C++ implementation
/// serves the C++ scheduler classes and the Python ones alike.
struct StepContext {
  /// `last_epoch` after the increment of this step (0 on the step done at construction).
  int64_t last_epoch = 0;
  /// Python's `_step_count`: 1 during the step done at construction.
  int64_t step_count = 0;
  /// True only during the step done at construction (Python's `_is_initial`).
  bool is_initial = false;
  /// The learning rate each param group started from (`initial_lr`).
  std::vector<double> base_lrs;
  /// Each param group's learning rate before this step (`group["lr"]`).
  std::vector<double> lrs;
};

/// Python's `a % b` for doubles: the result has the sign of `b` (floor modulo).
inline double python_mod(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0.0 && ((r < 0.0) != (b < 0.0))) {
    r += b;
  }
  return r;
}

/// Python's `a // b` for floats (CPython's float floor division, bit for bit); with integral
/// arguments it equals the integer floor division.
inline double python_floordiv(double a, double b) {
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0 && ((b < 0.0) != (mod < 0.0))) {
    div -= 1.0;
  }
  if (div == 0.0) {
    return std::copysign(0.0, a / b);
  }
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) {
    floordiv += 1.0;
  }
  return floordiv;
}

/// Python's `a // b` for integers (rounds toward negative infinity).
inline int64_t python_floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) {
    --q;
  }
  return q;
}

/// Each lr multiplied by `factor`: the recursive step of most PyTorch schedules.
inline std::vector<double> scaled(const std::vector<double>& lrs, double factor) {
  std::vector<double> out(lrs.size());
  for (size_t i = 0; i < lrs.size(); ++i) {
    out[i] = lrs[i] * factor;
  }
  return out;
}

}  // namespace steadystep::schedules
