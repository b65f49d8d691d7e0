// CUDA registration of steadystep::_scale_ and steadystep::_clamp_ (in-place clipping of a
// tensor list of one device, mixed dtypes). No host sync: the coefficient stays on the device.

#include "checks.h"
#include "cuda/dtype_buckets.h"
#include "cuda/scale_clamp.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace steadystep::cuda {

namespace {

DtypeBuckets in_place_buckets(at::TensorList tensors, const char* op) {
  check_strided(tensors, op, "tensors");
  check_kernel_dtypes(tensors, op, "tensors");
  check_on_device(tensors, tensors[0].device(), op, "tensors");
  DtypeBuckets buckets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].is_non_overlapping_and_dense(), op, ": tensors[", i,
                "] is not dense (a strided view); it cannot be updated in place by this kernel");
    buckets.add(tensors[i]);
  }
  return buckets;
}

void scale_cuda(at::TensorList tensors, const at::Tensor& coef) {
  if (tensors.empty()) {
    return;
  }
  DtypeBuckets buckets = in_place_buckets(tensors, "_scale_");
  TORCH_CHECK(coef.numel() == 1 && coef.device() == tensors[0].device(),
              "_scale_: coef must be a one-element tensor on ", tensors[0].device(), ", got ",
              coef.sizes(), " on ", coef.device());
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // The coefficient in each bucket's opmath type (fp32, or fp64 for fp64 data), as torch's
  // foreach_mul_ reads it. A dtype conversion is a device op: still no sync.
  at::Tensor coef_f32, coef_f64;
  for (int d = 0; d < DtypeBuckets::kCount; ++d) {
    if (buckets.data[d].empty()) {
      continue;
    }
    const bool double_coef = static_cast<DType>(d) == DType::Double;
    at::Tensor& c = double_coef ? coef_f64 : coef_f32;
    if (!c.defined()) {
      c = coef.reshape({}).to(double_coef ? at::kDouble : at::kFloat).contiguous();
    }
    launch_scale(static_cast<DType>(d), buckets.data[d], buckets.numel[d], c.const_data_ptr(),
                 double_coef, stream);
  }
}

void clamp_cuda(at::TensorList tensors, double clip_value) {
  if (tensors.empty()) {
    return;
  }
  DtypeBuckets buckets = in_place_buckets(tensors, "_clamp_");
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int d = 0; d < DtypeBuckets::kCount; ++d) {
    if (!buckets.data[d].empty()) {
      launch_clamp(static_cast<DType>(d), buckets.data[d], buckets.numel[d], clip_value, stream);
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CUDA, m) {
  m.impl("_scale_", &scale_cuda);
  m.impl("_clamp_", &clamp_cuda);
}

}  // namespace steadystep::cuda
