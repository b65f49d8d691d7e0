// CPU kernels of the fused optimizer steps, compiled once per ISA (NOTE [CPU ISA dispatch]).
// One parallel pass over the chunks of all parameters; per element the same arithmetic, in the
// same order, as the CUDA kernels (NOTE [Adam arithmetic] in cuda/fused_adam.cu).

#include "cpu/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <type_traits>

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

template <typename T, bool Amsgrad, bool Maximize, bool Decoupled, bool Decay, bool Multiply>
void adam_chunk(const StepTensor& t, int64_t begin, int64_t n, const AdamHyper& h,
                double multiplier) {
  using Acc = acc_t<T>;
  const double bias_correction1 = 1 - std::pow(h.beta1, t.step);
  const double bias_correction2 = 1 - std::pow(h.beta2, t.step);
  const Acc neg_step_size = static_cast<Acc>(-(h.lr / bias_correction1));
  const Acc bias_correction2_sqrt = static_cast<Acc>(std::sqrt(bias_correction2));
  const Acc mult = static_cast<Acc>(multiplier);
  const Acc lerp_weight = static_cast<Acc>(1 - h.beta1);
  const Acc beta2 = static_cast<Acc>(h.beta2);
  const Acc one_minus_beta2 = static_cast<Acc>(1 - h.beta2);
  const Acc eps = static_cast<Acc>(h.eps);
  const Acc weight_decay = static_cast<Acc>(h.weight_decay);
  const Acc decay_factor = static_cast<Acc>(1 - h.lr * h.weight_decay);
  T* __restrict p = static_cast<T*>(t.param) + begin;
  const T* __restrict g = static_cast<const T*>(t.grad) + begin;
  T* __restrict m = static_cast<T*>(t.state[0]) + begin;
  T* __restrict v = static_cast<T*>(t.state[1]) + begin;
  T* __restrict vmax = Amsgrad ? static_cast<T*>(t.state[2]) + begin : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    Acc pa = static_cast<Acc>(p[i]);
    Acc ga = static_cast<Acc>(g[i]);
    if constexpr (Multiply) {
      ga = ga * mult;
    }
    if constexpr (Maximize) {
      ga = -ga;
    }
    if constexpr (Decay) {
      if constexpr (Decoupled) {
        pa = pa * decay_factor;
      } else {
        ga = ga + weight_decay * pa;
      }
    }
    Acc ma = static_cast<Acc>(m[i]);
    ma = ma + lerp_weight * (ga - ma);
    Acc va = static_cast<Acc>(v[i]) * beta2;
    va = va + one_minus_beta2 * ga * ga;
    Acc second = va;
    if constexpr (Amsgrad) {
      const Acc prev = static_cast<Acc>(vmax[i]);
      second = prev > va ? prev : va;
      vmax[i] = static_cast<T>(second);
    }
    const Acc denom = std::sqrt(second) / bias_correction2_sqrt + eps;
    pa = pa + neg_step_size * (ma / denom);
    p[i] = static_cast<T>(pa);
    m[i] = static_cast<T>(ma);
    v[i] = static_cast<T>(va);
  }
}

// Turns the runtime switches into template flags, so each inner loop is branch-free and
// vectorises.
template <typename T>
void adam_chunk_dispatch(const StepTensor& t, int64_t begin, int64_t n, const AdamHyper& h,
                         GradMultiplier mult) {
  const bool decay = h.weight_decay != 0;
  auto run = [&](auto amsgrad, auto maximize, auto decoupled, auto decay_on, auto multiply) {
    adam_chunk<T, decltype(amsgrad)::value, decltype(maximize)::value, decltype(decoupled)::value,
               decltype(decay_on)::value, decltype(multiply)::value>(t, begin, n, h, mult.value);
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

template <typename T, bool Momentum>
void sgd_chunk(const StepTensor& t, int64_t begin, int64_t n, const SGDHyper& h,
               GradMultiplier mult) {
  using Acc = acc_t<T>;
  const bool first_step = Momentum && t.step <= 1.0;
  const Acc multiplier = static_cast<Acc>(mult.value);
  const Acc weight_decay = static_cast<Acc>(h.weight_decay);
  const Acc momentum = static_cast<Acc>(h.momentum);
  const Acc one_minus_dampening = static_cast<Acc>(1 - h.dampening);
  const Acc neg_lr = static_cast<Acc>(-h.lr);
  T* __restrict p = static_cast<T*>(t.param) + begin;
  const T* __restrict g = static_cast<const T*>(t.grad) + begin;
  T* __restrict buf = Momentum ? static_cast<T*>(t.state[0]) + begin : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    Acc pa = static_cast<Acc>(p[i]);
    Acc ga = static_cast<Acc>(g[i]);
    if (mult.active) {
      ga = ga * multiplier;
    }
    if (h.maximize) {
      ga = -ga;
    }
    if (h.weight_decay != 0) {
      ga = ga + weight_decay * pa;
    }
    if constexpr (Momentum) {
      const Acc ba =
          first_step ? ga : static_cast<Acc>(buf[i]) * momentum + one_minus_dampening * ga;
      buf[i] = static_cast<T>(ba);
      ga = h.nesterov ? ga + momentum * ba : ba;
    }
    p[i] = static_cast<T>(pa + neg_lr * ga);
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
      if (hyper.momentum != 0) {
        sgd_chunk<scalar_t, true>(t, c.begin, c.size, hyper, multiplier);
      } else {
        sgd_chunk<scalar_t, false>(t, c.begin, c.size, hyper, multiplier);
      }
    });
  });
}

}  // namespace steadystep::cpu::CPU_CAPABILITY
