// CUDA registration of steadystep::_adam_step_ and steadystep::_sgd_step_: one launch set per
// dtype on the current stream; the clip coefficient, the skip decision and the step counts are
// read by the kernels from device memory. No host sync.

#include "cuda/dtype_buckets.h"
#include "cuda/fused_optim.cuh"
#include "ops/step_checks.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <vector>

namespace steadystep::cuda {

namespace {

// Pointer lists per kernel (StepKind): param, grad, states..., step, the last slot (key_slot).
// `states` are the param's state lists (the first one, when given, tells the state dtype);
// `masters` is empty or holds one fp32 master per param; `rounding_keys` is empty or holds one
// key per param, used for bf16 params (the checks refuse keys together with masters).
template <int Depth>
struct StepBuckets {
  struct Bucket {
    StepKind kind;
    std::vector<std::array<void*, Depth>> tensors;
    std::vector<int64_t> numel;
  };
  std::vector<Bucket> buckets;

  StepBuckets(at::TensorList params, at::TensorList grads,
              std::initializer_list<at::TensorList> states, at::TensorList steps,
              at::TensorList masters, c10::IntArrayRef rounding_keys) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].numel() == 0) {
        continue;
      }
      std::array<void*, Depth> ptrs{};
      ptrs[0] = params[i].data_ptr();
      ptrs[1] = const_cast<void*>(grads[i].const_data_ptr());
      int slot = 2;
      at::ScalarType state_dtype = params[i].scalar_type();
      bool first_state = true;
      for (const auto& list : states) {
        ptrs[slot++] = list.empty() ? nullptr : list[i].data_ptr();
        if (first_state && !list.empty()) {
          state_dtype = list[i].scalar_type();
        }
        first_state = false;
      }
      ptrs[Depth - 2] = const_cast<void*>(steps[i].const_data_ptr());
      ParamWrite write = ParamWrite::Nearest;
      if (!masters.empty()) {
        write = ParamWrite::Master;
        ptrs[Depth - 1] = masters[i].data_ptr();
      } else if (!rounding_keys.empty() && params[i].scalar_type() == at::kBFloat16) {
        write = ParamWrite::Stochastic;
        ptrs[Depth - 1] = key_slot(rounding_keys[i]);
      }
      add({kernel_dtype(params[i].scalar_type()), kernel_dtype(state_dtype), write}, ptrs,
          params[i].numel());
    }
  }

 private:
  void add(const StepKind& kind, const std::array<void*, Depth>& ptrs, int64_t numel) {
    for (auto& b : buckets) {
      if (b.kind.param == kind.param && b.kind.state == kind.state && b.kind.write == kind.write) {
        b.tensors.push_back(ptrs);
        b.numel.push_back(numel);
        return;
      }
    }
    buckets.push_back({kind, {ptrs}, {numel}});
  }
};

// The device pointers of the step's controls, one-element tensors on `device`: the gradient
// multiplier in fp64 (exact for an fp32 one), the skip decision in fp32.
StepControl control_of(const std::optional<at::Tensor>& grad_multiplier,
                       const std::optional<at::Tensor>& skip, const c10::Device& device,
                       std::vector<at::Tensor>& keep) {
  auto device_ptr = [&](const std::optional<at::Tensor>& t, at::ScalarType dtype) -> const void* {
    if (!t.has_value() || !t->defined()) {
      return nullptr;
    }
    TORCH_CHECK(t->numel() == 1, "fused step: controls hold one value, got ", t->sizes());
    keep.push_back(t->to(device, dtype).contiguous());
    return keep.back().const_data_ptr();
  };
  return {static_cast<const double*>(device_ptr(grad_multiplier, at::kDouble)),
          static_cast<const float*>(device_ptr(skip, at::kFloat))};
}

void adam_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                    at::TensorList steps, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay,
                    const std::optional<at::Tensor>& grad_multiplier,
                    const std::optional<at::Tensor>& skip, at::TensorList master_params,
                    c10::IntArrayRef rounding_keys) {
  check_adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad,
                  master_params, rounding_keys);
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(params[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> keep;
  AdamParams p;
  static_cast<AdamHyper&>(p) = {lr,           beta1,   beta2,    eps,
                                weight_decay, amsgrad, maximize, decoupled_weight_decay};
  p.control = control_of(grad_multiplier, skip, params[0].device(), keep);
  const StepBuckets<7> buckets(params, grads, {exp_avgs, exp_avg_sqs, max_exp_avg_sqs}, steps,
                               master_params, rounding_keys);
  for (const auto& b : buckets.buckets) {
    launch_adam_step(b.kind, b.tensors, b.numel, p, stream);
  }
}

void sgd_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList steps, double lr, double momentum, double dampening,
                   double weight_decay, bool nesterov, bool maximize,
                   const std::optional<at::Tensor>& grad_multiplier,
                   const std::optional<at::Tensor>& skip, at::TensorList master_params,
                   c10::IntArrayRef rounding_keys) {
  check_sgd_step(params, grads, momentum_buffers, steps, momentum, master_params, rounding_keys);
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(params[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> keep;
  SGDParams p;
  static_cast<SGDHyper&>(p) = {lr, momentum, dampening, weight_decay, nesterov, maximize};
  p.control = control_of(grad_multiplier, skip, params[0].device(), keep);
  // Without momentum the buffers (if any) are not read: the param's dtype stands for them.
  const at::TensorList buffers = momentum != 0 ? momentum_buffers : at::TensorList();
  const StepBuckets<5> buckets(params, grads, {buffers}, steps, master_params, rounding_keys);
  for (const auto& b : buckets.buckets) {
    launch_sgd_step(b.kind, b.tensors, b.numel, p, stream);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CUDA, m) {
  m.impl("_adam_step_", &adam_step_cuda);
  m.impl("_sgd_step_", &sgd_step_cuda);
}

}  // namespace steadystep::cuda
