#pragma once

#include <ATen/core/Tensor.h>

namespace steadystep {

/// The `norm_type`-norm of all `tensors` taken together as one vector, with the semantics of
/// `torch.nn.utils.get_total_norm`: p > 0, inf (and any order torch::linalg::vector_norm takes);
/// an empty list gives 0. Returns a 0-dim tensor on `tensors[0]`'s device with the promoted
/// dtype of the inputs, accumulated in fp32 (fp64 for fp64 inputs).
///
/// Promise: no host-device synchronisation (LibTorch's clip_grad_norm_ returns a double and so
/// waits for the GPU), except for the `error_if_nonfinite` check, which has to read the norm.
at::Tensor get_total_norm(at::TensorList tensors, double norm_type = 2.0,
                          bool error_if_nonfinite = false);

}  // namespace steadystep
