#pragma once

// Launchers of the total-norm kernels, in plain types: the torch-facing side
// (total_norm_cuda.cpp) fills them in, nvcc never sees ATen.

#include "ops/norm_kind.h"

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

namespace steadystep::cuda {

/// The element types the kernels read.
enum class DType { Float, Half, BFloat16, Double };

/// Writes one partial per chunk of `data` (sum of |x|^p, or max |x| for Inf) into
/// `partials[first_chunk + k]`, k counting the chunks of the non-empty tensors in order.
/// `partials` is fp64 when `double_acc`, else fp32. `data[i]` has `numel[i]` elements of
/// `dtype`, contiguous.
void launch_norm_partials(DType dtype, NormKind kind, double p,
                          const std::vector<std::array<void*, 1>>& data,
                          const std::vector<int64_t>& numel, void* partials, bool double_acc,
                          int64_t first_chunk, cudaStream_t stream);

/// Reduces `count` partials into the norm `out[0]` (fp64 when `double_acc`, else fp32).
void launch_norm_finalize(NormKind kind, double p, const void* partials, int64_t count, void* out,
                          bool double_acc, cudaStream_t stream);

/// Chunks (one partial each) that `numel` elements take.
int64_t norm_chunks(int64_t numel);

}  // namespace steadystep::cuda
