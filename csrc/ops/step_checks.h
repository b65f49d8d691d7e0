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

/// The dtypes a param's optimizer state may have (NOTE [Stochastic rounding] and the
/// state_dtype option): its own, or fp32 or bf16 for an fp32/fp16/bf16 param (the math is in
/// fp32 either way).
inline bool state_dtype_allowed(at::ScalarType state, at::ScalarType param) {
  return state == param ||
         (param != at::kDouble && (state == at::kFloat || state == at::kBFloat16));
}

/// `lists` are (name, tensors, required, is_state) entries aligned with `params`; a list that
/// is not required may be empty (a state the step does not use). A gradient has its param's
/// dtype; the states of one param share one dtype (state_dtype_allowed). `steps` are
/// one-element fp32 tensors on the params' device.
inline void check_step_tensors(
    const char* op, at::TensorList params,
    std::initializer_list<std::tuple<const char*, at::TensorList, bool, bool>> lists,
    at::TensorList steps) {
  check_kernel_dtypes(params, op, "params");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.layout() == at::kStrided && p.is_non_overlapping_and_dense(), op, ": params[", i,
                "] must be dense (contiguous or a permutation of it)");
    TORCH_CHECK(p.device() == params[0].device(), op, ": params[", i, "] is on ", p.device(),
                ", params[0] on ", params[0].device(), "; one device per call");
  }
  at::TensorList first_state;
  const char* first_state_name = nullptr;
  for (const auto& [name, list, required, is_state] : lists) {
    check_list_length(op, name, list, params.size(), required);
    if (list.empty()) {
      continue;
    }
    if (is_state && first_state_name == nullptr) {
      first_state = list;
      first_state_name = name;
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& t = list[i];
      const at::Tensor& p = params[i];
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, "[", i,
                  "] is sparse; only dense gradients and states are supported");
      if (is_state) {
        const at::ScalarType shared = first_state[i].scalar_type();
        TORCH_CHECK(
            state_dtype_allowed(t.scalar_type(), p.scalar_type()) && t.scalar_type() == shared, op,
            ": ", name, "[", i, "] is ", t.scalar_type(), " for a ", p.scalar_type(),
            " param whose ", first_state_name, " is ", shared,
            "; a param's states share one dtype: its own, or float32 or bfloat16 for a "
            "float32/float16/bfloat16 param");
      }
      TORCH_CHECK(
          t.device() == p.device() && (is_state || t.scalar_type() == p.scalar_type()) &&
              (p.sym_numel() == 0 ? t.sym_sizes() == p.sym_sizes() : same_memory_walk(t, p)),
          op, ": ", name, "[", i, "] (", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
          ", strides ", t.strides(), ") must match its param (", p.scalar_type(), " ", p.sizes(),
          " on ", p.device(), ", strides ", p.strides(),
          ") in dtype (a state: see above), device, shape and the strides of every dimension of "
          "size > 1; "
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

/// Param i's master weights: float32, laid out as its param, which is float16 or bfloat16.
inline void check_master(const char* op, size_t i, const at::Tensor& m, const at::Tensor& p) {
  TORCH_CHECK(p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16, op, ": params[", i,
              "] is ", p.scalar_type(),
              "; master weights are kept for float16/bfloat16 params only");
  TORCH_CHECK(m.layout() == at::kStrided && m.device() == p.device() &&
                  m.scalar_type() == at::kFloat &&
                  (p.sym_numel() == 0 ? m.sym_sizes() == p.sym_sizes() : same_memory_walk(m, p)),
              op, ": master_params[", i, "] (", m.scalar_type(), " ", m.sizes(), " on ", m.device(),
              ", strides ", m.strides(), ") must be float32 and match its param (", p.scalar_type(),
              " ", p.sizes(), " on ", p.device(), ", strides ", p.strides(),
              ") in device, shape and the strides of every dimension of size > 1");
}

/// Masters and rounding keys of a step kernel: `masters` empty, or one fp32 master per fp16/bf16
/// param laid out as it; `rounding_keys` empty, or one per param, and not with masters (a
/// master carries the precision that stochastic rounding would keep).
inline void check_precision(const char* op, at::TensorList params, at::TensorList masters,
                            c10::IntArrayRef rounding_keys) {
  check_list_length(op, "master_params", masters, params.size(), false);
  TORCH_CHECK(rounding_keys.empty() || rounding_keys.size() == params.size(), op,
              ": rounding_keys has ", rounding_keys.size(), " keys but params has ", params.size(),
              "; one key per param, or none (round to nearest)");
  TORCH_CHECK(masters.empty() || rounding_keys.empty(), op,
              ": rounding_keys and master_params exclude each other; a param with a master is "
              "rounded to nearest from it");
  for (size_t i = 0; i < masters.size(); ++i) {
    check_master(op, i, masters[i], params[i]);
  }
}

/// The checks of every `_adam_step_` kernel (CPU, CUDA, Meta): max_exp_avg_sqs is read only
/// with amsgrad.
inline void check_adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                            at::TensorList steps, bool amsgrad, at::TensorList masters,
                            c10::IntArrayRef rounding_keys) {
  check_step_tensors("_adam_step_", params,
                     {{"grads", grads, true, false},
                      {"exp_avgs", exp_avgs, true, true},
                      {"exp_avg_sqs", exp_avg_sqs, true, true},
                      {"max_exp_avg_sqs", max_exp_avg_sqs, amsgrad, true}},
                     steps);
  check_precision("_adam_step_", params, masters, rounding_keys);
}

/// The checks of every `_sgd_step_` kernel (CPU, CUDA, Meta): momentum_buffers is read only
/// with momentum.
inline void check_sgd_step(at::TensorList params, at::TensorList grads,
                           at::TensorList momentum_buffers, at::TensorList steps, double momentum,
                           at::TensorList masters, c10::IntArrayRef rounding_keys) {
  check_step_tensors(
      "_sgd_step_", params,
      {{"grads", grads, true, false}, {"momentum_buffers", momentum_buffers, momentum != 0, true}},
      steps);
  check_precision("_sgd_step_", params, masters, rounding_keys);
}

}  // namespace steadystep
