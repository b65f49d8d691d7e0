// CPU kernels of the fused optimizer steps, compiled once per ISA (NOTE [CPU ISA dispatch]).
// One parallel pass over the chunks of all parameters; per element the same arithmetic, in the
// same order, as the CUDA kernels (NOTE [Torch's rounding]).

#include "cpu/kernels.h"
#include "cpu/torch_sqrt.h"
#include "ops/stochastic_rounding.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#ifndef CPU_CAPABILITY
#error "fused_optim_kernels.cpp is compiled with CPU_CAPABILITY set; see CMakeLists.txt"
#endif

namespace steadystep::cpu::CPU_CAPABILITY {

namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

struct StepChunk {
  int64_t tensor, begin, size;
};

std::vector<StepChunk> step_chunks(const std::vector<StepTensor>& tensors) {
  std::vector<StepChunk> chunks;
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (int64_t begin = 0; begin < tensors[t].numel; begin += kChunkSize) {
      chunks.push_back(
          {static_cast<int64_t>(t), begin, std::min(kChunkSize, tensors[t].numel - begin)});
    }
  }
  return chunks;
}

// Runs body(chunk, tensor) for every chunk of every tensor, in parallel.
template <typename Body>
void for_each_step_chunk(const std::vector<StepTensor>& tensors, Body body) {
  const auto chunks = step_chunks(tensors);
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      body(chunks[c], tensors[chunks[c].tensor]);
    }
  });
}

// NOTE [Torch's rounding]: for fp32 and fp64 the arithmetic is torch's single-tensor Adam/SGD
// on CPU, op by op, in its order and with its roundings: each `x + a * y` of ATen's kernels
// (add with alpha, lerp, addcmul) is one fused multiply-add in its AVX2/AVX512 builds, in the
// vector loop and in the scalar tail alike (measured), so it is one here (`fmadd`); ATen's
// DEFAULT build has no FMA, nor has ours (registration.cpp follows torch's CPU capability).
// Adam's square root is torch's own CPU sqrt (`torch_sqrt`, NOTE [Torch's sqrt on CPU]),
// which costs a second pass over each chunk. fp16/bf16 keep their intermediates in fp32 (one
// rounding per stored state), as torch's fused kernels do. The CUDA kernels compute the same, with
// CUDA's correctly rounded sqrt, which is torch's there (NOTE [Adam arithmetic] in
// cuda/fused_adam.cu).
template <typename A>
inline A fmadd(A a, A b, A c) {
#if defined(CPU_CAPABILITY_AVX2)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// torch.lerp(start, end, w) as ATen computes it: from the nearer end, by one fused multiply-add.
template <typename A>
inline A lerp(A start, A end, A w, bool small_weight) {
  return small_weight ? fmadd(w, end - start, start) : fmadd(w - A(1), end - start, end);
}

// torch.maximum: NaN wins.
template <typename A>
inline A nan_maximum(A a, A b) {
  if (std::isnan(a) || std::isnan(b)) {
    return std::numeric_limits<A>::quiet_NaN();
  }
  return a > b ? a : b;
}

// The switches of one Adam chunk, each a std::bool_constant (the common paths: the inner
// loop is compiled per combination and vectorises branch-free) or a plain bool (the rarer
// precision paths: one loop with the tests inside, which keeps the number of instantiations
// down). `if (f.maximize)` reads either.
// A value of the math type stored as T, rounded to nearest. bf16 is rounded here without a
// branch (c10::BFloat16's constructor tests for nan first, which keeps GCC from vectorising
// the loops that store it): ties to even, every nan to c10's 0x7fc0, the same bits.
template <typename T, typename A>
inline T narrow(A value) {
  if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<A, float>) {
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    const uint32_t rounded = (u + 0x7fffU + ((u >> 16) & 1U)) >> 16;
    const bool nan = (u & 0x7fffffffU) > 0x7f800000U;
    return c10::BFloat16(static_cast<uint16_t>(nan ? 0x7fc0U : rounded),
                         c10::BFloat16::from_bits());
  } else {
    return static_cast<T>(value);
  }
}

template <typename Amsgrad, typename Maximize, typename Decoupled, typename Decay,
          typename Multiply>
struct AdamFlags {
  Amsgrad amsgrad;
  Maximize maximize;
  Decoupled decoupled;
  Decay decay;
  Multiply multiply;
};

