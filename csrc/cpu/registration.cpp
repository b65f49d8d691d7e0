// CPU registrations of steadystep::_total_norm, _scale_, _clamp_, _adam_step_ and _sgd_step_:
// argument checks, then the kernels of the widest instruction set the running CPU has
// (NOTE [CPU ISA dispatch]).

#include "checks.h"
#include "cpu/kernels.h"
#include "ops/step_checks.h"

#include <ATen/Version.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

namespace steadystep::cpu {

namespace {

bool has_avx2() {
  static const bool avx2 = [] {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return false;
#endif
  }();
  return avx2;
}

// The fused steps reproduce torch's roundings, and ATen fuses multiply-adds only in its
// AVX2/AVX512 kernels: the step kernels follow the instruction set torch itself runs
// (ATEN_CPU_CAPABILITY=default included), not just what the CPU has.
bool step_kernels_avx2() {
  static const bool avx2 = has_avx2() && at::get_cpu_capability() != "DEFAULT";
  return avx2;
}

void check_one_device(at::TensorList tensors, const char* op) {
  check_strided(tensors, op, "tensors");
  check_kernel_dtypes(tensors, op, "tensors");
  if (!tensors.empty()) {
    check_on_device(tensors, tensors[0].device(), op, "tensors");
  }
}

void check_in_place(at::TensorList tensors, const char* op) {
  check_one_device(tensors, op);
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].is_non_overlapping_and_dense(), op, ": tensors[", i,
                "] is not dense (a strided view); it cannot be updated in place by this kernel");
  }
}

at::Tensor total_norm_cpu(at::TensorList tensors, double norm_type) {
  NormKind kind;
  TORCH_CHECK(kernel_norm_kind(norm_type, &kind), "_total_norm: norm_type must be > 0 or inf, got ",
              norm_type);
  check_one_device(tensors, "_total_norm");
  const TensorChunks chunks(tensors);
  const at::ScalarType acc_dtype = accumulate_dtype(tensors);
  const bool double_acc = acc_dtype == at::kDouble;
  const double norm = has_avx2() ? AVX2::total_norm(chunks, kind, norm_type, double_acc)
                                 : DEFAULT::total_norm(chunks, kind, norm_type, double_acc);
  return at::scalar_tensor(norm, at::TensorOptions().dtype(acc_dtype));
}

void scale_cpu(at::TensorList tensors, const at::Tensor& coef) {
  if (tensors.empty()) {
    return;
  }
  check_in_place(tensors, "_scale_");
  TORCH_CHECK(coef.numel() == 1 && coef.device().is_cpu(),
              "_scale_: coef must be a one-element CPU tensor, got ", coef.sizes(), " on ",
              coef.device());
  const double c = coef.item<double>();  // a CPU tensor: no device to wait for
  if (c >= 1.0) {
    return;  // nothing to clip: no pass over memory at all
  }
  const TensorChunks chunks(tensors);
  has_avx2() ? AVX2::scale(chunks, c) : DEFAULT::scale(chunks, c);
}

void clamp_cpu(at::TensorList tensors, double clip_value) {
  if (tensors.empty()) {
    return;
  }
  check_in_place(tensors, "_clamp_");
  const TensorChunks chunks(tensors);
  has_avx2() ? AVX2::clamp(chunks, clip_value) : DEFAULT::clamp(chunks, clip_value);
}

// Reads the step's device-side controls (here: CPU tensors, so no waiting).
bool skip_step(const std::optional<at::Tensor>& skip) {
  return skip.has_value() && skip->defined() && skip->item<double>() != 0.0;
}

GradMultiplier multiplier_of(const std::optional<at::Tensor>& grad_multiplier) {
  GradMultiplier m;
  if (grad_multiplier.has_value() && grad_multiplier->defined()) {
    m.active = true;
    m.value = grad_multiplier->item<double>();
  }
  return m;
}

std::vector<StepTensor> step_tensors(at::TensorList params, at::TensorList grads,
                                     std::initializer_list<at::TensorList> states,
                                     at::TensorList steps, at::TensorList masters,
                                     c10::IntArrayRef rounding_keys) {
  std::vector<StepTensor> out;
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel() == 0) {
      continue;
    }
    StepTensor t{params[i].scalar_type(), params[i].numel(),         steps[i].item<double>(),
                 params[i].data_ptr(),    grads[i].const_data_ptr(), {nullptr, nullptr, nullptr},
                 params[i].scalar_type()};
    int s = 0;
    for (const auto& list : states) {
      t.state[s++] = list.empty() ? nullptr : list[i].data_ptr();
      if (!list.empty() && s == 1) {
        t.state_dtype = list[i].scalar_type();  // the checks made every state of i this dtype
      }
    }
    if (!masters.empty()) {
      t.master = masters[i].data_ptr<float>();
    }
    if (!rounding_keys.empty()) {
      t.stochastic = true;
      t.rounding_key = rounding_keys[i];
    }
    out.push_back(t);
  }
  return out;
}

void adam_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList steps,
                   double lr, double beta1, double beta2, double eps, double weight_decay,
                   bool amsgrad, bool maximize, bool decoupled_weight_decay,
                   const std::optional<at::Tensor>& grad_multiplier,
                   const std::optional<at::Tensor>& skip, at::TensorList master_params,
                   c10::IntArrayRef rounding_keys) {
  check_adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad,
                  master_params, rounding_keys);
  if (params.empty() || skip_step(skip)) {
    return;
  }
  const AdamHyper hyper{lr,           beta1,   beta2,    eps,
                        weight_decay, amsgrad, maximize, decoupled_weight_decay};
  const auto tensors = step_tensors(params, grads, {exp_avgs, exp_avg_sqs, max_exp_avg_sqs}, steps,
                                    master_params, rounding_keys);
  const GradMultiplier mult = multiplier_of(grad_multiplier);
  step_kernels_avx2() ? AVX2::adam_step(tensors, hyper, mult)
                      : DEFAULT::adam_step(tensors, hyper, mult);
}

void sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  at::TensorList steps, double lr, double momentum, double dampening,
                  double weight_decay, bool nesterov, bool maximize,
                  const std::optional<at::Tensor>& grad_multiplier,
                  const std::optional<at::Tensor>& skip, at::TensorList master_params,
                  c10::IntArrayRef rounding_keys) {
  check_sgd_step(params, grads, momentum_buffers, steps, momentum, master_params, rounding_keys);
  if (params.empty() || skip_step(skip)) {
    return;
  }
  const SGDHyper hyper{lr, momentum, dampening, weight_decay, nesterov, maximize};
  const auto tensors =
      step_tensors(params, grads, {momentum_buffers}, steps, master_params, rounding_keys);
  const GradMultiplier mult = multiplier_of(grad_multiplier);
  step_kernels_avx2() ? AVX2::sgd_step(tensors, hyper, mult)
                      : DEFAULT::sgd_step(tensors, hyper, mult);
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CPU, m) {
  m.impl("_total_norm", &total_norm_cpu);
  m.impl("_scale_", &scale_cpu);
  m.impl("_clamp_", &clamp_cpu);
  m.impl("_adam_step_", &adam_step_cpu);
  m.impl("_sgd_step_", &sgd_step_cpu);
}

}  // namespace steadystep::cpu
