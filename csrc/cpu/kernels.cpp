// The CPU kernels, compiled once per ISA (see NOTE [CPU ISA dispatch] in kernels.h).

#include "cpu/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <type_traits>
#include <vector>

#ifndef CPU_CAPABILITY
#error "kernels.cpp is compiled with CPU_CAPABILITY set (DEFAULT or AVX2); see CMakeLists.txt"
#endif

namespace steadystep::cpu::CPU_CAPABILITY {

namespace {

using at::vec::Vectorized;

// |x| folded into an accumulator by the reduction of `Kind`.
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

// The reduction of one chunk in `Acc` lanes (fp32 for fp32/fp16/bf16 input). Four independent
// accumulators keep the FMA pipeline full.
template <NormKind Kind, typename T, typename Acc>
Acc chunk_partial(const T* x, int64_t n, Acc p) {
  using AccVec = Vectorized<Acc>;
  constexpr int kLanes = 4;
  const AccVec pv(p);
  AccVec acc[kLanes] = {AccVec(Acc(0)), AccVec(Acc(0)), AccVec(Acc(0)), AccVec(Acc(0))};
  int64_t i = 0;
  if constexpr (std::is_same_v<T, Acc>) {
    constexpr int64_t kStep = kLanes * AccVec::size();
    for (; i + kStep <= n; i += kStep) {
      for (int l = 0; l < kLanes; ++l) {
        acc[l] = accumulate<Kind>(acc[l], AccVec::loadu(x + i + l * AccVec::size()), pv);
      }
    }
  } else {
    // fp16/bf16: one reduced-precision vector widens into two fp32 vectors.
    using InVec = Vectorized<T>;
    constexpr int64_t kStep = 2 * InVec::size();
    for (; i + kStep <= n; i += kStep) {
      auto [a, b] = at::vec::convert_to_float<T>(InVec::loadu(x + i));
      auto [c, d] = at::vec::convert_to_float<T>(InVec::loadu(x + i + InVec::size()));
      acc[0] = accumulate<Kind>(acc[0], a, pv);
      acc[1] = accumulate<Kind>(acc[1], b, pv);
      acc[2] = accumulate<Kind>(acc[2], c, pv);
      acc[3] = accumulate<Kind>(acc[3], d, pv);
    }
  }
  alignas(64) Acc lanes[kLanes * AccVec::size()];
  for (int l = 0; l < kLanes; ++l) {
    acc[l].store(lanes + l * AccVec::size());
  }
  Acc result = lanes[0];
  for (int64_t l = 1; l < kLanes * AccVec::size(); ++l) {
    result = combine<Kind>(result, lanes[l]);
  }
  for (; i < n; ++i) {
    result = accumulate<Kind>(result, static_cast<Acc>(x[i]), p);
  }
  return result;
}

template <NormKind Kind>
double total_norm_of(const TensorChunks& chunks, double p, bool double_acc) {
  // NOTE [Deterministic partials]: each chunk writes its own partial; they are combined in a
  // fixed order in fp64, so the result does not depend on the thread count.
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
  return double_acc ? total : static_cast<float>(total);
}

// Applies `vec_op` (on fp32 / fp64 vectors) to every element, in place, over all chunks.
template <typename VecOp>
void for_each_chunk(const TensorChunks& chunks, VecOp vec_op) {
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk& chunk = chunks.chunk(c);
      const at::Tensor& t = chunks.tensor(chunk.tensor);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "steadystep", [&] {
        scalar_t* x = t.data_ptr<scalar_t>() + chunk.begin;
        // fp16/bf16 are widened to fp32 for the arithmetic and rounded once, as ATen does.
        at::vec::map([&](auto v) { return vec_op(v); }, x, x, chunk.size);
      });
    }
  });
}

}  // namespace

double total_norm(const TensorChunks& chunks, NormKind kind, double p, bool double_acc) {
  switch (kind) {
    case NormKind::L1:
      return total_norm_of<NormKind::L1>(chunks, p, double_acc);
    case NormKind::L2:
      return total_norm_of<NormKind::L2>(chunks, p, double_acc);
    case NormKind::Inf:
      return total_norm_of<NormKind::Inf>(chunks, p, double_acc);
    case NormKind::P:
      return total_norm_of<NormKind::P>(chunks, p, double_acc);
  }
  return 0.0;
}

void scale(const TensorChunks& chunks, double c) {
  // The coefficient as torch's foreach_mul_ reads it: in the tensor's opmath type.
  const float cf = static_cast<float>(c);
  for_each_chunk(chunks, [&](auto v) {
    using Vec = decltype(v);
    using T = typename Vec::value_type;
    return v * Vec(std::is_same_v<T, double> ? static_cast<T>(c) : static_cast<T>(cf));
  });
}

void clamp(const TensorChunks& chunks, double clip) {
  for_each_chunk(chunks, [&](auto v) {
    using Vec = decltype(v);
    using T = typename Vec::value_type;
    // clamp_min then clamp_max, nan passing through both, as torch's pair of foreach ops.
    return at::vec::minimum(at::vec::maximum(v, Vec(static_cast<T>(-clip))),
                            Vec(static_cast<T>(clip)));
  });
}

}  // namespace steadystep::cpu::CPU_CAPABILITY
