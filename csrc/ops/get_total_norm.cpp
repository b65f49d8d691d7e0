#include <steadystep/clip_grad.h>

#include "checks.h"
#include "ops/norm_kind.h"

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

// NOTE [Grouping]: torch groups tensors by device (and dtype) and takes the norm of the
// per-group norms. Our kernels take mixed dtypes, so one kernel call per device suffices;
// tensors the kernels do not cover (other dtypes or orders) go through vector_norm one by one,
// as torch's own fallback does.
at::Tensor get_total_norm_composite(at::TensorList tensors, double norm_type,
                                    bool error_if_nonfinite) {
  if (tensors.empty()) {
    return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  }
  check_strided(tensors, "get_total_norm", "tensors");
  const c10::Device first_device = tensors[0].device();
  at::ScalarType result_dtype = tensors[0].scalar_type();
  for (const auto& t : tensors) {
    result_dtype = c10::promoteTypes(result_dtype, t.scalar_type());
  }

  NormKind kind;
  const bool kernel_order = kernel_norm_kind(norm_type, &kind);
  std::vector<c10::Device> devices;
  std::vector<std::vector<at::Tensor>> groups;
  std::vector<at::Tensor> norms;
  for (const auto& t : tensors) {
    if (!kernel_order || !is_kernel_dtype(t.scalar_type())) {
      norms.push_back(at::linalg_vector_norm(t, norm_type));
      continue;
    }
    size_t g = 0;
    while (g < devices.size() && devices[g] != t.device()) {
      ++g;
    }
    if (g == devices.size()) {
      devices.push_back(t.device());
      groups.emplace_back();
    }
    groups[g].push_back(t);
  }
  for (const auto& group : groups) {
    norms.push_back(call_total_norm_kernel(group, norm_type));
  }

  at::Tensor total;
  if (norms.size() == 1) {
    total = norms[0].to(first_device, result_dtype);
  } else {
    // Combine in at least fp32, as vector_norm over the stacked per-group norms does.
    const auto combine_dtype = c10::promoteTypes(result_dtype, at::kFloat);
    std::vector<at::Tensor> moved;
    moved.reserve(norms.size());
    for (const auto& n : norms) {
      moved.push_back(n.to(first_device, combine_dtype));
    }
    total = at::linalg_vector_norm(at::stack(moved), norm_type).to(result_dtype);
  }
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
