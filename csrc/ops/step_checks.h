#pragma once

// Checks shared by the CPU and CUDA registrations of the fused step kernels: every per-param
// tensor matches its param (device, dtype, shape, layout), so one flat pass can update them.

#include "checks.h"

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <utility>

namespace steadystep {

/// `lists` are (name, tensors) pairs aligned with `params`; an empty list stands for a state
/// the step does not use. `steps` are one-element fp32 tensors on the params' device.
inline void check_step_tensors(const char* op, at::TensorList params,
                               std::initializer_list<std::pair<const char*, at::TensorList>> lists,
                               at::TensorList steps) {
  check_kernel_dtypes(params, op, "params");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.layout() == at::kStrided && p.is_non_overlapping_and_dense(), op, ": params[", i,
                "] must be dense (contiguous or a permutation of it)");
    TORCH_CHECK(p.device() == params[0].device(), op, ": params[", i, "] is on ", p.device(),
                ", params[0] on ", params[0].device(), "; one device per call");
  }
  for (const auto& [name, list] : lists) {
    if (list.empty()) {
      continue;
    }
    TORCH_CHECK(list.size() == params.size(), op, ": ", list.size(), " ", name, " for ",
                params.size(), " params");
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& t = list[i];
      const at::Tensor& p = params[i];
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, "[", i,
                  "] is sparse; only dense gradients and states are supported");
      TORCH_CHECK(t.device() == p.device() && t.scalar_type() == p.scalar_type() &&
                      t.sizes() == p.sizes() && t.strides() == p.strides(),
                  op, ": ", name, "[", i, "] (", t.scalar_type(), " ", t.sizes(), " on ",
                  t.device(), ", strides ", t.strides(), ") must match its param (",
                  p.scalar_type(), " ", p.sizes(), " on ", p.device(), ", strides ", p.strides(),
                  ")");
    }
  }
  TORCH_CHECK(steps.size() == params.size(), op, ": ", steps.size(), " steps for ", params.size(),
              " params");
  for (size_t i = 0; i < steps.size(); ++i) {
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].scalar_type() == at::kFloat &&
                    steps[i].device() == params[i].device(),
                op, ": steps[", i, "] must be a one-element float32 tensor on ",
                params[i].device());
  }
}

/// The checks of every `_adam_step_` kernel (CPU, CUDA, Meta).
inline void check_adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                            at::TensorList steps, bool amsgrad) {
  check_step_tensors("_adam_step_", params,
                     {{"grads", grads},
                      {"exp_avgs", exp_avgs},
                      {"exp_avg_sqs", exp_avg_sqs},
                      {"max_exp_avg_sqs", max_exp_avg_sqs}},
                     steps);
  TORCH_CHECK(!amsgrad || max_exp_avg_sqs.size() == params.size(),
              "_adam_step_: amsgrad needs max_exp_avg_sqs");
}

/// The checks of every `_sgd_step_` kernel (CPU, CUDA, Meta).
inline void check_sgd_step(at::TensorList params, at::TensorList grads,
                           at::TensorList momentum_buffers, at::TensorList steps, double momentum) {
  check_step_tensors("_sgd_step_", params,
                     {{"grads", grads}, {"momentum_buffers", momentum_buffers}}, steps);
  TORCH_CHECK(momentum == 0 || momentum_buffers.size() == params.size(),
              "_sgd_step_: momentum needs momentum_buffers");
}

}  // namespace steadystep
