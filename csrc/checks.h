#pragma once

// Argument checks shared by the ops: each message names the argument and shows the value.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace steadystep {

/// Every tensor of `tensors` is strided (sparse gradients are not supported).
inline void check_strided(at::TensorList tensors, const char* op, const char* arg) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].layout() == at::kStrided, op, ": ", arg, "[", i, "] has layout ",
                tensors[i].layout(), "; only dense (strided) tensors are supported");
  }
}

/// Every tensor of `tensors` is on `device`.
inline void check_on_device(at::TensorList tensors, const c10::Device& device, const char* op,
                            const char* arg) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device() == device, op, ": ", arg, "[", i, "] is on ",
                tensors[i].device(), " but ", arg, "[0] is on ", device,
                "; this kernel takes tensors of one device");
  }
}

/// The kernels' dtypes: fp32, fp16, bf16 and fp64.
inline bool is_kernel_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 ||
         dtype == at::kDouble;
}

/// Every tensor of `tensors` has a kernel dtype.
inline void check_kernel_dtypes(at::TensorList tensors, const char* op, const char* arg) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(is_kernel_dtype(tensors[i].scalar_type()), op, ": ", arg, "[", i, "] has dtype ",
                tensors[i].scalar_type(), "; supported: float32, float16, bfloat16, float64");
  }
}

/// fp64 accumulation when any tensor is fp64, else fp32.
inline at::ScalarType accumulate_dtype(at::TensorList tensors) {
  for (const auto& t : tensors) {
    if (t.scalar_type() == at::kDouble) {
      return at::kDouble;
    }
  }
  return at::kFloat;
}

}  // namespace steadystep
