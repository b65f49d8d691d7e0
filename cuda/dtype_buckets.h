#pragma once

// Torch-facing helper of the CUDA registrations: a tensor list sorted into one bucket per
// kernel dtype, as raw pointers and sizes for the launchers.

#include "cuda/total_norm.cuh"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <vector>

namespace steadystep::cuda {

inline DType kernel_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return DType::Float;
    case at::kHalf:
      return DType::Half;
    case at::kBFloat16:
      return DType::BFloat16;
    case at::kDouble:
      return DType::Double;
    default:
      TORCH_CHECK(false, "steadystep: unsupported dtype ", dtype);
  }
}

/// Pointers and sizes of the non-empty tensors, by dtype (index: `DType`).
struct DtypeBuckets {
  static constexpr int kCount = 4;
  std::vector<std::array<void*, 1>> data[kCount];
  std::vector<int64_t> numel[kCount];

  /// Adds `t`, which must be dense (its storage block is read or written as is).
  void add(const at::Tensor& t) {
    if (t.numel() == 0) {
      return;
    }
    const int d = static_cast<int>(kernel_dtype(t.scalar_type()));
    data[d].push_back({const_cast<void*>(t.const_data_ptr())});
    numel[d].push_back(t.numel());
  }
};

}  // namespace steadystep::cuda
