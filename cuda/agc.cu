// CUDA kernel of steadystep::adaptive_clip_grad_ (AGC): a multi-tensor kernel, one block per
// unit (a row along dim 0 of a param, or a whole 0/1-dim param), up to kMaxTensors params per
// launch passed by value, so a whole model takes a few launches and no host sync.

#include "cuda/agc.cuh"
#include "cuda/block_reduce.cuh"
#include "cuda/elementwise.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cmath>

namespace steadystep::cuda {

namespace {

constexpr int kMaxTensors = 64;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

struct AgcBatch {
  const void* param[kMaxTensors];
  void* grad[kMaxTensors];
  int64_t unit_len[kMaxTensors];
  int64_t first_unit[kMaxTensors + 1];  // prefix sums of the tensors' unit counts
  int count;
};

template <NormKind Kind, typename Acc>
__device__ __forceinline__ Acc accumulate(Acc acc, Acc x, Acc p) {
  const Acc a = fabs(x);
  if constexpr (Kind == NormKind::L1) {
    return acc + a;
  } else if constexpr (Kind == NormKind::L2) {
    return acc + a * a;
  } else if constexpr (Kind == NormKind::Inf) {
    return (a > acc || isnan(a)) ? a : acc;
  } else {
    return acc + pow(a, p);
  }
}

template <NormKind Kind, typename Acc>
__device__ __forceinline__ Acc finish(Acc r, Acc p) {
  if constexpr (Kind == NormKind::L2) {
    return sqrt(r);
  } else if constexpr (Kind == NormKind::P) {
    return pow(r, Acc(1) / p);
  } else {
    return r;
  }
}

// clamp(x, min=lo) as torch's clamp_min: nan stays nan.
template <typename Acc>
__device__ __forceinline__ Acc clamp_min_keep_nan(Acc x, Acc lo) {
  return isnan(x) ? x : (x < lo ? lo : x);
}

template <typename T, NormKind Kind>
__global__ void __launch_bounds__(kThreads)
    agc_kernel(AgcBatch batch, typename OpMath<T>::type p, typename OpMath<T>::type clip_factor,
               T eps) {
  using Acc = typename OpMath<T>::type;
  __shared__ Acc ratio;
  __shared__ bool clip;
  const int64_t total = batch.first_unit[batch.count];
  for (int64_t u = blockIdx.x; u < total; u += gridDim.x) {
    int lo = 0;
    int hi = batch.count - 1;
    while (lo < hi) {  // the last tensor whose first unit is <= u
      const int mid = (lo + hi + 1) / 2;
      if (batch.first_unit[mid] <= u) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const int64_t len = batch.unit_len[lo];
    const int64_t offset = (u - batch.first_unit[lo]) * len;
    const T* w = static_cast<const T*>(batch.param[lo]) + offset;
    T* g = static_cast<T*>(batch.grad[lo]) + offset;
    Acc w_acc = Acc(0);
    Acc g_acc = Acc(0);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      w_acc = accumulate<Kind, Acc>(w_acc, static_cast<Acc>(w[i]), p);
      g_acc = accumulate<Kind, Acc>(g_acc, static_cast<Acc>(g[i]), p);
    }
    w_acc = block_reduce<Kind, Acc>(w_acc);
    __syncthreads();  // block_reduce's shared scratch is reused by the next reduction
    g_acc = block_reduce<Kind, Acc>(g_acc);
    if (threadIdx.x == 0) {
      // timm's ops, each rounded to T as torch rounds ops on T tensors.
      const auto round = [](Acc v) { return static_cast<Acc>(static_cast<T>(v)); };
      const Acc w_norm = round(finish<Kind, Acc>(w_acc, p));
      const Acc max_norm = round(clamp_min_keep_nan(w_norm, static_cast<Acc>(eps)) * clip_factor);
      const Acc g_norm = round(finish<Kind, Acc>(g_acc, p));
      clip = !(g_norm < max_norm);
      ratio =
          round(max_norm / clamp_min_keep_nan(g_norm, static_cast<Acc>(static_cast<T>(Acc(1e-6)))));
    }
    __syncthreads();
    if (clip) {
      const Acc r = ratio;
      for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
        g[i] = static_cast<T>(mul_rn(static_cast<Acc>(g[i]), r));
      }
    }
    __syncthreads();  // ratio and clip are rewritten by the next unit
  }
}

template <typename T, NormKind Kind>
void launch_typed(const std::vector<AgcTensor>& tensors, double norm_type, double clip_factor,
                  double eps, cudaStream_t stream) {
  using Acc = typename OpMath<T>::type;
  AgcBatch batch;
  batch.count = 0;
  batch.first_unit[0] = 0;
  const auto flush = [&] {
    if (batch.count == 0) {
      return;
    }
    const int64_t total = batch.first_unit[batch.count];
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(total, kMaxBlocks));
    agc_kernel<T, Kind><<<blocks, kThreads, 0, stream>>>(batch, static_cast<Acc>(norm_type),
                                                         static_cast<Acc>(clip_factor),
                                                         static_cast<T>(static_cast<Acc>(eps)));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    batch.count = 0;
  };
  for (const auto& t : tensors) {
    if (t.units == 0 || t.unit_len == 0) {
      continue;
    }
    const int k = batch.count;
    batch.param[k] = t.param;
    batch.grad[k] = t.grad;
    batch.unit_len[k] = t.unit_len;
    batch.first_unit[k + 1] = batch.first_unit[k] + t.units;
    batch.count = k + 1;
    if (batch.count == kMaxTensors) {
      flush();
    }
  }
  flush();
}

template <typename T>
void launch_kind(const std::vector<AgcTensor>& tensors, NormKind kind, double norm_type,
                 double clip_factor, double eps, cudaStream_t stream) {
  switch (kind) {
    case NormKind::L1:
      return launch_typed<T, NormKind::L1>(tensors, norm_type, clip_factor, eps, stream);
    case NormKind::L2:
      return launch_typed<T, NormKind::L2>(tensors, norm_type, clip_factor, eps, stream);
    case NormKind::Inf:
      return launch_typed<T, NormKind::Inf>(tensors, norm_type, clip_factor, eps, stream);
    case NormKind::P:
      return launch_typed<T, NormKind::P>(tensors, norm_type, clip_factor, eps, stream);
  }
}

}  // namespace

void launch_adaptive_clip_grad(DType dtype, const std::vector<AgcTensor>& tensors, NormKind kind,
                               double norm_type, double clip_factor, double eps,
                               cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return launch_kind<float>(tensors, kind, norm_type, clip_factor, eps, stream);
    case DType::Half:
      return launch_kind<__half>(tensors, kind, norm_type, clip_factor, eps, stream);
    case DType::BFloat16:
      return launch_kind<__nv_bfloat16>(tensors, kind, norm_type, clip_factor, eps, stream);
    case DType::Double:
      return launch_kind<double>(tensors, kind, norm_type, clip_factor, eps, stream);
  }
}

}  // namespace steadystep::cuda
