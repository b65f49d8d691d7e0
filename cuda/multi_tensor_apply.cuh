#pragma once

// NOTE [Multi-tensor apply]: one kernel launch covers many tensors of mixed sizes. Every
// tensor is cut into chunks of kChunkSize elements and each block of the grid takes one chunk.
// What a launch needs to find its chunk (tensor addresses, sizes, the block -> (tensor, chunk)
// map) travels in the kernel's parameter space, so no host -> device copy and no host sync is
// needed. When the metadata is full the launcher starts a kernel and carries the unfinished
// tensor over into the next launch. Blocks are numbered globally across launches
// (`first_chunk`), so a kernel that writes one value per chunk (the norm's partial sums) gets a
// dense array with one slot per chunk: its workspace grows with the number of chunks only.
//
// Torch-free on purpose: included by .cu files that nvcc compiles without ATen.

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace steadystep::cuda {

/// Elements one block reduces or updates.
constexpr int64_t kChunkSize = 65536;
/// Threads per block.
constexpr int kBlockSize = 512;
/// Blocks per launch.
constexpr int kMaxBlocksPerLaunch = 320;

// The metadata must stay under the classic 4 KB kernel-parameter limit. These tensor counts,
// by the number of pointers per tensor (Depth), keep it there with room for the functor's
// own arguments.
// (Depth 6 serves the optimizers: param, grad, up to three state tensors and the step; Depth 7
// adds an fp32 master or a rounding key per param, in as many bytes as Depth 6.)
constexpr int kMaxTensorsByDepth[] = {110, 64, 48, 36, 30, 24, 21};

/// Where a launch's blocks find their data. `addresses[d][i]` is the d-th pointer (grad,
/// param, state, ...) of the launch's i-th tensor, `numel[i]` its element count.
template <int Depth>
struct TensorListMetadata {
  static constexpr int kMaxTensors = kMaxTensorsByDepth[Depth - 1];
  void* addresses[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  unsigned char block_to_tensor[kMaxBlocksPerLaunch];
  int block_to_chunk[kMaxBlocksPerLaunch];
  /// Global index (over all launches) of this launch's block 0.
  int64_t first_chunk;
};

/// The chunk a block works on, resolved from the launch metadata.
template <int Depth>
struct ChunkView {
  void* base[Depth];  // each pointer already advanced to the chunk's first element
  int64_t size;       // elements in this chunk (<= kChunkSize)
  int64_t global_index;
  int tensor;  // index of the chunk's tensor in this launch (for per-tensor scalars)

  template <typename T>
  __device__ T* data(int d) const {
    return static_cast<T*>(base[d]);
  }
};

/// The chunk of this block; `T` is the element type of all Depth tensors.
template <typename T, int Depth>
__device__ __forceinline__ ChunkView<Depth> chunk_view(const TensorListMetadata<Depth>& meta) {
  ChunkView<Depth> view;
  const int tensor = meta.block_to_tensor[blockIdx.x];
  const int64_t start = static_cast<int64_t>(meta.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t remaining = meta.numel[tensor] - start;
  view.size = remaining < kChunkSize ? remaining : kChunkSize;
  view.global_index = meta.first_chunk + blockIdx.x;
  view.tensor = tensor;
#pragma unroll
  for (int d = 0; d < Depth; ++d) {
    view.base[d] = static_cast<char*>(meta.addresses[d][tensor]) + start * sizeof(T);
  }
  return view;
}

template <int Depth, typename Functor, typename... Args>
__global__ void __launch_bounds__(kBlockSize)
    multi_tensor_kernel(const __grid_constant__ TensorListMetadata<Depth> meta, Functor functor,
                        Args... args) {
  functor(meta, args...);
}

/// Number of chunks (and so of blocks) a tensor of `numel` elements takes.
inline int64_t num_chunks(int64_t numel) {
  return (numel + kChunkSize - 1) / kChunkSize;
}

/// Runs `functor(meta, args...)` on every chunk of every tensor. `addresses[i]` holds the Depth
/// pointers of tensor i, all with `numels[i]` elements; empty tensors are skipped (and take no
/// chunk index). Launches on `stream`; never synchronises.
template <int Depth, typename Functor, typename... Args>
void multi_tensor_apply(const std::vector<std::array<void*, Depth>>& addresses,
                        const std::vector<int64_t>& numels, int64_t first_chunk,
                        cudaStream_t stream, Functor functor, Args... args) {
  using Meta = TensorListMetadata<Depth>;
  Meta meta;
  meta.first_chunk = first_chunk;
  int loaded_tensors = 0;
  int loaded_blocks = 0;
  auto launch = [&] {
    multi_tensor_kernel<Depth><<<loaded_blocks, kBlockSize, 0, stream>>>(meta, functor, args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    meta.first_chunk += loaded_blocks;
    loaded_blocks = 0;
  };
  for (size_t t = 0; t < numels.size(); ++t) {
    if (numels[t] == 0) {
      continue;
    }
    for (int d = 0; d < Depth; ++d) {
      meta.addresses[d][loaded_tensors] = addresses[t][d];
    }
    meta.numel[loaded_tensors] = numels[t];
    ++loaded_tensors;
    const int64_t chunks = num_chunks(numels[t]);
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[loaded_blocks] = static_cast<unsigned char>(loaded_tensors - 1);
      meta.block_to_chunk[loaded_blocks] = static_cast<int>(c);
      ++loaded_blocks;
      const bool last_chunk = c == chunks - 1;
      const bool tensors_full = loaded_tensors == Meta::kMaxTensors && last_chunk;
      const bool blocks_full = loaded_blocks == kMaxBlocksPerLaunch;
      if (!tensors_full && !blocks_full) {
        continue;
      }
      launch();
      if (last_chunk) {
        loaded_tensors = 0;
      } else {
        // The tensor goes on in the next launch, as its tensor 0.
        for (int d = 0; d < Depth; ++d) {
          meta.addresses[d][0] = meta.addresses[d][loaded_tensors - 1];
        }
        meta.numel[0] = meta.numel[loaded_tensors - 1];
        loaded_tensors = 1;
      }
    }
  }
  if (loaded_blocks > 0) {
    launch();
  }
}

/// True when `p` is aligned to `Bytes` (the vectorised loads' requirement).
template <int Bytes>
__device__ __forceinline__ bool is_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % Bytes == 0;
}

/// `N` elements of T loaded or stored as one 16-byte transaction.
template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVector {
  T val[N];
};

}  // namespace steadystep::cuda
