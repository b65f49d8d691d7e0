#pragma once

// Argument checks of steadystep::adaptive_clip_grad_, shared by its CPU, CUDA and Meta kernels so
// that every backend refuses the same inputs with the same words, before any gradient changes.

#include "checks.h"
#include "ops/norm_kind.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace steadystep {

/// Checks the arguments of adaptive_clip_grad_ and returns the norm's reduction kind.
inline NormKind check_adaptive_clip_grad(at::TensorList params, at::TensorList grads,
                                         double clip_factor, double eps, double norm_type) {
  constexpr const char* op = "adaptive_clip_grad_";
  TORCH_CHECK_VALUE(clip_factor > 0, op, ": clip_factor must be > 0, got ", clip_factor);
  TORCH_CHECK_VALUE(eps >= 0, op, ": eps must be >= 0, got ", eps);
  NormKind kind;
  TORCH_CHECK_VALUE(kernel_norm_kind(norm_type, &kind), op, ": norm_type must be > 0 or inf, got ",
                    norm_type);
  TORCH_CHECK_VALUE(params.size() == grads.size(), op,
                    ": params and grads must have the same length, got ", params.size(),
                    " params and ", grads.size(), " grads");
  check_strided(params, op, "params");
  check_strided(grads, op, "grads");
  check_kernel_dtypes(params, op, "params");
  check_kernel_dtypes(grads, op, "grads");
  if (!grads.empty()) {
    check_on_device(grads, grads[0].device(), op, "grads");
    for (size_t i = 0; i < params.size(); ++i) {
      TORCH_CHECK(params[i].device() == grads[i].device(), op, ": params[", i, "] is on ",
                  params[i].device(), " but grads[", i, "] is on ", grads[i].device(),
                  "; this kernel takes tensors of one device");
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK_VALUE(params[i].sizes() == grads[i].sizes(), op, ": grads[", i, "] has shape ",
                      grads[i].sizes(), " but params[", i, "] has shape ", params[i].sizes());
    TORCH_CHECK_VALUE(params[i].scalar_type() == grads[i].scalar_type(), op, ": grads[", i,
                      "] has dtype ", grads[i].scalar_type(), " but params[", i, "] has dtype ",
                      params[i].scalar_type());
  }
  return kind;
}

/// The units of a tensor (AGC, as timm's unitwise_norm): its rows along dim 0 when it has more
/// than one dim, else the whole tensor as one unit.
inline int64_t agc_units(const at::Tensor& t) {
  return t.dim() > 1 ? t.size(0) : 1;
}

}  // namespace steadystep
