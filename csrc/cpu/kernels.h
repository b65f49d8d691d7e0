#pragma once

// NOTE [CPU ISA dispatch]: the CPU kernels live in kernels.cpp, which CMake compiles once per
// instruction set (DEFAULT, and AVX2 with FMA and F16C), each copy in its own namespace named by
// CPU_CAPABILITY, as ATen builds its own kernels: at::vec then uses the real AVX2 intrinsics in
// the AVX2 copy. registration.cpp picks the copy the running CPU supports.

#include "cpu/multi_tensor_chunks.h"
#include "ops/norm_kind.h"
#include "ops/optim_params.h"

#include <vector>

namespace steadystep::cpu {

/// One parameter of a fused step: its dtype, size and step count (already incremented for this
/// step), and the param, grad and up to three state tensors (Adam: exp_avg, exp_avg_sq,
/// max_exp_avg_sq; SGD: momentum_buffer), all dense with the same layout. The states are of
/// `state_dtype` (the param's, fp32 or bf16); `master` is the param's fp32 master weights (null:
/// none); with `stochastic`, a bf16 param is rounded stochastically with `rounding_key` (NOTE
/// [Stochastic rounding]).
struct StepTensor {
  at::ScalarType dtype;
  int64_t numel;
  double step;
  void* param;
  const void* grad;
  void* state[3];
  at::ScalarType state_dtype;
  float* master = nullptr;
  bool stochastic = false;
  int64_t rounding_key = 0;
};

/// The gradient multiplier of a fused step (clip coefficient and AMP unscale), when there is one.
struct GradMultiplier {
  bool active = false;
  double value = 1.0;
};

}  // namespace steadystep::cpu

#include <ATen/core/Tensor.h>

#define STEADYSTEP_DECLARE_CPU_KERNELS(ISA)                                                \
  namespace steadystep::cpu::ISA {                                                         \
  /* The norm of all chunks (p > 0 or inf), partials combined in fp64, rounded to acc. */  \
  double total_norm(const TensorChunks& chunks, NormKind kind, double p, bool double_acc); \
  /* x *= c for every element (c in each tensor's opmath type). */                         \
  void scale(const TensorChunks& chunks, double c);                                        \
  /* x = clamp(x, -clip, clip), nan kept. */                                               \
  void clamp(const TensorChunks& chunks, double clip);                                     \
  /* One fused Adam/AdamW step over `tensors`. */                                          \
  void adam_step(const std::vector<StepTensor>& tensors, const AdamHyper& hyper,           \
                 GradMultiplier multiplier);                                               \
  /* One fused SGD step over `tensors`. */                                                 \
  void sgd_step(const std::vector<StepTensor>& tensors, const SGDHyper& hyper,             \
                GradMultiplier multiplier);                                                \
  }

STEADYSTEP_DECLARE_CPU_KERNELS(DEFAULT)
STEADYSTEP_DECLARE_CPU_KERNELS(AVX2)
