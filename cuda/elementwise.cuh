#pragma once

// In-place elementwise work on a chunk: 16-byte vectors where the chunk is aligned, scalars for
// the rest. `op` maps one value in the opmath type (fp32, fp64 for fp64 data).

#include "cuda/multi_tensor_apply.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace steadystep::cuda {

/// fp32 arithmetic for fp32/fp16/bf16 data, fp64 for fp64, as ATen's opmath_type.
template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};

template <typename T, typename Op>
__device__ __forceinline__ void update_chunk_in_place(T* x, int64_t n, Op op) {
  using Acc = typename OpMath<T>::type;
  constexpr int kVec = 16 / sizeof(T);
  int64_t tail_start = 0;
  if (is_aligned<16>(x)) {
    using Vec = AlignedVector<T, kVec>;
    Vec* xv = reinterpret_cast<Vec*>(x);
    const int64_t nvec = n / kVec;
#pragma unroll 2
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      Vec loaded = xv[v];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        loaded.val[j] = static_cast<T>(op(static_cast<Acc>(loaded.val[j])));
      }
      xv[v] = loaded;
    }
    tail_start = nvec * kVec;
  }
  for (int64_t i = tail_start + threadIdx.x; i < n; i += blockDim.x) {
    x[i] = static_cast<T>(op(static_cast<Acc>(x[i])));
  }
}

}  // namespace steadystep::cuda
