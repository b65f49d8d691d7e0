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

/// One Adam/AdamW step over tensors of one dtype. Each entry of `tensors` holds, in order:
/// param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (null unless amsgrad), step (a one-element
/// fp32 tensor, already incremented for this step). All have `numel[i]` elements.
void launch_adam_step(DType dtype, const std::vector<std::array<void*, 6>>& tensors,
                      const std::vector<int64_t>& numel, const AdamParams& params,
                      cudaStream_t stream);

/// One SGD step. Entries: param, grad, momentum_buffer (null when momentum == 0), step (fp32,
/// already incremented: a step of 1 initialises the buffer from the gradient, as torch does).
void launch_sgd_step(DType dtype, const std::vector<std::array<void*, 4>>& tensors,
                     const std::vector<int64_t>& numel, const SGDParams& params,
                     cudaStream_t stream);

}  // namespace steadystep::cuda
