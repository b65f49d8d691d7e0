// Meta kernel of steadystep::adaptive_clip_grad_: the same argument checks as the real kernels,
// nothing to compute (an in-place op changes values only).

#include "ops/agc_checks.h"

#include <torch/library.h>

namespace steadystep::meta {

namespace {

void adaptive_clip_grad_meta(at::TensorList params, at::TensorList grads, double clip_factor,
                             double eps, double norm_type) {
  check_adaptive_clip_grad(params, grads, clip_factor, eps, norm_type);
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, Meta, m) {
  m.impl("adaptive_clip_grad_", &adaptive_clip_grad_meta);
}

}  // namespace steadystep::meta
