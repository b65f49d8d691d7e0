#pragma once

#include <steadystep/schedules/schedule.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace steadystep::schedules {

/// A function of the step index, one per param group (or one for all).
using LrLambda = std::function<double(int64_t)>;

/// PyTorch's `LambdaLR` math: lr = base_lr * lambda(t).
class Lambda {
 public:
  /// One function for every group, or one per group (`groups` must then match).
  Lambda(std::vector<LrLambda> lambdas, size_t groups);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const { return get_lr(ctx); }

 private:
  std::vector<LrLambda> lambdas_;
};

/// PyTorch's `MultiplicativeLR` math: lr *= lambda(t) on every step after construction.
class Multiplicative {
 public:
  Multiplicative(std::vector<LrLambda> lambdas, size_t groups);
  std::vector<double> get_lr(const StepContext& ctx) const;
  std::vector<double> closed_form_lr(const StepContext& ctx) const { return get_lr(ctx); }

 private:
  std::vector<LrLambda> lambdas_;
};

}  // namespace steadystep::schedules
