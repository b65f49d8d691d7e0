#pragma once

// Launchers of the in-place clipping kernels, in plain types (nvcc never sees ATen).

#include "cuda/total_norm.cuh"

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

namespace steadystep::cuda {

/// x *= coef for every element of `data` (all of `dtype`), reading `coef` from device memory
/// (fp64 when `double_coef`, else fp32). A block that reads coef >= 1 returns at once: an
/// unclipped step touches no gradient memory.
void launch_scale(DType dtype, const std::vector<std::array<void*, 1>>& data,
                  const std::vector<int64_t>& numel, const void* coef, bool double_coef,
                  cudaStream_t stream);

/// x = min(max(x, -clip_value), clip_value), nan kept, for every element of `data`.
void launch_clamp(DType dtype, const std::vector<std::array<void*, 1>>& data,
                  const std::vector<int64_t>& numel, double clip_value, cudaStream_t stream);

}  // namespace steadystep::cuda
