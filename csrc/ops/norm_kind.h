#pragma once

// Torch-free on purpose: the CUDA kernels include it too.

#include <cmath>

namespace steadystep {

/// Which reduction a p-norm needs: sum |x| (L1), sum x^2 (L2), max |x| (Inf), sum |x|^p (P).
enum class NormKind { L1, L2, Inf, P };

/// The kernel's reduction for `p`, or false for the orders the multi-tensor kernels leave to
/// torch::linalg::vector_norm (p <= 0, -inf, nan).
inline bool kernel_norm_kind(double p, NormKind* kind) {
  if (p == 1.0) {
    *kind = NormKind::L1;
  } else if (p == 2.0) {
    *kind = NormKind::L2;
  } else if (std::isinf(p) && p > 0) {
    *kind = NormKind::Inf;
  } else if (p > 0 && std::isfinite(p)) {
    *kind = NormKind::P;
  } else {
    return false;
  }
  return true;
}

}  // namespace steadystep
