#pragma once

// Momentum (SGD, RMSprop) or beta1 (Adam, AdamW) of a param group, for the schedulers that
// cycle it (CyclicLR, OneCycleLR): PyTorch's `group["momentum"]` / `group["betas"][0]`.

#include <torch/optim/optimizer.h>

namespace steadystep {

/// True when the optimizer's options have a momentum or a beta1 (PyTorch's check on
/// `optimizer.defaults`).
bool has_momentum(const torch::optim::Optimizer& optimizer);
/// Throws PyTorch's error for `scheduler` when the optimizer has neither.
void check_has_momentum(const torch::optim::Optimizer& optimizer, const char* scheduler);
/// Sets a group's momentum, or its beta1 keeping beta2.
void set_momentum(torch::optim::OptimizerParamGroup& group, double momentum);

}  // namespace steadystep
