// Composite clipping ops (every backend: they group by device and call the _scale_ / _clamp_
// kernels) and the public C++ functions, which call through the dispatcher.

#include <steadystep/clip_grad.h>

#include "checks.h"
#include "ops/grouping.h"
#include "ops/total_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>

namespace steadystep {

namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

void check_grads(at::TensorList grads, const char* fn) {
  check_dense_layout(grads, fn, "grads");
}

// The grads the multi-tensor kernels update, by device; the others (strided views, other
// dtypes) are updated by `fallback` with ATen, as torch's per-tensor fallback does.
template <typename Fallback>
std::vector<std::vector<at::Tensor>> split_for_kernels(const DeviceGroups& groups,
                                                       Fallback fallback) {
  std::vector<std::vector<at::Tensor>> kernel(groups.devices.size());
  for (size_t i = 0; i < groups.devices.size(); ++i) {
    for (const auto& g : groups.tensors[i]) {
      if (in_place_kernel_tensor(g)) {
        kernel[i].push_back(g);
      } else {
        fallback(i, g);
      }
    }
  }
  return kernel;
}

void clip_grads_with_norm_composite(at::TensorList grads, double max_norm,
                                    const at::Tensor& total_norm) {
  at::NoGradGuard no_grad;  // an in-place update of the grads, never recorded (torch: @_no_grad)
  TORCH_CHECK_VALUE(max_norm >= 0, "clip_grads_with_norm_: max_norm must be >= 0, got ", max_norm);
  TORCH_CHECK(total_norm.numel() == 1,
              "clip_grads_with_norm_: total_norm must hold one value, got ", total_norm.sizes());
  check_grads(grads, "clip_grads_with_norm_");
  if (grads.empty()) {
    return;
  }
  static auto scale = op<void(at::TensorList, const at::Tensor&)>("steadystep::_scale_");
  const at::Tensor coef = clip_coefficient(max_norm, total_norm.reshape({}));
  DeviceGroups groups;
  for (const auto& g : grads) {
    groups.add(g);
  }
  std::vector<at::Tensor> device_coefs;
  for (const auto& device : groups.devices) {
    device_coefs.push_back(coef.to(device));
  }
  // A complex grad times the real coefficient scales both parts, as torch's mul does.
  const auto kernel =
      split_for_kernels(groups, [&](size_t i, const at::Tensor& g) { g.mul_(device_coefs[i]); });
  for (size_t i = 0; i < kernel.size(); ++i) {
    if (!kernel[i].empty()) {
      scale.call(kernel[i], device_coefs[i]);
    }
  }
}

at::Tensor clip_grad_norm_composite(at::TensorList grads, double max_norm, double norm_type,
                                    bool error_if_nonfinite) {
  at::NoGradGuard no_grad;
  TORCH_CHECK_VALUE(max_norm >= 0, "clip_grad_norm_: max_norm must be >= 0, got ", max_norm);
  static auto total_norm =
      op<at::Tensor(at::TensorList, double, bool)>("steadystep::get_total_norm");
  at::Tensor norm = total_norm.call(grads, norm_type, error_if_nonfinite);
  clip_grads_with_norm_composite(grads, max_norm, norm);
  return norm;
}

void clip_grad_value_composite(at::TensorList grads, double clip_value) {
  at::NoGradGuard no_grad;
  TORCH_CHECK_VALUE(clip_value >= 0, "clip_grad_value_: clip_value must be >= 0, got ", clip_value);
  // Every check before the first gradient changes: an error leaves all of them as they were.
  check_grads(grads, "clip_grad_value_");
  for (const auto& g : grads) {
    TORCH_CHECK_NOT_IMPLEMENTED(!g.is_complex(), "clamp is not supported for complex types");
  }
  static auto clamp = op<void(at::TensorList, double)>("steadystep::_clamp_");
  DeviceGroups groups;
  for (const auto& g : grads) {
    groups.add(g);
  }
  const auto kernel = split_for_kernels(
      groups, [&](size_t, const at::Tensor& g) { g.clamp_(-clip_value, clip_value); });
  for (const auto& group : kernel) {
    // An empty list has no tensor to dispatch on: the call would fail.
    if (!group.empty()) {
      clamp.call(group, clip_value);
    }
  }
}

}  // namespace

// NOTE [Clip coefficient]: torch computes `max_norm / (total_norm + 1e-6)` with a Python float
// on the left, which PyTorch evaluates as reciprocal(total_norm + 1e-6) * max_norm, in the
// norm's dtype; then clamps it to at most 1. The same three ops here give the same bits, and
// so gradients equal to torch's after clipping.
at::Tensor clip_coefficient(double max_norm, const at::Tensor& total_norm) {
  return at::clamp_max(at::mul(at::reciprocal(at::add(total_norm, 1e-6)), max_norm), 1.0);
}

std::vector<at::Tensor> grads_of(at::TensorList parameters) {
  std::vector<at::Tensor> grads;
  grads.reserve(parameters.size());
  for (const auto& p : parameters) {
    if (p.grad().defined()) {
      grads.push_back(p.grad());
    }
  }
  return grads;
}

void clip_grads_with_norm_(at::TensorList parameters, double max_norm,
                           const at::Tensor& total_norm) {
  static auto handle =
      op<void(at::TensorList, double, const at::Tensor&)>("steadystep::clip_grads_with_norm_");
  handle.call(grads_of(parameters), max_norm, total_norm);
}

at::Tensor clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type,
                           bool error_if_nonfinite) {
  static auto handle =
      op<at::Tensor(at::TensorList, double, double, bool)>("steadystep::clip_grad_norm_");
  return handle.call(grads_of(parameters), max_norm, norm_type, error_if_nonfinite);
}

at::Tensor clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           bool error_if_nonfinite) {
  if (!process_group) {
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite);
  }
  // Checked before the collective: a rank that raised after it would leave the others clipped.
  TORCH_CHECK_VALUE(max_norm >= 0, "clip_grad_norm_: max_norm must be >= 0, got ", max_norm);
  const std::vector<at::Tensor> grads = grads_of(parameters);
  at::Tensor norm = get_total_norm(grads, norm_type, error_if_nonfinite, process_group);
  // The coefficient comes from the global norm: the same on every rank.
  static auto clip =
      op<void(at::TensorList, double, const at::Tensor&)>("steadystep::clip_grads_with_norm_");
  clip.call(grads, max_norm, norm);
  return norm;
}

void clip_grad_value_(at::TensorList parameters, double clip_value) {
  static auto handle = op<void(at::TensorList, double)>("steadystep::clip_grad_value_");
  handle.call(grads_of(parameters), clip_value);
}

TORCH_LIBRARY_IMPL(steadystep, CompositeImplicitAutograd, m) {
  m.impl("clip_grads_with_norm_", &clip_grads_with_norm_composite);
  m.impl("clip_grad_norm_", &clip_grad_norm_composite);
  m.impl("clip_grad_value_", &clip_grad_value_composite);
}

}  // namespace steadystep
