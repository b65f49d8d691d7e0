#include "ops/optim_checks.h"

#include "ops/norm_kind.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace steadystep {

void check_adam_hyper(const AdamHyper& h) {
  TORCH_CHECK_VALUE(h.lr >= 0, "Invalid learning rate: ", h.lr);
  TORCH_CHECK_VALUE(h.eps >= 0, "Invalid epsilon value: ", h.eps);
  TORCH_CHECK_VALUE(h.beta1 >= 0 && h.beta1 < 1, "Invalid beta parameter at index 0: ", h.beta1);
  TORCH_CHECK_VALUE(h.beta2 >= 0 && h.beta2 < 1, "Invalid beta parameter at index 1: ", h.beta2);
  TORCH_CHECK_VALUE(h.weight_decay >= 0, "Invalid weight_decay value: ", h.weight_decay);
}

void check_sgd_hyper(const SGDHyper& h) {
  TORCH_CHECK_VALUE(h.lr >= 0, "Invalid learning rate: ", h.lr);
  TORCH_CHECK_VALUE(h.momentum >= 0, "Invalid momentum value: ", h.momentum);
  TORCH_CHECK_VALUE(h.weight_decay >= 0, "Invalid weight_decay value: ", h.weight_decay);
  TORCH_CHECK_VALUE(!h.nesterov || (h.momentum > 0 && h.dampening == 0),
                    "Nesterov momentum requires a momentum and zero dampening (momentum=",
                    h.momentum, ", dampening=", h.dampening, ")");
}

void check_clip_settings(std::optional<double> max_grad_norm, double norm_type) {
  TORCH_CHECK_VALUE(!max_grad_norm || *max_grad_norm > 0,
                    "max_grad_norm must be > 0 (or None to disable clipping), got ",
                    max_grad_norm.value_or(0));
  NormKind kind;
  TORCH_CHECK_VALUE(kernel_norm_kind(norm_type, &kind), "norm_type must be > 0 or inf, got ",
                    norm_type);
}

}  // namespace steadystep
