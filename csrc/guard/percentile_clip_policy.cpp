// AutoClip as a guard policy ("percentile", NOTE [Guard policies]): the math of PercentileClip,
// shared by the standalone percentile_clip_ op and the fused optimizers' guard. ATen ops only.

#include "guard/policy.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <limits>

namespace steadystep::guard {

namespace {

// NOTE [PercentileClip state]: one fp64 vector on the device:
//   [0] steps taken, [1] last norm (as clip_grad_norm_ returns it), [2] last threshold (inf
//   while the history is empty), [3] last clip coefficient, [4, 4 + history_length) the last
//   history_length norms as a ring (step t writes slot t % history_length).
// The reference (autoclip 0.2.1, QuantileClip with global_threshold=True) keeps the history as
// `torch.hstack` of an fp32 `torch.Tensor([])` and the returned norms, i.e. in the promotion of
// fp32 and the gradients' dtype; those values are exact in fp64, and the quantile is taken
// after the cast back to that dtype, so the ring's bits are the reference's history.
constexpr int64_t kHeader = 4;

// Args: [quantile, history_length].
enum Arg : size_t { kQuantile, kHistoryLength, kNumArgs };

int64_t state_size(c10::ArrayRef<double> args) {
  return kHeader + static_cast<int64_t>(args[kHistoryLength]);
}

void check(c10::ArrayRef<double> args) {
  TORCH_CHECK_VALUE(args.size() == kNumArgs, "percentile guard: ", kNumArgs, " args, got ",
                    args.size());
  // autoclip's checks and messages (`not (0 <= q <= 1)` also refuses nan).
  TORCH_CHECK_VALUE(args[kQuantile] >= 0.0 && args[kQuantile] <= 1.0,
                    "QuantileClip quantile value must be between 0.0 and 1.0.");
  TORCH_CHECK_VALUE(args[kHistoryLength] > 0,
                    "QuantileClip history length must be greater than zero.");
  TORCH_CHECK_VALUE(
      args[kHistoryLength] == static_cast<double>(static_cast<int64_t>(args[kHistoryLength])),
      "QuantileClip history_length must be an int.");
}

// torch.quantile(history, q) (linear interpolation) of the valid ring entries, in `dtype`, as
// torch computes it: sorted values, rank = q * (k - 1) in `dtype`, the values at its floor and
// ceil, lerp by its fractional part; nan when a value is nan. The empty slots sort last as
// +inf and are never indexed (rank <= k - 1), so nothing depends on k on the host.
at::Tensor quantile_of_ring(const at::Tensor& ring, const at::Tensor& valid, const at::Tensor& k,
                            double q, at::ScalarType dtype) {
  const at::Tensor values = ring.to(dtype);
  const at::Tensor inf = at::full({}, std::numeric_limits<double>::infinity(), values.options());
  const at::Tensor sorted = std::get<0>(at::sort(at::where(valid, values, inf)));
  // torch: `q * last_index` with q a 0-dim tensor of the data's dtype and last_index an int;
  // k - 1 is a small integer, exact in any float dtype (0 for the empty history, whose
  // threshold is inf: it only has to index in range).
  const at::Tensor ranks = at::mul(at::scalar_tensor(q, values.options()),
                                   at::clamp_min(at::sub(k, 1.0), 0.0).to(dtype));
  const at::Tensor below = ranks.to(at::kLong);  // truncation: ranks >= 0 here
  const at::Tensor above = at::ceil(ranks).to(at::kLong);
  const at::Tensor weights = at::sub(ranks, below);
  const at::Tensor lo = at::gather(sorted, 0, below.reshape({1})).reshape({});
  const at::Tensor hi = at::gather(sorted, 0, above.reshape({1})).reshape({});
  const at::Tensor has_nan = at::any(at::logical_and(at::isnan(values), valid));
  return at::where(has_nan,
                   at::full({}, std::numeric_limits<double>::quiet_NaN(), values.options()),
                   at::lerp(lo, hi, weights));
}

Verdict decide(const at::Tensor& /*norm*/, const at::Tensor& reported_norm, const at::Tensor& state,
               c10::ArrayRef<double> args) {
  const double q = args[kQuantile];
  const int64_t length = static_cast<int64_t>(args[kHistoryLength]);
  const auto f64 = state.options();
  // The reference's history dtype: hstack of fp32 and the returned norm's dtype.
  const at::ScalarType dtype = at::promote_types(at::kFloat, reported_norm.scalar_type());

  const at::Tensor count = state.select(0, 0);
  const at::Tensor ring = state.slice(0, kHeader);
  const at::Tensor index = at::arange(length, f64);
  const at::Tensor k = at::minimum(count, at::full({}, static_cast<double>(length), f64));
  const at::Tensor valid = at::lt(index, k);

  // First step: the reference passes max_norm=torch.inf.
  const at::Tensor threshold = at::where(
      at::eq(count, 0.0), at::full({}, std::numeric_limits<double>::infinity(), f64.dtype(dtype)),
      quantile_of_ring(ring, valid, k, q, dtype));
  // clip_grad_norm_(max_norm=threshold): float(max_norm) / (total_norm + 1e-6), which torch
  // evaluates as reciprocal(total_norm + 1e-6) * max_norm in the norm's dtype (for bf16/fp16
  // the product in fp32, then rounded: what mul by a 0-dim fp32 tensor and a cast give), then
  // clamp(max=1). threshold is exact in fp32 (fp64) as float(max_norm) is.
  const at::ScalarType out = reported_norm.scalar_type();
  const at::Tensor n_out = reported_norm.to(state.device());
  const at::Tensor coef =
      at::clamp_max(at::mul(at::reciprocal(at::add(n_out, 1e-6)), threshold).to(out), 1.0)
          .to(at::kDouble);

  const at::Tensor entry = n_out.to(dtype).to(at::kDouble);
  const at::Tensor slot = at::eq(index, at::fmod(count, static_cast<double>(length)));
  Verdict verdict;
  verdict.coef = coef;
  verdict.state = at::cat({at::add(count, 1.0).reshape({1}), n_out.to(at::kDouble).reshape({1}),
                           threshold.to(at::kDouble).reshape({1}), coef.reshape({1}),
                           at::where(slot, entry, ring)});
  return verdict;
}

const Policy kPercentileClipPolicy{"percentile", Role::kClip, kNumArgs,
                                   &state_size,  &check,      &decide};
const PolicyRegistrar registrar(kPercentileClipPolicy);

}  // namespace

}  // namespace steadystep::guard
