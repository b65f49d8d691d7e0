// CPU kernel of steadystep::_total_norm: one parallel pass over the chunks of all tensors.

#include "checks.h"
#include "cpu/multi_tensor_chunks.h"
#include "ops/norm_kind.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace steadystep::cpu {

namespace {

using at::vec::Vectorized;

// |x| combined into an accumulator by the reduction of `Kind`.
template <NormKind Kind, typename Acc>
inline Acc accumulate(Acc acc, Acc x, Acc p) {
  if constexpr (Kind == NormKind::L1) {
    return acc + std::abs(x);
  } else if constexpr (Kind == NormKind::L2) {
    return acc + x * x;
  } else if constexpr (Kind == NormKind::Inf) {
    const Acc a = std::abs(x);
    return (a > acc || std::isnan(a)) ? a : acc;  // nan wins, as in torch's max
  } else {
    return acc + std::pow(std::abs(x), p);
  }
}

template <NormKind Kind, typename Acc>
inline Vectorized<Acc> accumulate(const Vectorized<Acc>& acc, const Vectorized<Acc>& x,
                                  const Vectorized<Acc>& p) {
  if constexpr (Kind == NormKind::L1) {
    return acc + x.abs();
  } else if constexpr (Kind == NormKind::L2) {
    return at::vec::fmadd(x, x, acc);
  } else if constexpr (Kind == NormKind::Inf) {
    return at::vec::maximum(acc, x.abs());  // propagates nan
  } else {
    return acc + x.abs().pow(p);
  }
}

template <NormKind Kind, typename Acc>
inline Acc combine(Acc a, Acc b) {
  if constexpr (Kind == NormKind::Inf) {
    return (b > a || std::isnan(b)) ? b : a;
  } else {
    return a + b;
  }
}

// The reduction of one chunk, accumulated in `Acc` lanes (fp32 for fp32/fp16/bf16 input).
template <NormKind Kind, typename T, typename Acc>
Acc chunk_partial(const T* x, int64_t n, Acc p) {
  using AccVec = Vectorized<Acc>;
  const AccVec pv(p);
  AccVec acc0(Acc(0)), acc1(Acc(0));
  int64_t i = 0;
  if constexpr (std::is_same_v<T, Acc>) {
    constexpr int64_t kStep = 2 * AccVec::size();
    for (; i + kStep <= n; i += kStep) {
      acc0 = accumulate<Kind>(acc0, AccVec::loadu(x + i), pv);
      acc1 = accumulate<Kind>(acc1, AccVec::loadu(x + i + AccVec::size()), pv);
    }
  } else {
    // fp16/bf16: one reduced-precision vector widens into two fp32 vectors.
    using InVec = Vectorized<T>;
    constexpr int64_t kStep = InVec::size();
    for (; i + kStep <= n; i += kStep) {
      auto [lo, hi] = at::vec::convert_to_float<T>(InVec::loadu(x + i));
      acc0 = accumulate<Kind>(acc0, lo, pv);
      acc1 = accumulate<Kind>(acc1, hi, pv);
    }
  }
  alignas(64) Acc lanes[2 * AccVec::size()];
  acc0.store(lanes);
  acc1.store(lanes + AccVec::size());
  Acc result = lanes[0];
  for (int64_t l = 1; l < 2 * AccVec::size(); ++l) {
    result = combine<Kind>(result, lanes[l]);
  }
  for (; i < n; ++i) {
    result = accumulate<Kind>(result, static_cast<Acc>(x[i]), p);
  }
  return result;
}

template <NormKind Kind>
at::Tensor total_norm_impl(const TensorChunks& chunks, double p, at::ScalarType acc_dtype) {
  // NOTE [Deterministic partials]: each chunk writes its own partial; they are combined in a
  // fixed order in double, so the result does not depend on the thread count.
  std::vector<double> partials(chunks.size(), 0.0);
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk& chunk = chunks.chunk(c);
      const at::Tensor& t = chunks.tensor(chunk.tensor);
      AT_DISPATCH_FLOATING_TYPES_AND2(
          at::kHalf, at::kBFloat16, t.scalar_type(), "_total_norm", [&] {
            using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
            const scalar_t* x = t.const_data_ptr<scalar_t>() + chunk.begin;
            partials[c] = chunk_partial<Kind>(x, chunk.size, static_cast<acc_t>(p));
          });
    }
  });
  double total = 0.0;
  for (double v : partials) {
    total = combine<Kind>(total, v);
  }
  if constexpr (Kind == NormKind::L2) {
    total = std::sqrt(total);
  } else if constexpr (Kind == NormKind::P) {
    total = std::pow(total, 1.0 / p);
  }
  // fp32 accumulation ends in fp32: round the fp64 combination of the partials once.
  if (acc_dtype == at::kFloat) {
    total = static_cast<float>(total);
  }
  return at::scalar_tensor(total, at::TensorOptions().dtype(acc_dtype));
}

at::Tensor total_norm_cpu(at::TensorList tensors, double norm_type) {
  NormKind kind;
  TORCH_CHECK(kernel_norm_kind(norm_type, &kind), "_total_norm: norm_type must be > 0 or inf, got ",
              norm_type);
  check_strided(tensors, "_total_norm", "tensors");
  check_kernel_dtypes(tensors, "_total_norm", "tensors");
  if (!tensors.empty()) {
    check_on_device(tensors, tensors[0].device(), "_total_norm", "tensors");
  }
  const TensorChunks chunks(tensors);
  const at::ScalarType acc_dtype = accumulate_dtype(tensors);
  switch (kind) {
    case NormKind::L1:
      return total_norm_impl<NormKind::L1>(chunks, norm_type, acc_dtype);
    case NormKind::L2:
      return total_norm_impl<NormKind::L2>(chunks, norm_type, acc_dtype);
    case NormKind::Inf:
      return total_norm_impl<NormKind::Inf>(chunks, norm_type, acc_dtype);
    case NormKind::P:
      return total_norm_impl<NormKind::P>(chunks, norm_type, acc_dtype);
  }
  TORCH_INTERNAL_ASSERT(false, "unreachable");
}

}  // namespace

TORCH_LIBRARY_IMPL(steadystep, CPU, m) {
  m.impl("_total_norm", &total_norm_cpu);
}

}  // namespace steadystep::cpu
