#pragma once

// Argument checks of the fused optimizers, shared by the C++ and Python constructors and the
// fused ops. Messages are torch.optim's own, word for word, with numbers printed as Python prints
// a float ("1.0", "0.001", "1e-08").

#include "ops/optim_params.h"

#include <optional>
#include <string>

namespace steadystep {

/// `value` as Python's repr(float) writes it: the shortest text that reads back as `value`,
/// with ".0" on integral values and an exponent outside [1e-4, 1e16) ("1e-08", "1e+16").
std::string format_float(double value);

/// lr >= 0, checked where torch checks it: by the constructors only. A scheduler may take the lr
/// below zero later (LambdaLR with a cosine, say), and torch's step then ascends the gradient;
/// ours does the same, so the hyper-parameter checks below leave the lr alone.
void check_lr(double lr);
/// Every Adam hyper-parameter but the lr (check_lr).
void check_adam_hyper(const AdamHyper& hyper);
/// Every SGD hyper-parameter but the lr (check_lr).
void check_sgd_hyper(const SGDHyper& hyper);
/// max_grad_norm > 0 when given; norm_type > 0 or inf.
void check_clip_settings(std::optional<double> max_grad_norm, double norm_type);

}  // namespace steadystep
