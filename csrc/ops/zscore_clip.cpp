// The ZScoreClip composite op (ZClip's algorithm, decided on the device) and its public C++
// function. Written with ATen ops only, so it serves CPU, CUDA and Meta with no kernel of its
// own; the gradients are scaled by the _scale_ kernels, as clip_grads_with_norm_ does.

#include <steadystep/guard.h>

#include "checks.h"
#include "ops/grouping.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

namespace steadystep {

namespace {

// NOTE [ZScoreClip state]: one fp64 vector on the device, so that a step is a handful of
// element-wise ops and a single copy_ back, and a checkpoint is one tensor:
//   [0] steps taken, [1] EMA mean, [2] EMA variance, [3] last norm, [4] last clip
//   coefficient, [5] last spike flag (1: the norm was clipped to the z-score threshold),
//   [6, 6 + buffer) the warmup norms.
// fp64 because the reference keeps these statistics in Python floats.
constexpr int64_t kHeader = 6;

void check_options(double alpha, double z_thresh, c10::string_view mode,
                   c10::string_view clip_option) {
  TORCH_CHECK_VALUE(mode == "zscore" || mode == "percentile",
                    "mode must be either 'zscore' or 'percentile'.");
  TORCH_CHECK_VALUE(mode != "zscore" || clip_option == "mean" || clip_option == "adaptive_scaling",
                    "For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.");
  TORCH_CHECK_VALUE(alpha >= 0 && alpha <= 1, "zscore_clip_: alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK_VALUE(z_thresh > 0, "zscore_clip_: z_thresh must be > 0, got ", z_thresh);
}

at::Tensor zscore_clip_composite(at::TensorList grads, const at::Tensor& state, double alpha,
                                 double z_thresh, std::optional<double> max_grad_norm, double eps,
                                 int64_t warmup_steps, c10::string_view mode,
                                 c10::string_view clip_option, double clip_factor,
                                 bool skip_update_on_spike,
                                 const std::optional<at::Tensor>& total_norm) {
  at::NoGradGuard no_grad;
  check_options(alpha, z_thresh, mode, clip_option);
  const int64_t buffer = zscore_clip_buffer_size(warmup_steps);
  TORCH_CHECK(state.dim() == 1 && state.scalar_type() == at::kDouble &&
                  state.sym_size(0) == kHeader + buffer,
              "zscore_clip_: state must be a 1-D float64 tensor of ", kHeader + buffer,
              " elements for warmup_steps=", warmup_steps, " (zscore_clip_state), got ",
              state.scalar_type(), " ", state.sizes());
  check_dense_layout(grads, "zscore_clip_", "grads");
  const auto f64 = state.options();

  // The norm as it enters the statistics (fp32, fp64 for fp64 grads) and as torch's
  // clip_grad_norm_ would return it (the grads' dtype), which the warmup clipping uses.
  at::Tensor norm_acc;
  at::Tensor norm_out;
  if (total_norm.has_value()) {
    TORCH_CHECK(total_norm->sym_numel() == 1, "zscore_clip_: total_norm must hold one value, got ",
                total_norm->sizes());
    norm_acc = total_norm->reshape({});
    norm_out = norm_acc;
  } else if (grads.empty()) {
    norm_acc = at::zeros({}, f64.dtype(at::kFloat));
    norm_out = norm_acc;
  } else {
    norm_acc = total_norm_accumulated(grads, 2.0);
    norm_out = norm_acc.to(total_norm_dtype(grads));
  }
  const at::Tensor n = norm_acc.to(f64);

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
  const at::Tensor coef_warm =
      max_grad_norm.has_value()
          ? clip_coefficient(*max_grad_norm, norm_out.to(state.device())).to(at::kDouble)
          : one;

  // After warmup: the threshold from the statistics before this step, in the reference's
  // order of operations (each op rounds as Python's float arithmetic does).
  // `var ** 0.5` in the reference is C's pow(var, 0.5); at::sqrt's CPU kernel is not always
  // correctly rounded in fp64 and pow with a scalar exponent becomes that sqrt, while pow with
  // a tensor exponent calls pow() per element, and so gives the reference's bits.
  const at::Tensor std_dev = at::pow(var, at::full({}, 0.5, f64));
  at::Tensor spike;
  at::Tensor threshold;
  if (mode == "percentile") {
    threshold = at::add(mean, at::mul(std_dev, z_thresh));
    spike = at::gt(n, threshold);
  } else {
    const at::Tensor z = at::div(at::sub(n, mean), at::add(std_dev, eps));
    spike = at::gt(z, z_thresh);
    if (clip_option == "adaptive_scaling") {
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
  state.copy_(
      at::cat({at::add(count, 1.0).reshape({1}), new_mean.reshape({1}), new_var.reshape({1}),
               n.reshape({1}), coef.reshape({1}), new_spike.reshape({1}), buf_new}));

  // Scale as clip_grads_with_norm_ does: the multi-tensor kernel per device (it reads the
  // coefficient in each tensor's opmath type, as a Python float multiplier is read), ATen for
  // the tensors it does not take.
  if (!grads.empty()) {
    static auto scale = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("steadystep::_scale_", "")
                            .typed<void(at::TensorList, const at::Tensor&)>();
    DeviceGroups groups;
    for (const auto& g : grads) {
      groups.add(g);
    }
    for (size_t i = 0; i < groups.devices.size(); ++i) {
      const at::Tensor c = coef.to(groups.devices[i]);
      std::vector<at::Tensor> kernel;
      for (const auto& g : groups.tensors[i]) {
        // The reference multiplies by a Python float, which torch reads in fp32 for bf16/fp16
        // data; the kernel (torch's foreach_mul_ by a tensor) reads it in the data's dtype.
        // ATen's mul_ by a 0-dim tensor reads it as the reference does (on CPU).
        if (in_place_kernel_tensor(g) && !at::isReducedFloatingType(g.scalar_type())) {
          kernel.push_back(g);
        } else {
          g.mul_(c);
        }
      }
      if (!kernel.empty()) {
        scale.call(kernel, c);
      }
    }
  }
  return norm_out;
}

}  // namespace

int64_t zscore_clip_buffer_size(int64_t warmup_steps) {
  return std::max<int64_t>(warmup_steps, 1);
}

at::Tensor zscore_clip_state(int64_t warmup_steps, const at::TensorOptions& options) {
  return at::zeros({kHeader + zscore_clip_buffer_size(warmup_steps)}, options.dtype(at::kDouble));
}

at::Tensor zscore_clip_(at::TensorList grads, const at::Tensor& state,
                        const ZScoreClipOptions& options,
                        const std::optional<at::Tensor>& total_norm) {
  static auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::zscore_clip_", "")
          .typed<at::Tensor(at::TensorList, const at::Tensor&, double, double,
                            std::optional<double>, double, int64_t, c10::string_view,
                            c10::string_view, double, bool, const std::optional<at::Tensor>&)>();
  return handle.call(grads, state, options.alpha(), options.z_thresh(), options.max_grad_norm(),
                     options.eps(), options.warmup_steps(), options.mode(), options.clip_option(),
                     options.clip_factor(), options.skip_update_on_spike(), total_norm);
}

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("zscore_clip_", &zscore_clip_composite);
}

}  // namespace steadystep
