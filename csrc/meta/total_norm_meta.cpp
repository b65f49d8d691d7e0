// Meta kernels: shapes and dtypes only, for torch.compile / FakeTensor tracing.

#include "checks.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace steadystep::meta {

namespace {

at::Tensor total_norm_meta(at::TensorList tensors, double norm_type) {
  check_strided(tensors, "_total_norm", "tensors");
  check_kernel_dtypes(tensors, "_total_norm", "tensors");
  return at::empty({}, at::TensorOptions().dtype(accumulate_dtype(tensors)).device(at::kMeta));
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, Meta, m) {
  m.impl("_total_norm", &total_norm_meta);
}

}  // namespace steadystep::meta
