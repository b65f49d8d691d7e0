#pragma once

// Device pieces shared by the fused step kernels (fused_adam.cu, fused_sgd.cu): where a block's
// chunk lies when the tensors of one entry differ in dtype (param, state, fp32 master), how a
// param is written from its result (ParamWrite, NOTE [Stochastic rounding]), and the dispatch
// of a StepKind to the kernel's element types.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/multi_tensor_apply.cuh"
#include "ops/stochastic_rounding.h"

#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace steadystep::cuda {

/// A block's chunk: elements [start, start + size) of the launch's tensor `tensor`. `start`
/// counts from the tensor's first element, also for a tensor carried over into a later launch
/// (multi_tensor_apply keeps its chunk numbers), so `start + i` is element i's index in the
/// whole tensor, which the rounding bits are drawn for.
struct StepChunk {
  int tensor;
  int64_t start;
  int64_t size;
};

template <int Depth>
__device__ __forceinline__ StepChunk step_chunk(const TensorListMetadata<Depth>& meta) {
  StepChunk c;
  c.tensor = meta.block_to_tensor[blockIdx.x];
  c.start = static_cast<int64_t>(meta.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t remaining = meta.numel[c.tensor] - c.start;
  c.size = remaining < kChunkSize ? remaining : kChunkSize;
  return c;
}

/// The chunk's first element in `slot`, whose elements are E.
template <typename E, int Depth>
__device__ __forceinline__ E* chunk_data(const TensorListMetadata<Depth>& meta, const StepChunk& c,
                                         int slot) {
  return static_cast<E*>(meta.addresses[slot][c.tensor]) + c.start;
}

/// The step count of the chunk's tensor (the one-element fp32 tensor in `slot`).
template <int Depth>
__device__ __forceinline__ float chunk_step(const TensorListMetadata<Depth>& meta,
                                            const StepChunk& c, int slot) {
  return *static_cast<const float*>(meta.addresses[slot][c.tensor]);
}

/// Whether `p` can be read as AlignedVector<E, N> (N elements of E in one or two 16-byte
/// transactions).
template <typename E, int N>
__device__ __forceinline__ bool vector_aligned(const void* p) {
  return is_aligned<static_cast<int>(sizeof(AlignedVector<E, N>))>(p);
}

/// The param's value from its result `w` (the math type Acc): rounded to nearest (Nearest,
/// Master), or rounded stochastically (Stochastic, bf16 params) with the bits of element
/// `start + i`, `stream` being stream_at(step_stream(key, step), start) (NOTE [Stochastic
/// rounding]; a chunk never crosses a multiple of 2^32 elements, so one stream serves it).
template <typename T, ParamWrite W>
struct ParamRounding {
  uint32_t stream = 0;
  int64_t start = 0;

  template <typename Acc>
  __device__ __forceinline__ T operator()(int64_t i, Acc w) const {
    if constexpr (W == ParamWrite::Stochastic) {
      static_assert(std::is_same_v<T, __nv_bfloat16> && std::is_same_v<Acc, float>,
                    "stochastic rounding writes bf16 params from fp32");
      return __ushort_as_bfloat16(
          rounding::bf16_bits_stochastic(w, rounding::element_bits(stream, start + i)));
    } else {
      return static_cast<T>(w);
    }
  }
};

/// The rounding of the chunk's param; for Stochastic, the param's key is read from `slot`
/// (key_slot) and `step` is the step count the update uses.
template <typename T, ParamWrite W, int Depth>
__device__ __forceinline__ ParamRounding<T, W> param_rounding(const TensorListMetadata<Depth>& meta,
                                                              const StepChunk& c, int slot,
                                                              double step) {
  ParamRounding<T, W> r;
  if constexpr (W == ParamWrite::Stochastic) {
    const auto key =
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(meta.addresses[slot][c.tensor]));
    r.stream = rounding::stream_at(rounding::step_stream(key, step), c.start);
    r.start = c.start;
  }
  return r;
}

template <typename T>
struct TypeTag {
  using type = T;
};
template <ParamWrite W>
using WriteTag = std::integral_constant<ParamWrite, W>;

template <typename T, typename S, typename F>
void dispatch_param_write(ParamWrite write, F& f) {
  constexpr bool kHalfOrBf16 = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
  switch (write) {
    case ParamWrite::Nearest:
      return f(TypeTag<T>{}, TypeTag<S>{}, WriteTag<ParamWrite::Nearest>{});
    case ParamWrite::Master:
      if constexpr (kHalfOrBf16) {
        return f(TypeTag<T>{}, TypeTag<S>{}, WriteTag<ParamWrite::Master>{});
      }
      break;
    case ParamWrite::Stochastic:
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        return f(TypeTag<T>{}, TypeTag<S>{}, WriteTag<ParamWrite::Stochastic>{});
      }
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "fused step: no kernel writes this param dtype this way");
}

template <typename T, typename F>
void dispatch_state(const StepKind& kind, F& f) {
  if (kind.state == kind.param) {
    return dispatch_param_write<T, T>(kind.write, f);
  }
  if constexpr (!std::is_same_v<T, double>) {
    if (kind.state == DType::Float) {
      return dispatch_param_write<T, float>(kind.write, f);
    }
    if (kind.state == DType::BFloat16) {
      return dispatch_param_write<T, __nv_bfloat16>(kind.write, f);
    }
  }
  TORCH_INTERNAL_ASSERT(false, "fused step: no kernel for this state dtype");
}

/// Calls f(TypeTag<T>, TypeTag<S>, WriteTag<W>) with the param type T, state type S and param
/// write W of `kind` (the combinations StepKind lists).
template <typename F>
void dispatch_step_kind(const StepKind& kind, F f) {
  switch (kind.param) {
    case DType::Float:
      return dispatch_state<float>(kind, f);
    case DType::Half:
      return dispatch_state<__half>(kind, f);
    case DType::BFloat16:
      return dispatch_state<__nv_bfloat16>(kind, f);
    case DType::Double:
      return dispatch_state<double>(kind, f);
  }
  TORCH_INTERNAL_ASSERT(false, "fused step: unknown param dtype");
}

/// The entries of a launch that uses the first `Depth` slots of each `Full`-slot entry.
template <int Depth, size_t Full>
std::vector<std::array<void*, Depth>> first_slots(
    const std::vector<std::array<void*, Full>>& tensors) {
  static_assert(static_cast<size_t>(Depth) <= Full);
  std::vector<std::array<void*, Depth>> out(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    for (int d = 0; d < Depth; ++d) {
      out[i][d] = tensors[i][d];
    }
  }
  return out;
}

}  // namespace steadystep::cuda
