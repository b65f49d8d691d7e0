#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace steadystep {

/// The `norm_type`-norm of all `tensors` taken together as one vector, with the semantics of
/// `torch.nn.utils.get_total_norm` (the norm of the per-tensor norms, same order): p > 0, inf,
/// and any order torch::linalg::vector_norm takes (p = 0 counts the tensors holding a nonzero);
/// an empty list gives 0. Returns a 0-dim tensor on `tensors[0]`'s device with the promoted
/// real dtype of the inputs (complex tensors give a real norm), accumulated in fp32 (fp64 for
/// fp64 inputs), without autograd history (torch computes it under no_grad). Meta tensors give
/// a meta result. Sparse tensors raise NotImplementedError, as torch's.
///
/// Promise: no host-device synchronisation (LibTorch's clip_grad_norm_ returns a double and so
/// waits for the GPU), except for the `error_if_nonfinite` check, which has to read the norm.
at::Tensor get_total_norm(at::TensorList tensors, double norm_type = 2.0,
                          bool error_if_nonfinite = false);

/// Scales the gradients of `parameters` in place by min(1, max_norm / (total_norm + 1e-6)),
/// with the semantics of `torch.nn.utils.clip_grads_with_norm_` (the coefficient is computed
/// as torch computes it, so clipped gradients equal torch's). Parameters without a gradient
/// are skipped. `total_norm` may live on any device; nothing is read back to the host, and
/// when no clipping is needed the CUDA kernel touches no gradient memory.
void clip_grads_with_norm_(at::TensorList parameters, double max_norm,
                           const at::Tensor& total_norm);

/// `get_total_norm` of the gradients of `parameters`, then `clip_grads_with_norm_`: the
/// semantics of `torch.nn.utils.clip_grad_norm_`. Returns the total norm as a 0-dim tensor on
/// the first gradient's device (LibTorch's own version returns a double, which waits for the
/// GPU). `max_norm` must be >= 0.
at::Tensor clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type = 2.0,
                           bool error_if_nonfinite = false);

/// Clamps the gradients of `parameters` in place into [-clip_value, clip_value], nan kept, as
/// `torch.nn.utils.clip_grad_value_`. `clip_value` must be >= 0. Every gradient is checked
/// before the first one changes: sparse or complex gradients raise NotImplementedError (as
/// torch's) and leave all gradients as they were.
void clip_grad_value_(at::TensorList parameters, double clip_value);

/// The defined gradients of `parameters`, in order (what the clipping functions act on).
std::vector<at::Tensor> grads_of(at::TensorList parameters);

}  // namespace steadystep
