#pragma once

// NOTE [CPU ISA dispatch]: the CPU kernels live in kernels.cpp, which CMake compiles once per
// instruction set (DEFAULT, and AVX2 with FMA and F16C), each copy in its own namespace named by
// CPU_CAPABILITY, as ATen builds its own kernels: at::vec then uses the real AVX2 intrinsics in
// the AVX2 copy. registration.cpp picks the copy the running CPU supports.

#include "cpu/multi_tensor_chunks.h"
#include "ops/norm_kind.h"

#include <ATen/core/Tensor.h>

#define STEADYSTEP_DECLARE_CPU_KERNELS(ISA)                                                \
  namespace steadystep::cpu::ISA {                                                         \
  /* The norm of all chunks (p > 0 or inf), partials combined in fp64, rounded to acc. */  \
  double total_norm(const TensorChunks& chunks, NormKind kind, double p, bool double_acc); \
  /* x *= c for every element (c in each tensor's opmath type). */                         \
  void scale(const TensorChunks& chunks, double c);                                        \
  /* x = clamp(x, -clip, clip), nan kept. */                                               \
  void clamp(const TensorChunks& chunks, double clip);                                     \
  }

STEADYSTEP_DECLARE_CPU_KERNELS(DEFAULT)
STEADYSTEP_DECLARE_CPU_KERNELS(AVX2)
