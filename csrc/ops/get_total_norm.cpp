#include <steadystep/clip_grad.h>

#include "checks.h"
#include "ops/grouping.h"
#include "ops/norm_kind.h"
#include "ops/optim_checks.h"  // format_float
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <atomic>
#include <limits>
#include <string>
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

// NOTE [Grouping]: torch groups tensors by device (and dtype), takes one norm per tensor and
// then the norm of the stacked per-tensor norms, with the same order. Our kernels take mixed
// dtypes and, for p > 0 and inf, reduce a whole device group at once (the same value: the norm
// of the norms of the parts is the norm of the whole); tensors the kernels do not cover (complex
// and other dtypes, orders p <= 0 and nan) go through vector_norm one by one, as torch's own
// fallback does. The per-part norms are then always combined by vector_norm, even when there
// is one: for p = 0 that combination counts nonzero parts (torch's answer), where the one
// part's own norm would count nonzero elements.
at::Tensor total_norm_accumulated(at::TensorList tensors, double norm_type) {
  // A norm is a number about the gradients, never part of a graph (torch's @_no_grad).
  at::NoGradGuard no_grad;
  if (tensors.empty()) {
    return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  }
  check_dense_layout(tensors, "get_total_norm", "tensors");
  const c10::Device first_device = tensors[0].device();
  NormKind kind;
  const bool kernel_order = kernel_norm_kind(norm_type, &kind);
  DeviceGroups groups;
  std::vector<at::Tensor> norms;
  for (const auto& t : tensors) {
    if (kernel_order && is_kernel_dtype(t.scalar_type())) {
      groups.add(t);
    } else {
      norms.push_back(at::linalg_vector_norm(t, norm_type));  // real, also for complex `t`
    }
  }
  for (const auto& group : groups.tensors) {
    norms.push_back(call_total_norm_kernel(group, norm_type));
  }
  at::ScalarType combine_dtype = at::kFloat;
  for (const auto& n : norms) {
    combine_dtype = c10::promoteTypes(combine_dtype, n.scalar_type());
  }
  if (norms.size() == 1 && kernel_order) {
    // For p > 0 and inf the norm of one non-negative number is that number.
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

at::Tensor nonfinite(const at::Tensor& t) {
  // x - x is 0 for every finite x and nan for inf and nan. (at::isfinite goes through abs.out,
  // which LibTorch without Python has no Meta kernel for.)
  return at::ne(at::sub(t, t), 0);
}

void check_finite_norm(const at::Tensor& total, double norm_type) {
  TORCH_CHECK(!total.is_meta(),
              "get_total_norm: error_if_nonfinite=True needs the norm's value, and a meta tensor "
              "has none");
  // torch's message, word for word (users match on it).
  TORCH_CHECK(!nonfinite(total).item<bool>(), "The total norm of order ", format_float(norm_type),
              " for gradients from `parameters` is non-finite, so it cannot be clipped. To "
              "disable this error and scale the gradients by the non-finite norm anyway, set "
              "`error_if_nonfinite=False`");
}

at::ScalarType total_norm_dtype(at::TensorList tensors) {
  // The per-tensor norms are real (a complex tensor's norm has its real dtype), and the
  // stack of them promotes.
  at::ScalarType dtype = c10::toRealValueType(tensors[0].scalar_type());
  for (const auto& t : tensors) {
    dtype = c10::promoteTypes(dtype, c10::toRealValueType(t.scalar_type()));
  }
  return dtype;
}

namespace {

at::Tensor get_total_norm_composite(at::TensorList tensors, double norm_type,
                                    bool error_if_nonfinite) {
  at::NoGradGuard no_grad;
  if (tensors.empty()) {
    return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  }
  const at::Tensor total = total_norm_accumulated(tensors, norm_type).to(total_norm_dtype(tensors));
  if (error_if_nonfinite) {
    check_finite_norm(total, norm_type);
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

namespace {

// NOTE [Process group names]: torch's functional collectives (what get_total_norm_sharded
// reduces with, so that the same op serves Python, C++ and torch.compile) take a group by its
// name and look it up in c10d's group registry. Python registers every group it creates; a group
// built in C++ is in no registry until someone puts it there, and may have no name at all. So a
// group without a name is given one (a counter: unique in the process, never reused, unlike an
// address), and a name that does not resolve is registered, once, to this group. The registry
// holds weak references: the name goes stale when the group is destroyed, and the group is
// re-registered if a stale entry is left under its name. A name that resolves to another live
// group (two C++ groups given the same name) would reduce over the wrong ranks: refused.
std::string registered_group_name(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  static std::atomic<uint64_t> next_id{0};
  if (group->getGroupName().empty()) {
    group->setGroupName("steadystep_group_" + std::to_string(next_id++));
  }
  const std::string name = group->getGroupName();
  c10::intrusive_ptr<c10d::ProcessGroup> found;
  try {
    found = c10d::resolve_process_group(name);
  } catch (const c10::Error&) {
    // not registered, or registered and destroyed since
  }
  if (!found) {
    try {
      c10d::register_process_group(name, group);
    } catch (const c10::Error&) {
      c10d::unregister_process_group(name);  // the stale entry of a destroyed group
      c10d::register_process_group(name, group);
    }
    return name;
  }
  TORCH_CHECK(found.get() == group.get(), "get_total_norm: the process group is named '", name,
              "', but c10d's group registry resolves that name to another process group (rank ",
              found->getRank(), " of ", found->getSize(),
              "); give each process group a name of its own (ProcessGroup::setGroupName)");
  return name;
}

}  // namespace

at::Tensor get_total_norm(at::TensorList tensors, double norm_type, bool error_if_nonfinite,
                          const c10::intrusive_ptr<c10d::ProcessGroup>& process_group) {
  if (!process_group) {
    return get_total_norm(tensors, norm_type, error_if_nonfinite);
  }
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::get_total_norm_sharded", "")
          .typed<at::Tensor(at::TensorList, c10::IntArrayRef, std::vector<std::string>,
                            c10::IntArrayRef, std::optional<std::string>, double, bool)>();
  // Every tensor counts on this rank (parts empty), reduced over the one group.
  return op.call(tensors, {}, {}, {}, registered_group_name(process_group), norm_type,
                 error_if_nonfinite);
}

}  // namespace steadystep
