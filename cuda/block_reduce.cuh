#pragma once

// Block-wide reductions for the norm kernels (sum, or max that lets nan win as torch's does).

#include "ops/norm_kind.h"

#include <cuda_runtime.h>

namespace steadystep::cuda {

template <NormKind Kind, typename Acc>
__device__ __forceinline__ Acc combine(Acc a, Acc b) {
  if constexpr (Kind == NormKind::Inf) {
    return (b > a || isnan(b)) ? b : a;
  } else {
    return a + b;
  }
}

/// Reduces `value` over the block; the result is valid in thread 0. blockDim.x must be a
/// multiple of 32 and at most 1024.
template <NormKind Kind, typename Acc>
__device__ Acc block_reduce(Acc value) {
  __shared__ Acc warp_results[32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value = combine<Kind>(value, __shfl_down_sync(0xffffffffu, value, offset));
  }
  if (lane == 0) {
    warp_results[warp] = value;
  }
  __syncthreads();
  const int warps = blockDim.x / 32;
  value = lane < warps ? warp_results[lane] : Acc(0);
  if (warp == 0) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      value = combine<Kind>(value, __shfl_down_sync(0xffffffffu, value, offset));
    }
  }
  return value;
}

}  // namespace steadystep::cuda
