// ZClip's algorithm as a guard policy ("zscore", NOTE [Guard policies]): the math of ZScoreClip,
// shared by the standalone zscore_clip_ op and the fused optimizers' guard. ATen ops only.

#include "guard/zscore_clip_policy.h"
#include "guard/policy.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace steadystep::guard {

namespace {

// NOTE [ZScoreClip state]: one fp64 vector on the device, so that a step is a handful of
// element-wise ops and a single copy_ back, and a checkpoint is one tensor:
//   [0] steps taken, [1] EMA mean, [2] EMA variance, [3] last norm, [4] last clip
//   coefficient, [5] last spike flag (1: the norm was clipped to the z-score threshold),
//   [6, 6 + buffer) the warmup norms.
// fp64 because the reference keeps these statistics in Python floats.
constexpr int64_t kHeader = 6;

// Args (NOTE [Guard policies]): [alpha, z_thresh, max_grad_norm | nan, eps, warmup_steps,
// mode (0 zscore, 1 percentile), clip_option (0 adaptive_scaling, 1 mean), clip_factor,
// skip_update_on_spike (0/1)].
enum Arg : size_t {
  kAlpha,
  kZThresh,
  kMaxGradNorm,
  kEps,
  kWarmupSteps,
  kMode,
  kClipOption,
  kClipFactor,
  kSkipUpdateOnSpike,
  kNumArgs
};

int64_t state_size(c10::ArrayRef<double> args) {
  return kHeader + zscore_buffer_size(static_cast<int64_t>(args[kWarmupSteps]));
}

void check(c10::ArrayRef<double> args) {
  TORCH_CHECK_VALUE(args.size() == kNumArgs, "zscore guard: ", kNumArgs, " args, got ",
                    args.size());
  const double alpha = args[kAlpha], z_thresh = args[kZThresh];
  TORCH_CHECK_VALUE(args[kMode] == 0 || args[kMode] == 1,
                    "mode must be either 'zscore' or 'percentile'.");
  TORCH_CHECK_VALUE(args[kClipOption] == 0 || args[kClipOption] == 1,
                    "For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.");
  TORCH_CHECK_VALUE(alpha >= 0 && alpha <= 1, "zscore_clip_: alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK_VALUE(z_thresh > 0, "zscore_clip_: z_thresh must be > 0, got ", z_thresh);
  TORCH_CHECK_VALUE(
      args[kWarmupSteps] == static_cast<double>(static_cast<int64_t>(args[kWarmupSteps])),
      "zscore_clip_: warmup_steps must be an integer, got ", args[kWarmupSteps]);
}

Verdict decide(const at::Tensor& norm, const at::Tensor& reported_norm, const at::Tensor& state,
               c10::ArrayRef<double> args) {
  const double alpha = args[kAlpha], z_thresh = args[kZThresh], eps = args[kEps],
               clip_factor = args[kClipFactor];
  const std::optional<double> max_grad_norm =
      has_value(args[kMaxGradNorm]) ? std::optional<double>(args[kMaxGradNorm]) : std::nullopt;
  const bool percentile_mode = args[kMode] == 1;
  const bool mean_option = args[kClipOption] == 1;
  const bool skip_update_on_spike = args[kSkipUpdateOnSpike] != 0;
  const int64_t buffer = zscore_buffer_size(static_cast<int64_t>(args[kWarmupSteps]));
  const auto f64 = state.options();
  Verdict verdict;

  const at::Tensor n = norm.to(f64);

  const at::Tensor count = state.select(0, 0);
  const at::Tensor mean = state.select(0, 1);
  const at::Tensor var = state.select(0, 2);
  const at::Tensor buf = state.slice(0, kHeader);
  const at::Tensor one = at::ones({}, f64);

  // Warmup (zclip: the first max(warmup_steps, 1) norms go to a buffer, the last of them
  // initialises the EMA as the buffer's mean and population variance; the grads are clipped
  // as torch.nn.utils.clip_grad_norm_(max_grad_norm) clips them).
  const at::Tensor warm = at::lt(count, static_cast<double>(buffer));
  const at::Tensor init = at::eq(count, static_cast<double>(buffer - 1));
  const at::Tensor slot = at::eq(at::arange(buffer, f64), count);
  const at::Tensor buf_new = at::where(at::logical_and(slot, warm), n, buf);
  // Python's sum() over the buffer is a left fold; cumsum's last element is that fold on CPU
  // (on CUDA a scan: the same up to the order of the additions).
  const auto fold = [](const at::Tensor& t) { return at::cumsum(t, 0).select(0, -1); };
  const at::Tensor buf_mean = at::div(fold(buf_new), static_cast<double>(buffer));
  const at::Tensor buf_var =
      at::div(fold(at::square(at::sub(buf_new, buf_mean))), static_cast<double>(buffer));
  const at::Tensor coef_warm = max_grad_norm.has_value()
                                   ? clip_coefficient(*max_grad_norm, reported_norm).to(at::kDouble)
                                   : one;

  // After warmup: the threshold from the statistics before this step, in the reference's
  // order of operations (each op rounds as Python's float arithmetic does).
  // `var ** 0.5` in the reference is C's pow(var, 0.5); at::sqrt's CPU kernel is not always
  // correctly rounded in fp64 and pow with a scalar exponent becomes that sqrt, while pow with
  // a tensor exponent calls pow() per element, and so gives the reference's bits.
  const at::Tensor std_dev = at::pow(var, at::full({}, 0.5, f64));
  at::Tensor spike;
  at::Tensor threshold;
  if (percentile_mode) {
    threshold = at::add(mean, at::mul(std_dev, z_thresh));
    spike = at::gt(n, threshold);
  } else {
    const at::Tensor z = at::div(at::sub(n, mean), at::add(std_dev, eps));
    spike = at::gt(z, z_thresh);
    if (!mean_option) {
      const at::Tensor eta = at::div(z, z_thresh);
      threshold = at::mul(at::add(mean, at::div(at::mul(std_dev, z_thresh), eta)), clip_factor);
    } else {
      threshold = mean;
    }
  }
  // The value the EMA sees, and the clip-to value before the max_grad_norm cap: the threshold
  // on a spike, else the norm itself.
  const at::Tensor effective = at::where(spike, threshold, n);
  const at::Tensor clip_to = max_grad_norm.has_value()
                                 ? at::minimum(effective, at::full({}, *max_grad_norm, f64))
                                 : effective;
  const at::Tensor coef_post =
      at::where(at::gt(n, clip_to), at::div(clip_to, at::add(n, 1e-6)), one);
  const at::Tensor mean_ema = at::add(at::mul(mean, alpha), at::mul(effective, 1.0 - alpha));
  const at::Tensor var_ema =
      at::add(at::mul(var, alpha), at::mul(at::square(at::sub(effective, mean_ema)), 1.0 - alpha));
  const at::Tensor update =
      skip_update_on_spike ? at::logical_not(spike) : at::ones({}, f64.dtype(at::kBool));

  const at::Tensor new_mean =
      at::where(warm, at::where(init, buf_mean, mean), at::where(update, mean_ema, mean));
  const at::Tensor new_var =
      at::where(warm, at::where(init, buf_var, var), at::where(update, var_ema, var));
  const at::Tensor coef = at::where(warm, coef_warm, coef_post);
  const at::Tensor new_spike = at::logical_and(at::logical_not(warm), spike).to(at::kDouble);
  verdict.coef = coef;
  verdict.state =
      at::cat({at::add(count, 1.0).reshape({1}), new_mean.reshape({1}), new_var.reshape({1}),
               n.reshape({1}), coef.reshape({1}), new_spike.reshape({1}), buf_new});

  return verdict;
}

const Policy kZScoreClipPolicy{"zscore", Role::kClip, kNumArgs, &state_size, &check, &decide};
const PolicyRegistrar registrar(kZScoreClipPolicy);

}  // namespace

int64_t zscore_buffer_size(int64_t warmup_steps) {
  return std::max<int64_t>(warmup_steps, 1);
}

std::vector<double> zscore_args(double alpha, double z_thresh, std::optional<double> max_grad_norm,
                                double eps, int64_t warmup_steps, c10::string_view mode,
                                c10::string_view clip_option, double clip_factor,
                                bool skip_update_on_spike) {
  TORCH_CHECK_VALUE(mode == "zscore" || mode == "percentile",
                    "mode must be either 'zscore' or 'percentile'.");
  TORCH_CHECK_VALUE(mode != "zscore" || clip_option == "mean" || clip_option == "adaptive_scaling",
                    "For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.");
  return {alpha,
          z_thresh,
          max_grad_norm.value_or(std::numeric_limits<double>::quiet_NaN()),
          eps,
          static_cast<double>(warmup_steps),
          mode == "percentile" ? 1.0 : 0.0,
          clip_option == "mean" ? 1.0 : 0.0,
          clip_factor,
          skip_update_on_spike ? 1.0 : 0.0};
}

}  // namespace steadystep::guard
