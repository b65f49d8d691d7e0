#include <steadystep/clip_grad.h>

#include "checks.h"
#include "ops/grouping.h"
#include "ops/norm_kind.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <limits>
#include <vector>

namespace steadystep {

namespace {

at::Tensor call_total_norm_kernel(at::TensorList tensors, double norm_type) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("steadystep::_total_norm", "")
                       .typed<at::Tensor(at::TensorList, double)>();
  return op.call(tensors, norm_type);
}

}  // namespace

// NOTE [Grouping]: torch groups tensors by device (and dtype) and takes the norm of the
// per-group norms. Our kernels take mixed dtypes, so one kernel call per device suffices;
// tensors the kernels do not cover (other dtypes or orders) go through vector_norm one by one,
// as torch's own fallback does.
at::Tensor total_norm_accumulated(at::TensorList tensors, double norm_type) {
  if (tensors.empty()) {
    return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  }
  check_strided(tensors, "get_total_norm", "tensors");
  const c10::Device first_device = tensors[0].device();
  NormKind kind;
  const bool kernel_order = kernel_norm_kind(norm_type, &kind);
  DeviceGroups groups;
  std::vector<at::Tensor> norms;
  for (const auto& t : tensors) {
    if (kernel_order && is_kernel_dtype(t.scalar_type())) {
      groups.add(t);
    } else {
      norms.push_back(at::linalg_vector_norm(t, norm_type));
    }
  }
  for (const auto& group : groups.tensors) {
    norms.push_back(call_total_norm_kernel(group, norm_type));
  }
  at::ScalarType combine_dtype = at::kFloat;
  for (const auto& n : norms) {
    combine_dtype = c10::promoteTypes(combine_dtype, n.scalar_type());
  }
  if (norms.size() == 1) {
    return norms[0].to(first_device, combine_dtype);
  }
  // Combine in at least fp32, as vector_norm over the stacked per-group norms does.
  std::vector<at::Tensor> moved;
  moved.reserve(norms.size());
  for (const auto& n : norms) {
    moved.push_back(n.to(first_device, combine_dtype));
  }
  return at::linalg_vector_norm(at::stack(moved), norm_type);
}

namespace {

at::Tensor get_total_norm_composite(at::TensorList tensors, double norm_type,
                                    bool error_if_nonfinite) {
  if (tensors.empty()) {
    return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  }
  at::ScalarType result_dtype = tensors[0].scalar_type();
  for (const auto& t : tensors) {
    result_dtype = c10::promoteTypes(result_dtype, t.scalar_type());
  }
  const at::Tensor total = total_norm_accumulated(tensors, norm_type).to(result_dtype);
  if (error_if_nonfinite) {
    // The one check that reads the norm on the host, as torch's does.
    TORCH_CHECK(total.isfinite().item<bool>(), "The total norm of order ", norm_type,
                " for gradients from `parameters` is non-finite (", total.item<double>(),
                "), so it cannot be clipped. To scale the gradients by the non-finite norm "
                "anyway, set `error_if_nonfinite=False`");
  }
  return total;
}

}  // namespace

at::Tensor get_total_norm(at::TensorList tensors, double norm_type, bool error_if_nonfinite) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("steadystep::get_total_norm", "")
                       .typed<at::Tensor(at::TensorList, double, bool)>();
  return op.call(tensors, norm_type, error_if_nonfinite);
}

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("get_total_norm", &get_total_norm_composite);
}

}  // namespace steadystep
