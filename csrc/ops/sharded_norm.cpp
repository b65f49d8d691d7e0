// The global norm of gradients sharded over ranks: the local multi-tensor norm on each rank's
// shards, combined with torch's functional collectives (c10d underneath: NCCL on GPUs, gloo on
// CPU). Composite, so it serves every backend, C++ and Python alike, and traces under
// torch.compile as the collectives do.

#include "checks.h"
#include "ops/optim_checks.h"  // format_float
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

namespace steadystep {

namespace {

// NOTE [Sharded norm]: the p-norm of a vector split over ranks is (sum over ranks of the local
// norm^p)^(1/p), and the inf-norm the max of the local ones: torch's own reduction of a
// norm that is pending over a mesh (DTensor's norm partial). The caller says which ranks hold
// which elements: each part of the tensors is reduced over its own list of groups in turn
// (the sharded dims of one device mesh), the parts are added up on the rank, and the sum is
// reduced over one last group (stages of a pipeline, hand-made shards). A tensor that several
// ranks hold whole (a replica) is counted by one of them only (`parts` = -1 on the others), so
// each element counts once. Every rank enters the same collectives in the same order, also for
// a part it holds nothing of (it adds zero), so no rank waits for a collective that never comes.
// The collectives run on the device streams: the norm is never read on the host.

at::Tensor all_reduce(const at::Tensor& value, const char* reduce_op, const std::string& group) {
  static auto reduce = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("_c10d_functional::all_reduce", "")
                           .typed<at::Tensor(const at::Tensor&, std::string, std::string)>();
  static auto wait = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("_c10d_functional::wait_tensor", "")
                         .typed<at::Tensor(const at::Tensor&)>();
  return wait.call(reduce.call(value, reduce_op, group));
}

void check_parts(at::TensorList tensors, c10::IntArrayRef parts, c10::IntArrayRef groups_per_part,
                 size_t num_groups) {
  TORCH_CHECK_VALUE(parts.empty() || parts.size() == tensors.size(),
                    "get_total_norm_sharded: expected one part index per tensor (", tensors.size(),
                    "), got ", parts.size());
  const int64_t num_parts = std::max<int64_t>(1, static_cast<int64_t>(groups_per_part.size()));
  for (size_t i = 0; i < parts.size(); ++i) {
    TORCH_CHECK_VALUE(parts[i] >= -1 && parts[i] < num_parts, "get_total_norm_sharded: parts[", i,
                      "] = ", parts[i], " is not -1 or a part index below ", num_parts);
  }
  int64_t total = 0;
  for (size_t i = 0; i < groups_per_part.size(); ++i) {
    TORCH_CHECK_VALUE(groups_per_part[i] >= 0, "get_total_norm_sharded: groups_per_part[", i,
                      "] = ", groups_per_part[i], " is negative");
    total += groups_per_part[i];
  }
  TORCH_CHECK_VALUE(static_cast<size_t>(total) == num_groups,
                    "get_total_norm_sharded: groups_per_part adds up to ", total, " but ",
                    num_groups, " group names were given");
}

}  // namespace

at::Tensor total_norm_sharded(at::TensorList tensors, c10::IntArrayRef parts,
                              const std::vector<std::string>& groups,
                              c10::IntArrayRef groups_per_part,
                              const std::optional<std::string>& process_group, double norm_type) {
  at::NoGradGuard no_grad;
  check_parts(tensors, parts, groups_per_part, groups.size());
  const bool reduces = !groups.empty() || process_group.has_value();
  if (!reduces && (parts.empty() ||
                   std::none_of(parts.begin(), parts.end(), [](int64_t p) { return p < 0; }))) {
    return total_norm_accumulated(tensors, norm_type);  // one rank's business: the local norm
  }
  const bool is_max = std::isinf(norm_type) && norm_type > 0;
  TORCH_CHECK_VALUE(is_max || (norm_type > 0 && std::isfinite(norm_type)),
                    "get_total_norm_sharded: the norm over ranks needs norm_type > 0 or inf, got ",
                    format_float(norm_type));
  // Every rank must reduce the same dtype on the same kind of device, also over parts it holds
  // nothing of; the tensor list (counted or not) is the same model on every rank.
  const at::TensorOptions options =
      at::TensorOptions()
          .dtype(tensors.empty() ? at::kFloat : accumulate_dtype(tensors))
          .device(tensors.empty() ? c10::Device(c10::kCPU) : tensors[0].device());
  const size_t num_parts = std::max<size_t>(1, groups_per_part.size());
  std::vector<std::vector<at::Tensor>> members(num_parts);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t part = parts.empty() ? 0 : parts[i];
    if (part >= 0) {
      members[part].push_back(tensors[i]);
    }
  }
  // A max-reduction over ranks does not carry nan through (gloo keeps the other value when
  // the nan sits on a later rank), so the inf-norm travels as [norm with nan as 0, nan seen]:
  // a nan on one rank still reaches every rank, and every rank skips the same step.
  const char* reduce_op = is_max ? "max" : "sum";
  at::Tensor total = at::zeros({is_max ? 2 : 1}, options);
  size_t next_group = 0;
  for (size_t part = 0; part < num_parts; ++part) {
    // norm^p of the part (the max itself for inf), in the accumulate dtype.
    at::Tensor local = total_norm_accumulated(members[part], norm_type).to(options).reshape({1});
    if (is_max) {
      const at::Tensor nan = at::isnan(local);
      local = at::cat({at::where(nan, at::zeros_like(local), local), nan.to(options.dtype())});
    } else if (norm_type != 1.0) {
      local = at::pow(local, norm_type);
    }
    const int64_t count = groups_per_part.empty() ? 0 : groups_per_part[part];
    for (int64_t g = 0; g < count; ++g) {
      local = all_reduce(local, reduce_op, groups[next_group++]);
    }
    total = is_max ? at::maximum(total, local) : at::add(total, local);
  }
  if (process_group.has_value()) {
    total = all_reduce(total, reduce_op, *process_group);
  }
  if (is_max) {
    return at::where(total[1] > 0, at::full({}, std::nan(""), options), total[0]);
  }
  total = total.reshape({});
  if (norm_type != 1.0) {
    total = at::pow(total, 1.0 / norm_type);
  }
  return total;
}

namespace {

at::Tensor get_total_norm_sharded_composite(at::TensorList tensors, c10::IntArrayRef parts,
                                            std::vector<std::string> groups,
                                            c10::IntArrayRef groups_per_part,
                                            std::optional<std::string> process_group,
                                            double norm_type, bool error_if_nonfinite) {
  check_dense_layout(tensors, "get_total_norm_sharded", "tensors");
  const at::Tensor total =
      total_norm_sharded(tensors, parts, groups, groups_per_part, process_group, norm_type);
  if (error_if_nonfinite) {
    check_finite_norm(total, norm_type);  // the same reduced value on every rank: all raise alike
  }
  return total;
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("get_total_norm_sharded", &get_total_norm_sharded_composite);
}

}  // namespace steadystep
