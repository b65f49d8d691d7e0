// CUDA kernels of steadystep::_total_norm: a multi-tensor pass that writes one partial per
// chunk, then one block that reduces the partials into the norm. No memset, no host sync.

#include "cuda/block_reduce.cuh"
#include "cuda/multi_tensor_apply.cuh"
#include "cuda/total_norm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace steadystep::cuda {

namespace {

template <NormKind Kind, typename Acc>
__device__ __forceinline__ Acc accumulate(Acc acc, Acc x, Acc p) {
  if constexpr (Kind == NormKind::L1) {
    return acc + fabs(x);
  } else if constexpr (Kind == NormKind::L2) {
    return acc + x * x;
  } else if constexpr (Kind == NormKind::Inf) {
    return combine<Kind>(acc, Acc(fabs(x)));
  } else {
    return acc + pow(fabs(x), p);
  }
}

template <typename T, typename Acc>
__device__ __forceinline__ Acc to_acc(T x) {
  return static_cast<Acc>(static_cast<float>(x));
}
template <>
__device__ __forceinline__ double to_acc<double, double>(double x) {
  return x;
}

template <typename T, typename Acc, NormKind Kind>
struct NormPartialFunctor {
  __device__ void operator()(const TensorListMetadata<1>& meta, Acc* partials, Acc p) const {
    const ChunkView<1> chunk = chunk_view<T>(meta);
    const T* x = chunk.data<const T>(0);
    const int64_t n = chunk.size;
    Acc acc = 0;
    constexpr int kVec = 16 / sizeof(T);
    int64_t tail_start = 0;
    if (is_aligned<16>(x)) {
      using Vec = AlignedVector<T, kVec>;
      const int64_t nvec = n / kVec;
      const Vec* xv = reinterpret_cast<const Vec*>(x);
#pragma unroll 4
      for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        const Vec loaded = xv[v];
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          acc = accumulate<Kind>(acc, to_acc<T, Acc>(loaded.val[j]), p);
        }
      }
      tail_start = nvec * kVec;
    }
    for (int64_t i = tail_start + threadIdx.x; i < n; i += blockDim.x) {
      acc = accumulate<Kind>(acc, to_acc<T, Acc>(x[i]), p);
    }
    acc = block_reduce<Kind>(acc);
    if (threadIdx.x == 0) {
      partials[chunk.global_index] = acc;
    }
  }
};

template <typename Acc, NormKind Kind>
__global__ void norm_finalize_kernel(const Acc* partials, int64_t count, double p, Acc* out) {
  // Partials are combined in fp64 in a fixed order: the norm is deterministic.
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    acc = combine<Kind>(acc, static_cast<double>(partials[i]));
  }
  acc = block_reduce<Kind>(acc);
  if (threadIdx.x == 0) {
    if constexpr (Kind == NormKind::L2) {
      acc = sqrt(acc);
    } else if constexpr (Kind == NormKind::P) {
      acc = pow(acc, 1.0 / p);
    }
    out[0] = static_cast<Acc>(acc);
  }
}

template <typename T, typename Acc>
void launch_partials_typed(NormKind kind, double p, const std::vector<std::array<void*, 1>>& data,
                           const std::vector<int64_t>& numel, Acc* partials, int64_t first_chunk,
                           cudaStream_t stream) {
  const Acc pa = static_cast<Acc>(p);
  switch (kind) {
    case NormKind::L1:
      return multi_tensor_apply<1>(data, numel, first_chunk, stream,
                                   NormPartialFunctor<T, Acc, NormKind::L1>(), partials, pa);
    case NormKind::L2:
      return multi_tensor_apply<1>(data, numel, first_chunk, stream,
                                   NormPartialFunctor<T, Acc, NormKind::L2>(), partials, pa);
    case NormKind::Inf:
      return multi_tensor_apply<1>(data, numel, first_chunk, stream,
                                   NormPartialFunctor<T, Acc, NormKind::Inf>(), partials, pa);
    case NormKind::P:
      return multi_tensor_apply<1>(data, numel, first_chunk, stream,
                                   NormPartialFunctor<T, Acc, NormKind::P>(), partials, pa);
  }
}

template <typename Acc>
void launch_finalize_typed(NormKind kind, double p, const Acc* partials, int64_t count, Acc* out,
                           cudaStream_t stream) {
  constexpr int kThreads = 1024;
  switch (kind) {
    case NormKind::L1:
      norm_finalize_kernel<Acc, NormKind::L1><<<1, kThreads, 0, stream>>>(partials, count, p, out);
      break;
    case NormKind::L2:
      norm_finalize_kernel<Acc, NormKind::L2><<<1, kThreads, 0, stream>>>(partials, count, p, out);
      break;
    case NormKind::Inf:
      norm_finalize_kernel<Acc, NormKind::Inf><<<1, kThreads, 0, stream>>>(partials, count, p, out);
      break;
    case NormKind::P:
      norm_finalize_kernel<Acc, NormKind::P><<<1, kThreads, 0, stream>>>(partials, count, p, out);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

int64_t norm_chunks(int64_t numel) {
  return num_chunks(numel);
}

void launch_norm_partials(DType dtype, NormKind kind, double p,
                          const std::vector<std::array<void*, 1>>& data,
                          const std::vector<int64_t>& numel, void* partials, bool double_acc,
                          int64_t first_chunk, cudaStream_t stream) {
  if (double_acc) {
    auto* out = static_cast<double*>(partials);
    switch (dtype) {
      case DType::Double:
        return launch_partials_typed<double>(kind, p, data, numel, out, first_chunk, stream);
      case DType::Float:
        return launch_partials_typed<float>(kind, p, data, numel, out, first_chunk, stream);
      case DType::Half:
        return launch_partials_typed<__half>(kind, p, data, numel, out, first_chunk, stream);
      case DType::BFloat16:
        return launch_partials_typed<__nv_bfloat16>(kind, p, data, numel, out, first_chunk, stream);
    }
  } else {
    auto* out = static_cast<float*>(partials);
    switch (dtype) {
      case DType::Double:
        break;  // fp64 input always accumulates in fp64
      case DType::Float:
        return launch_partials_typed<float>(kind, p, data, numel, out, first_chunk, stream);
      case DType::Half:
        return launch_partials_typed<__half>(kind, p, data, numel, out, first_chunk, stream);
      case DType::BFloat16:
        return launch_partials_typed<__nv_bfloat16>(kind, p, data, numel, out, first_chunk, stream);
    }
  }
}

void launch_norm_finalize(NormKind kind, double p, const void* partials, int64_t count, void* out,
                          bool double_acc, cudaStream_t stream) {
  if (double_acc) {
    launch_finalize_typed<double>(kind, p, static_cast<const double*>(partials), count,
                                  static_cast<double*>(out), stream);
  } else {
    launch_finalize_typed<float>(kind, p, static_cast<const float*>(partials), count,
                                 static_cast<float*>(out), stream);
  }
}

}  // namespace steadystep::cuda
