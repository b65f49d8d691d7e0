// CUDA registration of steadystep::adaptive_clip_grad_: argument checks, then the AGC kernel
// per dtype. No host sync: the norms, the decision and the scale never leave the device.

#include "cuda/agc.cuh"
#include "cuda/dtype_buckets.h"
#include "ops/agc_checks.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace steadystep::cuda {

namespace {

void adaptive_clip_grad_cuda(at::TensorList params, at::TensorList grads, double clip_factor,
                             double eps, double norm_type) {
  const NormKind kind = check_adaptive_clip_grad(params, grads, clip_factor, eps, norm_type);
  if (grads.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(grads[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<AgcTensor> by_dtype[DtypeBuckets::kCount];
  // Units are rows of the logical layout: other layouts (channels_last, views) go through
  // contiguous copies (stream-ordered, so they live until the kernel has read them), and the
  // clipped copy is written back after the kernel.
  std::vector<at::Tensor> keep;
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].numel() == 0) {
      continue;
    }
    const at::Tensor param = params[i].contiguous();
    at::Tensor grad = grads[i];
    if (!grad.is_contiguous()) {
      grad = grad.contiguous();
      write_back.emplace_back(grads[i], grad);
    }
    keep.push_back(param);
    const int64_t units = agc_units(grad);
    by_dtype[static_cast<int>(kernel_dtype(grad.scalar_type()))].push_back(
        {param.const_data_ptr(), grad.mutable_data_ptr(), units, grad.numel() / units});
  }
  for (int d = 0; d < DtypeBuckets::kCount; ++d) {
    if (!by_dtype[d].empty()) {
      launch_adaptive_clip_grad(static_cast<DType>(d), by_dtype[d], kind, norm_type, clip_factor,
                                eps, stream);
    }
  }
  for (auto& [dst, src] : write_back) {
    dst.copy_(src);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CUDA, m) {
  m.impl("adaptive_clip_grad_", &adaptive_clip_grad_cuda);
}

}  // namespace steadystep::cuda
