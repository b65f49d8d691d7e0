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

// IEEE round-to-nearest operations that nvcc may neither fuse (it contracts a * b + c into an
// fma by default) nor approximate: the fused steps keep torch's roundings op by op
// (NOTE [Torch's rounding] in csrc/cpu/fused_optim_kernels.cpp).
__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}
__device__ __forceinline__ float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
__device__ __forceinline__ double add_rn(double a, double b) {
  return __dadd_rn(a, b);
}
__device__ __forceinline__ float sub_rn(float a, float b) {
  return __fsub_rn(a, b);
}
__device__ __forceinline__ double sub_rn(double a, double b) {
  return __dsub_rn(a, b);
}
__device__ __forceinline__ float div_rn(float a, float b) {
  return __fdiv_rn(a, b);
}
__device__ __forceinline__ double div_rn(double a, double b) {
  return __ddiv_rn(a, b);
}
__device__ __forceinline__ float sqrt_rn(float a) {
  return __fsqrt_rn(a);
}
__device__ __forceinline__ double sqrt_rn(double a) {
  return __dsqrt_rn(a);
}
__device__ __forceinline__ float fma_rn(float a, float b, float c) {
  return __fmaf_rn(a, b, c);
}
__device__ __forceinline__ double fma_rn(double a, double b, double c) {
  return __fma_rn(a, b, c);
}

/// torch.maximum: the larger value, NaN when either is NaN.
__device__ __forceinline__ float nan_maximum(float a, float b) {
  return (a != a || b != b) ? __int_as_float(0x7fc00000) : (a > b ? a : b);
}
__device__ __forceinline__ double nan_maximum(double a, double b) {
  return (a != a || b != b) ? __longlong_as_double(0x7ff8000000000000LL) : (a > b ? a : b);
}

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
