#pragma once

// Argument checks of the fused optimizers, shared by the C++ and Python constructors and the
// fused ops (a scheduler may set a bad lr later). Messages name the argument and the value.

#include "ops/optim_params.h"

#include <optional>

namespace steadystep {

void check_adam_hyper(const AdamHyper& hyper);
void check_sgd_hyper(const SGDHyper& hyper);
/// max_grad_norm > 0 when given; norm_type > 0 or inf.
void check_clip_settings(std::optional<double> max_grad_norm, double norm_type);

}  // namespace steadystep