// Where a chunk's updated weights go (NOTE [Stochastic rounding] and the master weights): P is
// the param's type, W the type the weights are read from and updated in (fp32 with a master,
// whose update is then rounded to nearest into the param as well).
template <typename P, bool Master, bool Stochastic>
struct WeightStore {
  using W = std::conditional_t<Master, float, P>;
  P* param;  // the param's chunk; written through `store` only with a master
  W* weights;
  uint32_t stream = 0;
  int64_t begin;

  WeightStore(const StepTensor& t, int64_t chunk_begin)
      : param(static_cast<P*>(t.param) + chunk_begin),
        weights(Master ? reinterpret_cast<W*>(t.master + chunk_begin)
                       : reinterpret_cast<W*>(static_cast<P*>(t.param) + chunk_begin)),
        begin(chunk_begin) {
    if constexpr (Stochastic) {
      static_assert(std::is_same_v<P, c10::BFloat16>, "stochastic rounding is for bf16 params");
      stream = rounding::stream_at(rounding::step_stream(t.rounding_key, t.step), chunk_begin);
    }
  }

  template <typename A>
  void store(W* __restrict w, int64_t i, A value) const {
    if constexpr (Master) {
      w[i] = value;
      param[i] = narrow<P>(value);
    } else if constexpr (Stochastic) {
      w[i] = c10::BFloat16(
          rounding::bf16_bits_stochastic(value, rounding::element_bits(stream, begin + i)),
          c10::BFloat16::from_bits());
    } else {
      w[i] = narrow<W>(value);
    }
  }
};

template <typename P, typename S, bool Master, bool Stochastic, typename Flags>
void adam_chunk(const StepTensor& t, int64_t begin, int64_t n, const AdamHyper& h,
                double multiplier, Flags f) {
  using Acc = acc_t<P>;
  using Store = WeightStore<P, Master, Stochastic>;
  using W = typename Store::W;
  // Host scalars as torch's single-tensor Adam forms them in Python (fp64), then cast to the
  // op's scalar type as ATen does with a Python number.
  const double bias_correction1 = 1 - std::pow(h.beta1, t.step);
  const double bias_correction2 = 1 - std::pow(h.beta2, t.step);
  const Acc neg_step_size = static_cast<Acc>(-(h.lr / bias_correction1));
  const Acc bias_correction2_sqrt = static_cast<Acc>(std::pow(bias_correction2, 0.5));
  const Acc mult = static_cast<Acc>(multiplier);
  const Acc lerp_weight = static_cast<Acc>(1 - h.beta1);
  const bool small_weight = std::abs(lerp_weight) < Acc(0.5);
  const Acc beta2 = static_cast<Acc>(h.beta2);
  const Acc one_minus_beta2 = static_cast<Acc>(1 - h.beta2);
  const Acc eps = static_cast<Acc>(h.eps);
  const Acc weight_decay = static_cast<Acc>(h.weight_decay);
  const Acc decay_factor = static_cast<Acc>(1 - h.lr * h.weight_decay);
  const Store out(t, begin);
  W* __restrict w = out.weights;
  const P* __restrict g = static_cast<const P*>(t.grad) + begin;
  S* __restrict m = static_cast<S*>(t.state[0]) + begin;
  S* __restrict v = static_cast<S*>(t.state[1]) + begin;
  S* __restrict vmax = f.amsgrad ? static_cast<S*>(t.state[2]) + begin : nullptr;
  // Weights and state in the math type (fp32/fp64, a master's fp32 included): two passes with
  // torch's own sqrt between them (NOTE [Torch's rounding]); the first leaves the weights
  // (decayed), exp_avg and the second moment in memory, exactly as torch's ops leave them.
  // Otherwise (fp16/bf16 storage): one pass, intermediates in fp32.
  constexpr bool kTorchSqrt = std::is_same_v<W, Acc> && std::is_same_v<S, Acc>;
  Acc* __restrict root = nullptr;
  if constexpr (kTorchSqrt) {
    thread_local std::vector<Acc> buffer;
    buffer.resize(static_cast<size_t>(n));
    root = buffer.data();
  }
  for (int64_t i = 0; i < n; ++i) {
    Acc pa = static_cast<Acc>(w[i]);
    Acc ga = static_cast<Acc>(g[i]);
    if (f.multiply) {
      ga = ga * mult;  // clip_grads_with_norm_'s in-place mul_
    }
    if (f.maximize) {
      ga = -ga;
    }
    if (f.decay) {
      if (f.decoupled) {
        pa = pa * decay_factor;  // param.mul_(1 - lr * weight_decay)
      } else {
        ga = fmadd(pa, weight_decay, ga);  // grad.add(param, alpha=weight_decay)
      }
    }
    // exp_avg.lerp_(grad, 1 - beta1)
    const Acc ma = lerp(static_cast<Acc>(m[i]), ga, lerp_weight, small_weight);
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    const Acc va_decayed = static_cast<Acc>(v[i]) * beta2;
    const Acc va = fmadd(one_minus_beta2 * ga, ga, va_decayed);
    Acc second = va;
    if (f.amsgrad) {
      second = nan_maximum(static_cast<Acc>(vmax[i]), va);  // torch.maximum(..., out=max)
      vmax[i] = narrow<S>(second);
    }
    m[i] = narrow<S>(ma);
    v[i] = narrow<S>(va);
    if constexpr (kTorchSqrt) {
      if (f.decay && f.decoupled) {
        w[i] = pa;
      }
      root[i] = second;
    } else {
      const Acc denom = std::sqrt(second) / bias_correction2_sqrt + eps;
      out.store(w, i, pa + (neg_step_size * ma) / denom);
    }
  }
  if constexpr (kTorchSqrt) {
    torch_sqrt(root, n);
    for (int64_t i = 0; i < n; ++i) {
      // denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
      const Acc denom = root[i] / bias_correction2_sqrt + eps;
      // param.addcdiv_(exp_avg, denom, value=-step_size)
      out.store(w, i, w[i] + (neg_step_size * m[i]) / denom);
    }
  }
}

