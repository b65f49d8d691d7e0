#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <vector>

namespace c10d {
class ProcessGroup;  // torch/csrc/distributed/c10d/ProcessGroup.hpp
}  // namespace c10d

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

/// `get_total_norm` of tensors sharded by hand over the ranks of `process_group` (ZeRO-style
/// shards, pipeline stages): each rank passes the tensors (or the parts of tensors) it holds,
/// every element held by exactly one rank, and every rank gets the norm of all of them as one
/// vector, the same value on every rank. The local norm^p (the max for inf) is all-reduced over
/// the group with torch's functional collectives (one all-reduce, no host sync); `norm_type`
/// must be > 0 or inf. Every rank of the group must call it, also a rank holding no tensor
/// (it then contributes 0). A null `process_group` is the local `get_total_norm`.
///
/// The collectives find the group by its name: a group without one is given a unique name
/// (`setGroupName`), and a group whose name does not resolve in torch's group registry is
/// registered under it (`c10d::register_process_group`); a name that resolves to another
/// group is refused (c10::Error).
at::Tensor get_total_norm(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                          const c10::intrusive_ptr<c10d::ProcessGroup>& process_group);

/// `clip_grad_norm_` with the norm taken over the ranks of `process_group` (as the overload of
/// `get_total_norm` above): every rank scales its gradients by the same coefficient, so the
/// shards of one model are clipped as the whole model would be. Every rank must call it. A null
/// `process_group` is the local `clip_grad_norm_`.
at::Tensor clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           bool error_if_nonfinite = false);

/// The defined gradients of `parameters`, in order (what the clipping functions act on).
std::vector<at::Tensor> grads_of(at::TensorList parameters);

/// Adaptive gradient clipping (AGC, NFNets), with the semantics of
/// `timm.utils.adaptive_clip_grad`: for each parameter with a gradient, each unit (a row along
/// dim 0 when it has more than one dim, else the whole tensor) gets
/// max_norm = clip_factor * max(|w unit|, eps), and a gradient unit whose `norm_type`-norm is
/// not below max_norm is scaled in place by max_norm / max(|g unit|, 1e-6); norms accumulate in
/// fp32 (fp64 for fp64), the formula's values round to the parameter's dtype as timm's do.
/// clip_factor > 0, eps >= 0, norm_type > 0 or inf; gradients on one device, each with its
/// parameter's shape and dtype. Every check runs before the first gradient changes. No host
/// sync: one multi-tensor kernel decides and scales on the device.
void adaptive_clip_grad_(at::TensorList parameters, double clip_factor = 0.01, double eps = 1e-3,
                         double norm_type = 2.0);

}  // namespace steadystep
