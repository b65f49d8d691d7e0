#pragma once

// Internal: the total norm before the cast to the inputs' dtype, for the ops that need the
// norm itself in fp32 (fp64 for fp64 inputs) whatever the gradients' dtype (an fp16 norm of
// finite fp16 gradients can overflow; the fused steps must not mistake that for inf).

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <vector>

namespace steadystep {

/// The `norm_type`-norm of all `tensors` as one vector, 0-dim on tensors[0]'s device, in fp32
/// (fp64 when an input is fp64). Empty list: 0. Computed without autograd history.
at::Tensor total_norm_accumulated(at::TensorList tensors, double norm_type);

/// The norm of tensors sharded over ranks, reduced with torch's functional collectives over
/// the named groups (NOTE [Sharded norm]); fp32 (fp64 for fp64 inputs), identical on every rank.
/// Without groups and with every tensor counted, the local total_norm_accumulated.
at::Tensor total_norm_sharded(at::TensorList tensors, c10::IntArrayRef parts,
                              const std::vector<std::string>& groups,
                              c10::IntArrayRef groups_per_part,
                              const std::optional<std::string>& process_group, double norm_type);

/// Raises torch's error for a non-finite total norm; reads the norm on the host (the one sync
/// that error_if_nonfinite asks for).
void check_finite_norm(const at::Tensor& total, double norm_type);

/// The dtype torch's get_total_norm returns for `tensors` (non-empty): the promotion of their
/// real dtypes (a complex tensor's norm is real).
at::ScalarType total_norm_dtype(at::TensorList tensors);

/// Bool tensor, true where `t` is inf or nan: at::isfinite negated, but with kernels for every
/// backend, Meta included.
at::Tensor nonfinite(const at::Tensor& t);

/// Every tensor of `tensors` is strided; a sparse (or other) layout raises NotImplementedError,
/// the error torch's clipping functions give for them, before anything has changed.
inline void check_dense_layout(at::TensorList tensors, const char* op, const char* arg) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK_NOT_IMPLEMENTED(tensors[i].layout() == at::kStrided, op, ": ", arg, "[", i,
                                "] has layout ", tensors[i].layout(),
                                "; only dense (strided) tensors are supported");
  }
}

}  // namespace steadystep

namespace steadystep {

/// min(1, max_norm / (total_norm + 1e-6)) computed the way torch's clip_grads_with_norm_
/// computes it (NOTE [Clip coefficient]), in total_norm's dtype and on its device.
at::Tensor clip_coefficient(double max_norm, const at::Tensor& total_norm);

}  // namespace steadystep