// Calls fn(S{}) with S the C++ type of a param's state dtype: its own, fp32 or bf16 (fp64
// params: fp64 only, as the checks require).
template <typename P, typename Fn>
void with_state_type(at::ScalarType state_dtype, Fn&& fn) {
  if (state_dtype == c10::CppTypeToScalarType<P>::value) {
    fn(P{});
    return;
  }
  if constexpr (!std::is_same_v<P, double>) {
    if (state_dtype == at::kFloat) {
      fn(float{});
      return;
    }
    if (state_dtype == at::kBFloat16) {
      fn(c10::BFloat16{});
      return;
    }
  }
  TORCH_CHECK(false, "fused step: state dtype ", state_dtype, " for a ",
              c10::CppTypeToScalarType<P>::value, " param");
}

// Calls body(S{}, master, stochastic) with the chunk's precision path as template constants;
// returns false for the plain path (state in the param's dtype, no master, round to nearest),
// which the callers compile per flag combination.
template <typename P, typename Body>
bool with_precision(const StepTensor& t, Body&& body) {
  constexpr bool kHalfPrecision = std::is_same_v<P, c10::Half> || std::is_same_v<P, c10::BFloat16>;
  const bool stochastic = t.stochastic && std::is_same_v<P, c10::BFloat16>;
  if (t.master == nullptr && !stochastic && t.state_dtype == t.dtype) {
    return false;
  }
  with_state_type<P>(t.state_dtype, [&](auto state) {
    using S = decltype(state);
    if constexpr (kHalfPrecision) {
      if (t.master != nullptr) {
        body(S{}, std::true_type{}, std::false_type{});
        return;
      }
    }
    if constexpr (std::is_same_v<P, c10::BFloat16>) {
      if (stochastic) {
        body(S{}, std::false_type{}, std::true_type{});
        return;
      }
    }
    body(S{}, std::false_type{}, std::false_type{});
  });
  return true;
}

// Turns the runtime switches into template flags, so each inner loop is branch-free and
// vectorises.
template <typename T>
void adam_chunk_dispatch(const StepTensor& t, int64_t begin, int64_t n, const AdamHyper& h,
                         GradMultiplier mult) {
  const bool decay = h.weight_decay != 0;
  // amsgrad stays a template flag here: its store is conditional, which a runtime test would
  // leave in the loop as a branch (no vectorisation); the other switches are selects.
  const bool precision_path = with_precision<T>(t, [&](auto state, auto master, auto stochastic) {
    auto run = [&](auto amsgrad) {
      adam_chunk<T, decltype(state), decltype(master)::value, decltype(stochastic)::value>(
          t, begin, n, h, mult.value,
          AdamFlags<decltype(amsgrad), bool, bool, bool, bool>{
              amsgrad, h.maximize, h.decoupled_weight_decay, decay, mult.active});
    };
    h.amsgrad ? run(std::true_type{}) : run(std::false_type{});
  });
  if (precision_path) {
    return;
  }
  auto run = [&](auto amsgrad, auto maximize, auto decoupled, auto decay_on, auto multiply) {
    adam_chunk<T, T, false, false>(
        t, begin, n, h, mult.value,
        AdamFlags<decltype(amsgrad), decltype(maximize), decltype(decoupled), decltype(decay_on),
                  decltype(multiply)>{});
  };
  using F = std::false_type;
  using Tr = std::true_type;
  auto with_multiply = [&](auto a, auto mx, auto dc, auto dy) {
    mult.active ? run(a, mx, dc, dy, Tr{}) : run(a, mx, dc, dy, F{});
  };
  auto with_decay = [&](auto a, auto mx) {
    if (!decay) {
      with_multiply(a, mx, F{}, F{});
    } else if (h.decoupled_weight_decay) {
      with_multiply(a, mx, Tr{}, Tr{});
    } else {
      with_multiply(a, mx, F{}, Tr{});
    }
  };
  auto with_maximize = [&](auto a) { h.maximize ? with_decay(a, Tr{}) : with_decay(a, F{}); };
  h.amsgrad ? with_maximize(Tr{}) : with_maximize(F{});
}

