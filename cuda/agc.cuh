#pragma once

// Launcher of the AGC kernel (steadystep::adaptive_clip_grad_), in plain types: agc_cuda.cpp
// fills it in, nvcc never sees ATen.

#include "cuda/total_norm.cuh"

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace steadystep::cuda {

/// One parameter of the AGC kernel: contiguous param and grad of `units` units of `unit_len`
/// elements each (the rows along dim 0, or one unit for ndim <= 1).
struct AgcTensor {
  const void* param;
  void* grad;
  int64_t units;
  int64_t unit_len;
};

/// Clips every unit of every grad (all of `dtype`) as timm.utils.adaptive_clip_grad does: one
/// block per unit reads its param and grad once for both norms, decides on the device, and
/// scales the grad unit in place when its norm is not below clip_factor * max(|w unit|, eps).
void launch_adaptive_clip_grad(DType dtype, const std::vector<AgcTensor>& tensors, NormKind kind,
                               double norm_type, double clip_factor, double eps,
                               cudaStream_t stream);

}  // namespace steadystep::cuda
