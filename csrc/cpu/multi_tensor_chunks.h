#pragma once

// NOTE [CPU multi-tensor]: the CPU twin of cuda/multi_tensor_apply.cuh. Every tensor is cut
// into chunks of kChunkSize elements, and one at::parallel_for runs over the chunks of all
// tensors at once, so a list of many small tensors costs one parallel region, not one per
// tensor.

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

namespace steadystep::cpu {

/// Elements per chunk: large enough to amortise the per-chunk dispatch, small enough to
/// balance two to a few dozen threads on a 124M-element parameter set.
constexpr int64_t kChunkSize = 32768;

/// A run of `size` elements starting at element `begin` of tensor `tensor`.
struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t size;
};

/// The chunks of a tensor list. Dense tensors (contiguous or permuted, e.g. a transposed
/// grad) are read in place in storage order; other views are read from a contiguous copy.
class TensorChunks {
 public:
  explicit TensorChunks(at::TensorList tensors) {
    tensors_.reserve(tensors.size());
    for (const auto& t : tensors) {
      if (t.numel() == 0) {
        continue;
      }
      const int64_t index = static_cast<int64_t>(tensors_.size());
      tensors_.push_back(t.is_non_overlapping_and_dense() ? t : t.contiguous());
      for (int64_t begin = 0; begin < t.numel(); begin += kChunkSize) {
        chunks_.push_back({index, begin, std::min(kChunkSize, t.numel() - begin)});
      }
    }
  }

  size_t size() const { return chunks_.size(); }
  const Chunk& chunk(int64_t i) const { return chunks_[i]; }
  const at::Tensor& tensor(int64_t i) const { return tensors_[i]; }

 private:
  std::vector<at::Tensor> tensors_;
  std::vector<Chunk> chunks_;
};

}  // namespace steadystep::cpu