template <typename P, typename S, bool Master, bool Stochastic, bool Momentum>
void sgd_chunk(const StepTensor& t, int64_t begin, int64_t n, const SGDHyper& h,
               GradMultiplier mult) {
  using Acc = acc_t<P>;
  using Store = WeightStore<P, Master, Stochastic>;
  const bool first_step = Momentum && t.step <= 1.0;
  const Acc multiplier = static_cast<Acc>(mult.value);
  const Acc weight_decay = static_cast<Acc>(h.weight_decay);
  const Acc momentum = static_cast<Acc>(h.momentum);
  const Acc one_minus_dampening = static_cast<Acc>(1 - h.dampening);
  const Acc neg_lr = static_cast<Acc>(-h.lr);
  const Store out(t, begin);
  typename Store::W* __restrict w = out.weights;
  const P* __restrict g = static_cast<const P*>(t.grad) + begin;
  S* __restrict buf = Momentum ? static_cast<S*>(t.state[0]) + begin : nullptr;
  // NOTE [Torch's rounding]; the steps of torch's single-tensor SGD.
  for (int64_t i = 0; i < n; ++i) {
    const Acc pa = static_cast<Acc>(w[i]);
    Acc ga = static_cast<Acc>(g[i]);
    if (mult.active) {
      ga = ga * multiplier;
    }
    if (h.maximize) {
      ga = -ga;
    }
    if (h.weight_decay != 0) {
      ga = fmadd(pa, weight_decay, ga);  // grad.add(param, alpha=weight_decay)
    }
    if constexpr (Momentum) {
      // buf = grad.clone() first, then buf.mul_(momentum).add_(grad, alpha=1 - dampening)
      const Acc ba =
          first_step ? ga : fmadd(ga, one_minus_dampening, static_cast<Acc>(buf[i]) * momentum);
      buf[i] = narrow<S>(ba);
      // grad.add(buf, alpha=momentum) (nesterov) or buf
      ga = h.nesterov ? fmadd(ba, momentum, ga) : ba;
    }
    out.store(w, i, fmadd(ga, neg_lr, pa));  // param.add_(grad, alpha=-lr)
  }
}

template <typename P>
void sgd_chunk_dispatch(const StepTensor& t, int64_t begin, int64_t n, const SGDHyper& h,
                        GradMultiplier mult) {
  auto run = [&](auto state, auto master, auto stochastic) {
    using S = decltype(state);
    constexpr bool kMaster = decltype(master)::value, kStochastic = decltype(stochastic)::value;
    if (h.momentum != 0) {
      sgd_chunk<P, S, kMaster, kStochastic, true>(t, begin, n, h, mult);
    } else {
      sgd_chunk<P, S, kMaster, kStochastic, false>(t, begin, n, h, mult);
    }
  };
  if (!with_precision<P>(t, run)) {
    run(P{}, std::false_type{}, std::false_type{});
  }
}

}  // namespace

void adam_step(const std::vector<StepTensor>& tensors, const AdamHyper& hyper,
               GradMultiplier multiplier) {
  for_each_step_chunk(tensors, [&](const StepChunk& c, const StepTensor& t) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.dtype, "_adam_step_", [&] {
      adam_chunk_dispatch<scalar_t>(t, c.begin, c.size, hyper, multiplier);
    });
  });
}

void sgd_step(const std::vector<StepTensor>& tensors, const SGDHyper& hyper,
              GradMultiplier multiplier) {
  for_each_step_chunk(tensors, [&](const StepChunk& c, const StepTensor& t) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.dtype, "_sgd_step_", [&] {
      sgd_chunk_dispatch<scalar_t>(t, c.begin, c.size, hyper, multiplier);
    });
  });
}

}  // namespace steadystep::cpu::CPU_CAPABILITY
