// CUDA registration of steadystep::_total_norm: groups the tensors by dtype, sizes the
// partials workspace by chunk count, and launches on the current stream. No host sync.

#include "checks.h"
#include "cuda/dtype_buckets.h"
#include "cuda/total_norm.cuh"
#include "ops/norm_kind.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <vector>

namespace steadystep::cuda {

namespace {

at::Tensor total_norm_cuda(at::TensorList tensors, double norm_type) {
  NormKind kind;
  TORCH_CHECK(kernel_norm_kind(norm_type, &kind), "_total_norm: norm_type must be > 0 or inf, got ",
              norm_type);
  TORCH_CHECK(!tensors.empty(), "_total_norm: needs at least one tensor on the CUDA device");
  check_strided(tensors, "_total_norm", "tensors");
  check_kernel_dtypes(tensors, "_total_norm", "tensors");
  const c10::Device device = tensors[0].device();
  check_on_device(tensors, device, "_total_norm", "tensors");
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  // Non-dense views are read from a contiguous copy; `keep` holds them until the launches
  // are queued (the caching allocator orders their reuse on this stream).
  std::vector<at::Tensor> keep;
  DtypeBuckets buckets;
  int64_t total_chunks = 0;
  for (const auto& t : tensors) {
    buckets.add(
        t.is_non_overlapping_and_dense() || t.numel() == 0 ? t : keep.emplace_back(t.contiguous()));
    total_chunks += norm_chunks(t.numel());
  }

  const at::ScalarType acc_dtype = accumulate_dtype(tensors);
  const bool double_acc = acc_dtype == at::kDouble;
  const auto options = at::TensorOptions().dtype(acc_dtype).device(device);
  at::Tensor partials = at::empty({total_chunks}, options);
  at::Tensor out = at::empty({}, options);
  int64_t first_chunk = 0;
  for (int d = 0; d < DtypeBuckets::kCount; ++d) {
    if (buckets.data[d].empty()) {
      continue;
    }
    launch_norm_partials(static_cast<DType>(d), kind, norm_type, buckets.data[d], buckets.numel[d],
                         partials.data_ptr(), double_acc, first_chunk, stream);
    for (int64_t n : buckets.numel[d]) {
      first_chunk += norm_chunks(n);
    }
  }
  launch_norm_finalize(kind, norm_type, partials.const_data_ptr(), total_chunks, out.data_ptr(),
                       double_acc, stream);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CUDA, m) {
  m.impl("_total_norm", &total_norm_cuda);
}

}  // namespace steadystep::cuda
