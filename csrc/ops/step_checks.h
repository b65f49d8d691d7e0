#pragma once

// Checks shared by the CPU and CUDA registrations of the fused step kernels: every per-param
// tensor matches its param (device, dtype, shape, memory walk), and every list the step reads
// holds one tensor per param, so one flat pass can update them.

#include "checks.h"

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <tuple>

namespace steadystep {

/// Every list the step reads holds one tensor per param: `list` must have `n` entries when
/// `required`, else `n` or none (an unused state). Checked before any list is indexed.
inline void check_list_length(const char* op, const char* name, at::TensorList list, size_t n,
                              bool required) {
  TORCH_CHECK(list.size() == n || (!required && list.empty()), op, ": ", name, " has ", list.size(),
              " tensors but params has ", n, "; ", name,
              required ? " must hold one tensor per param"
                       : " must hold one tensor per param, or be empty when unused");
}

/// Whether `t` can be walked in memory order alongside `p`: the same sizes, and the same
/// strides in every dimension of size > 1 (a size-1 dimension adds nothing to an offset, so
/// its stride is free, as autograd leaves it: a (3, 1) param may get a grad with strides
/// [1, 3]). With `p` non-overlapping and dense, element k of one flat pass over each is then
/// the same element of both.
/// Sizes are read as SymInts: under torch.compile's dynamic shapes (fake tensors) a plain
/// `sizes()` or `numel()` throws.
inline bool same_memory_walk(const at::Tensor& t, const at::Tensor& p) {
  if (t.sym_sizes() != p.sym_sizes()) {
    return false;
  }
  for (int64_t d = 0; d < p.dim(); ++d) {
    if (p.sym_size(d) > 1 && t.sym_stride(d) != p.sym_stride(d)) {
      return false;
    }
  }
  return true;
}

/// `lists` are (name, tensors, required) entries aligned with `params`; a list that is not
/// required may be empty (a state the step does not use). `steps` are one-element fp32 tensors
/// on the params' device.
inline void check_step_tensors(
    const char* op, at::TensorList params,
    std::initializer_list<std::tuple<const char*, at::TensorList, bool>> lists,
    at::TensorList steps) {
  check_kernel_dtypes(params, op, "params");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.layout() == at::kStrided && p.is_non_overlapping_and_dense(), op, ": params[", i,
                "] must be dense (contiguous or a permutation of it)");
    TORCH_CHECK(p.device() == params[0].device(), op, ": params[", i, "] is on ", p.device(),
                ", params[0] on ", params[0].device(), "; one device per call");
  }
  for (const auto& [name, list, required] : lists) {
    check_list_length(op, name, list, params.size(), required);
    if (list.empty()) {
      continue;
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& t = list[i];
      const at::Tensor& p = params[i];
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, "[", i,
                  "] is sparse; only dense gradients and states are supported");
      TORCH_CHECK(
          t.device() == p.device() && t.scalar_type() == p.scalar_type() &&
              (p.sym_numel() == 0 ? t.sym_sizes() == p.sym_sizes() : same_memory_walk(t, p)),
          op, ": ", name, "[", i, "] (", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
          ", strides ", t.strides(), ") must match its param (", p.scalar_type(), " ", p.sizes(),
          " on ", p.device(), ", strides ", p.strides(),
          ") in dtype, device, shape and the strides of every dimension of size > 1; "
          "stage other layouts through a copy laid out like the param");
    }
  }
  check_list_length(op, "steps", steps, params.size(), true);
  for (size_t i = 0; i < steps.size(); ++i) {
    TORCH_CHECK(steps[i].sym_numel() == 1 && steps[i].scalar_type() == at::kFloat &&
                    steps[i].device() == params[i].device(),
                op, ": steps[", i, "] must be a one-element float32 tensor on ",
                params[i].device());
  }
}

/// The checks of every `_adam_step_` kernel (CPU, CUDA, Meta): max_exp_avg_sqs is read only
/// with amsgrad.
inline void check_adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                            at::TensorList steps, bool amsgrad) {
  check_step_tensors("_adam_step_", params,
                     {{"grads", grads, true},
                      {"exp_avgs", exp_avgs, true},
                      {"exp_avg_sqs", exp_avg_sqs, true},
                      {"max_exp_avg_sqs", max_exp_avg_sqs, amsgrad}},
                     steps);
}

/// The checks of every `_sgd_step_` kernel (CPU, CUDA, Meta): momentum_buffers is read only
/// with momentum.
inline void check_sgd_step(at::TensorList params, at::TensorList grads,
                           at::TensorList momentum_buffers, at::TensorList steps, double momentum) {
  check_step_tensors(
      "_sgd_step_", params,
      {{"grads", grads, true}, {"momentum_buffers", momentum_buffers, momentum != 0}}, steps);
}

}  // namespace steadystep
