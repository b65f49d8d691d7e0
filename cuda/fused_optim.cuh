#pragma once

// Launchers of the fused optimizer steps, in plain types (nvcc never sees ATen). Hyper-
// parameters travel by value in a params struct; what must stay on the device (the clip
// coefficient, the skip decision, the step counts) travels as device pointers.

#include "cuda/total_norm.cuh"
#include "ops/optim_params.h"

#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

namespace steadystep::cuda {

/// What every fused step reads from device memory.
struct StepControl {
  // Clip coefficient / AMP grad scale, fp64 so that fp64 params get torch's fp64 coefficient
  // (fp32 params use it rounded to fp32, exactly the fp32 coefficient). null: 1.
  const double* grad_multiplier = nullptr;
  const float* skip = nullptr;  // nonzero: touch nothing (non-finite norm, found_inf)
};

struct AdamParams : AdamHyper {
  StepControl control;
};

struct SGDParams : SGDHyper {
  StepControl control;
};

/// How a step writes a param from its fp32/fp64 result w (NOTE [Stochastic rounding]).
enum class ParamWrite {
  Nearest,     // param = w rounded to nearest
  Master,      // master = w (fp32), param = w rounded to nearest (fp16/bf16 params)
  Stochastic,  // param = w rounded stochastically (bf16 params)
};

/// The kernel a set of params takes: their dtype, the dtype of their states (all states of a
/// param share one; the param's own when it has none), how they are written. Supported: fp32
/// params with fp32/bf16 state; fp16 with fp16/fp32/bf16 state; bf16 with bf16/fp32 state;
/// fp64 with fp64 state; Master for fp16/bf16, Stochastic for bf16 params only.
struct StepKind {
  DType param;
  DType state;
  ParamWrite write;
};

/// The last slot of a step entry: the fp32 master (ParamWrite::Master), the param's rounding
/// key stored in the pointer's bits (ParamWrite::Stochastic), unused (Nearest). A value in a
/// pointer slot travels in the kernel's parameter space with no copy and no allocation.
static_assert(sizeof(void*) == sizeof(int64_t), "rounding keys travel in pointer slots");
inline void* key_slot(int64_t key) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(static_cast<uint64_t>(key)));
}

/// One Adam/AdamW step over params of one StepKind. Each entry of `tensors` holds, in order:
/// param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (null unless amsgrad), step (a one-element
/// fp32 tensor, already incremented for this step), the last slot (key_slot). All tensors have
/// `numel[i]` elements.
void launch_adam_step(const StepKind& kind, const std::vector<std::array<void*, 7>>& tensors,
                      const std::vector<int64_t>& numel, const AdamParams& params,
                      cudaStream_t stream);

/// One SGD step. Entries: param, grad, momentum_buffer (null when momentum == 0), step (fp32,
/// already incremented: a step of 1 initialises the buffer from the gradient, as torch does),
/// the last slot (key_slot).
void launch_sgd_step(const StepKind& kind, const std::vector<std::array<void*, 5>>& tensors,
                     const std::vector<int64_t>& numel, const SGDParams& params,
                     cudaStream_t stream);

}  // namespace steadystep::cuda
