// Meta kernels: shapes and dtypes only, for torch.compile / FakeTensor tracing.

#include "checks.h"
#include "ops/step_checks.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace steadystep::meta {

namespace {

at::Tensor total_norm_meta(at::TensorList tensors, double norm_type) {
  check_strided(tensors, "_total_norm", "tensors");
  check_kernel_dtypes(tensors, "_total_norm", "tensors");
  return at::empty({}, at::TensorOptions().dtype(accumulate_dtype(tensors)).device(at::kMeta));
}

// In-place kernels change values only: nothing to compute for meta tensors.
void in_place_meta(at::TensorList tensors, const char* op) {
  check_strided(tensors, op, "tensors");
  check_kernel_dtypes(tensors, op, "tensors");
}

void scale_meta(at::TensorList tensors, const at::Tensor& coef) {
  in_place_meta(tensors, "_scale_");
}

void clamp_meta(at::TensorList tensors, double clip_value) {
  in_place_meta(tensors, "_clamp_");
}

void adam_step_meta(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                    at::TensorList steps, double, double, double, double, double, bool amsgrad,
                    bool, bool, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                    at::TensorList master_params, c10::IntArrayRef rounding_keys) {
  check_adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad,
                  master_params, rounding_keys);
}

void sgd_step_meta(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList steps, double, double momentum, double, double, bool, bool,
                   const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                   at::TensorList master_params, c10::IntArrayRef rounding_keys) {
  check_sgd_step(params, grads, momentum_buffers, steps, momentum, master_params, rounding_keys);
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, Meta, m) {
  m.impl("_adam_step_", &adam_step_meta);
  m.impl("_sgd_step_", &sgd_step_meta);
  m.impl("_total_norm", &total_norm_meta);
  m.impl("_scale_", &scale_meta);
  m.impl("_clamp_", &clamp_meta);
}

}  // namespace steadystep::meta
