// CPU kernel of steadystep::adaptive_clip_grad_ (AGC, NFNets; timm.utils.adaptive_clip_grad):
// every unit (a row along dim 0, or the whole tensor for ndim <= 1) of every gradient is scaled
// to clip_factor * max(|param unit|, eps) when its own norm is not below that.

#include "ops/agc_checks.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace steadystep::cpu {

namespace {

// Independent partial sums per unit: shorter addition chains than one running sum (torch's
// reductions also split theirs), so the fp32 norm stays within a few ulps of torch's.
constexpr int kLanes = 16;

template <typename Acc>
Acc nan_max(Acc a, Acc b) {
  return (b > a || std::isnan(b)) ? b : a;
}

template <NormKind Kind, typename Acc>
inline Acc accumulate(Acc acc, Acc a, Acc p) {
  if constexpr (Kind == NormKind::L1) {
    return acc + a;
  } else if constexpr (Kind == NormKind::L2) {
    return acc + a * a;
  } else if constexpr (Kind == NormKind::Inf) {
    return nan_max(acc, a);
  } else {
    return acc + std::pow(a, p);
  }
}

// The norm of x[0..n) (NormKind semantics as torch's vector_norm), accumulated in Acc.
template <NormKind Kind, typename T, typename Acc>
Acc unit_norm(const T* x, int64_t n, Acc p) {
  Acc lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lanes[l] = accumulate<Kind, Acc>(lanes[l], std::abs(static_cast<Acc>(x[i + l])), p);
    }
  }
  for (int l = 0; i < n; ++i, ++l) {
    lanes[l] = accumulate<Kind, Acc>(lanes[l], std::abs(static_cast<Acc>(x[i])), p);
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) {
      lanes[l] =
          Kind == NormKind::Inf ? nan_max(lanes[l], lanes[l + width]) : lanes[l] + lanes[l + width];
    }
  }
  if constexpr (Kind == NormKind::L2) {
    return std::sqrt(lanes[0]);
  } else if constexpr (Kind == NormKind::P) {
    return std::pow(lanes[0], Acc(1) / p);
  } else {
    return lanes[0];
  }
}

// clamp(x, min=lo) as torch's clamp_min: nan stays nan.
template <typename Acc>
Acc clamp_min_keep_nan(Acc x, Acc lo) {
  return std::isnan(x) ? x : std::max(x, lo);
}

// One unit, with timm's ops in the param's dtype T (each rounded to T, computed in Acc, as
// torch's kernels compute reduced-precision ops in fp32):
//   max_norm = clamp(|p|, min=eps) * clip_factor,   keep g where |g| < max_norm,
//   else g * (max_norm / clamp(|g|, min=1e-6)).
template <NormKind Kind, typename T, typename Acc>
void clip_unit(const T* p, T* g, int64_t n, Acc norm_p, Acc clip_factor, T eps) {
  const auto round = [](Acc v) { return static_cast<Acc>(static_cast<T>(v)); };
  const Acc p_norm = round(unit_norm<Kind, T, Acc>(p, n, norm_p));
  const Acc max_norm = round(clamp_min_keep_nan(p_norm, static_cast<Acc>(eps)) * clip_factor);
  const Acc g_norm = round(unit_norm<Kind, T, Acc>(g, n, norm_p));
  if (g_norm < max_norm) {
    return;
  }
  const Acc ratio =
      round(max_norm / clamp_min_keep_nan(g_norm, static_cast<Acc>(static_cast<T>(1e-6))));
  for (int64_t i = 0; i < n; ++i) {
    g[i] = static_cast<T>(static_cast<Acc>(g[i]) * ratio);
  }
}

template <NormKind Kind, typename T>
void clip_tensor(const at::Tensor& param, const at::Tensor& grad, double norm_type,
                 double clip_factor, double eps) {
  using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t units = agc_units(grad);
  if (grad.numel() == 0 || units == 0) {
    return;
  }
  const int64_t len = grad.numel() / units;
  const T* p = param.const_data_ptr<T>();
  T* g = grad.mutable_data_ptr<T>();
  const Acc p_acc = static_cast<Acc>(norm_type);
  // torch multiplies a T tensor by a Python float in T's opmath type: the factor rounds to Acc.
  const Acc factor = static_cast<Acc>(clip_factor);
  const T eps_t = static_cast<T>(eps);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(len, 1));
  at::parallel_for(0, units, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      clip_unit<Kind, T, Acc>(p + u * len, g + u * len, len, p_acc, factor, eps_t);
    }
  });
}

void adaptive_clip_grad_cpu(at::TensorList params, at::TensorList grads, double clip_factor,
                            double eps, double norm_type) {
  const NormKind kind = check_adaptive_clip_grad(params, grads, clip_factor, eps, norm_type);
  for (size_t i = 0; i < grads.size(); ++i) {
    // Units are rows of the logical layout: other layouts (channels_last, views) go through a
    // contiguous copy, written back after.
    const at::Tensor param = params[i].contiguous();
    const bool in_place = grads[i].is_contiguous();
    const at::Tensor grad = in_place ? grads[i] : grads[i].contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, grad.scalar_type(), "adaptive_clip_grad_cpu", [&] {
          switch (kind) {
            case NormKind::L1:
              return clip_tensor<NormKind::L1, scalar_t>(param, grad, norm_type, clip_factor, eps);
            case NormKind::L2:
              return clip_tensor<NormKind::L2, scalar_t>(param, grad, norm_type, clip_factor, eps);
            case NormKind::Inf:
              return clip_tensor<NormKind::Inf, scalar_t>(param, grad, norm_type, clip_factor, eps);
            case NormKind::P:
              return clip_tensor<NormKind::P, scalar_t>(param, grad, norm_type, clip_factor, eps);
          }
        });
    if (!in_place) {
      grads[i].copy_(grad);
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CPU, m) {
  m.impl("adaptive_clip_grad_", &adaptive_clip_grad_cpu);
}

}  // namespace steadystep::cpu
