#pragma once

// Internal: the total norm before the cast to the inputs' dtype, for the ops that need the
// norm itself in fp32 (fp64 for fp64 inputs) whatever the gradients' dtype (an fp16 norm of
// finite fp16 gradients can overflow; the fused steps must not mistake that for inf).

#include <ATen/core/Tensor.h>

namespace steadystep {

/// The `norm_type`-norm of all `tensors` as one vector, 0-dim on tensors[0]'s device, in fp32
/// (fp64 when an input is fp64). Empty list: 0.
at::Tensor total_norm_accumulated(at::TensorList tensors, double norm_type);

}  // namespace steadystep

namespace steadystep {

/// min(1, max_norm / (total_norm + 1e-6)) computed the way torch's clip_grads_with_norm_
/// computes it (NOTE [Clip coefficient]), in total_norm's dtype and on its device.
at::Tensor clip_coefficient(double max_norm, const at::Tensor& total_norm);

}  // namespace steadystep
