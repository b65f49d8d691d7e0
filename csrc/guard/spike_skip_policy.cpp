// Spike skipping as a guard policy ("spike_skip", NOTE [Guard policies]): vetoes a step whose
// gradient norm is above an absolute threshold or an outlier of the recent norms (OLMo-core's
// skip-step rule), decided on the device. ATen ops only.

#include "guard/policy.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace steadystep::guard {

namespace {

// NOTE [SpikeSkip state]: one fp64 vector on the device:
//   [0] norms in the window so far (finite norms seen), [1] last norm, [2] last skip flag (1:
//   skipped), [3] / [4] mean and standard deviation (unbiased) of the window the last norm was
//   judged against (0 while the window holds fewer than 1 / 2 norms), [5, 5 + window) the ring
//   of the last `window` finite norms (norm i goes to slot i % window).
// Every finite norm enters the window, skipped ones too: a lasting shift of the norm becomes
// the window's new normal after a while, instead of being skipped forever (no stall).
constexpr int64_t kHeader = 5;

// Args: [max_norm | nan, z_thresh | nan, window, warmup_steps].
enum Arg : size_t { kMaxNorm, kZThresh, kWindow, kWarmupSteps, kNumArgs };

bool is_int(double v) {
  return v == static_cast<double>(static_cast<int64_t>(v));
}

int64_t state_size(c10::ArrayRef<double> args) {
  return kHeader + static_cast<int64_t>(args[kWindow]);
}

void check(c10::ArrayRef<double> args) {
  TORCH_CHECK_VALUE(args.size() == kNumArgs, "spike_skip guard: ", kNumArgs, " args, got ",
                    args.size());
  TORCH_CHECK_VALUE(has_value(args[kMaxNorm]) || has_value(args[kZThresh]),
                    "SpikeSkip: max_norm or z_thresh must be given");
  TORCH_CHECK_VALUE(!has_value(args[kMaxNorm]) || args[kMaxNorm] >= 0,
                    "SpikeSkip: max_norm must be >= 0, got ", args[kMaxNorm]);
  TORCH_CHECK_VALUE(!has_value(args[kZThresh]) || args[kZThresh] >= 0,
                    "SpikeSkip: z_thresh must be >= 0, got ", args[kZThresh]);
  TORCH_CHECK_VALUE(is_int(args[kWindow]) && args[kWindow] >= 2,
                    "SpikeSkip: window must be an integer >= 2, got ", args[kWindow]);
  TORCH_CHECK_VALUE(
      is_int(args[kWarmupSteps]) && args[kWarmupSteps] >= 2 && args[kWarmupSteps] <= args[kWindow],
      "SpikeSkip: warmup_steps must be an integer in [2, window=", args[kWindow], "], got ",
      args[kWarmupSteps]);
}

Verdict decide(const at::Tensor& norm, const at::Tensor& /*reported_norm*/, const at::Tensor& state,
               c10::ArrayRef<double> args) {
  const int64_t window = static_cast<int64_t>(args[kWindow]);
  const auto f64 = state.options();
  const at::Tensor n = norm.to(f64);
  const at::Tensor finite = at::isfinite(n);

  const at::Tensor count = state.select(0, 0);
  const at::Tensor ring = state.slice(0, kHeader);
  const at::Tensor index = at::arange(window, f64);
  const at::Tensor k = at::minimum(count, at::full({}, static_cast<double>(window), f64));
  const at::Tensor valid = at::lt(index, k);

  // torch.std_mean(window, correction=1) over the valid entries, with k as a tensor: masked
  // sums, two passes (mean, then squared deviations from it).
  const at::Tensor zero = at::zeros({}, f64);
  const at::Tensor mean = at::div(at::sum(at::where(valid, ring, zero)), at::clamp_min(k, 1.0));
  const at::Tensor sq = at::where(valid, at::square(at::sub(ring, mean)), zero);
  const at::Tensor std_dev =
      at::where(at::ge(k, 2.0), at::sqrt(at::div(at::sum(sq), at::sub(k, 1.0))), zero);

  at::Tensor skip = at::logical_not(finite);
  if (has_value(args[kMaxNorm])) {
    skip = at::logical_or(skip, at::gt(n, args[kMaxNorm]));
  }
  if (has_value(args[kZThresh])) {
    const at::Tensor warm = at::ge(k, args[kWarmupSteps]);
    const at::Tensor outlier = at::gt(at::sub(n, mean), at::mul(std_dev, args[kZThresh]));
    skip = at::logical_or(skip, at::logical_and(warm, outlier));
  }

  const at::Tensor slot =
      at::logical_and(at::eq(index, at::fmod(count, static_cast<double>(window))), finite);
  Verdict verdict;
  verdict.skip = skip;
  verdict.state = at::cat({at::add(count, finite.to(at::kDouble)).reshape({1}), n.reshape({1}),
                           skip.to(at::kDouble).reshape({1}), mean.reshape({1}),
                           std_dev.reshape({1}), at::where(slot, n, ring)});
  return verdict;
}

const Policy kSpikeSkipPolicy{"spike_skip", Role::kSkip, kNumArgs, &state_size, &check, &decide};
const PolicyRegistrar registrar(kSpikeSkipPolicy);

}  // namespace

}  // namespace steadystep::guard
