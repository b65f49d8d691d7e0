// CPU registrations of steadystep::_total_norm, _scale_ and _clamp_: argument checks, then the
// kernels of the widest instruction set the running CPU has (NOTE [CPU ISA dispatch]).

#include "checks.h"
#include "cpu/kernels.h"

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

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CPU, m) {
  m.impl("_total_norm", &total_norm_cpu);
  m.impl("_scale_", &scale_cpu);
  m.impl("_clamp_", &clamp_cpu);
}

}  // namespace steadystep::cpu
