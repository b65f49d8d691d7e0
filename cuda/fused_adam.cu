// CUDA kernel of steadystep::_adam_step_: the whole Adam/AdamW update of a tensor list in one
// pass (read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq), with the
// gradient's clip coefficient and AMP scale folded in, and the step skipped on the device.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/fused_step.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace steadystep::cuda {

namespace {

constexpr int kParam = 0, kGrad = 1, kExpAvg = 2, kExpAvgSq = 3, kMaxExpAvgSq = 4, kStep = 5,
              kLast = 6;

// NOTE [Adam arithmetic]: the arithmetic of the CPU kernel (NOTE [Torch's rounding] in
// csrc/cpu/fused_optim_kernels.cpp), which is torch's single-tensor Adam op by op: exp_avg by
// lerp (fma(w, g - m, m) for |w| < 0.5, else fma(w - 1, g - m, g)), exp_avg_sq as
// fma((1 - beta2) * g, g, v * beta2), amsgrad's max with NaN kept, denom = sqrt(v) /
// sqrt(bias_correction2) + eps, param += (-step_size * exp_avg) / denom; bias corrections and
// the step size in fp64 from the step count, as torch computes them on the host. Every
// operation is an explicit IEEE one (elementwise.cuh), so nvcc fuses nothing else.
//
// NOTE [Low-precision steps on CUDA]: the states (S) may be in another dtype than the param
// (T): fp32 or bf16 for fp32/fp16/bf16 params. They are read upcast to the math type and
// stored rounded to nearest; the math is the same. With an fp32 master (ParamWrite::Master) w
// is read from the master instead of the param, the master gets w and the param w rounded to
// nearest; the param is not read. A bf16 param with a rounding key (ParamWrite::Stochastic) is
// written as NOTE [Stochastic rounding] (ops/stochastic_rounding.h) says, with the bits of its
// index in the whole tensor at this step. Both follow the CPU kernel element for element.
// With S == T and ParamWrite::Nearest the kernel is the plain one.
template <typename T, typename S, ParamWrite W, bool Amsgrad>
struct AdamFunctor {
  static constexpr int kDepth = W == ParamWrite::Nearest ? 6 : 7;

  __device__ void operator()(const TensorListMetadata<kDepth>& meta, AdamParams params) const {
    using Acc = typename OpMath<T>::type;
    constexpr bool kMaster = W == ParamWrite::Master;
    const StepControl& control = params.control;
    if (control.skip != nullptr && *control.skip != 0.0f) {
      return;  // non-finite gradients: leave every tensor bit-identical
    }
    const StepChunk chunk = step_chunk(meta);
    const double step = chunk_step(meta, chunk, kStep);
    const double bias_correction1 = 1 - pow(params.beta1, step);
    const double bias_correction2 = 1 - pow(params.beta2, step);
    const Acc neg_step_size = static_cast<Acc>(-(params.lr / bias_correction1));
    const Acc bias_correction2_sqrt = static_cast<Acc>(pow(bias_correction2, 0.5));
    const Acc multiplier =
        control.grad_multiplier ? static_cast<Acc>(*control.grad_multiplier) : Acc(1);
    const Acc lerp_weight = static_cast<Acc>(1 - params.beta1);
    const bool small_weight = fabs(lerp_weight) < Acc(0.5);
    const Acc lerp_weight_minus_one = sub_rn(lerp_weight, Acc(1));
    const Acc beta2 = static_cast<Acc>(params.beta2);
    const Acc one_minus_beta2 = static_cast<Acc>(1 - params.beta2);
    const Acc eps = static_cast<Acc>(params.eps);
    const Acc weight_decay = static_cast<Acc>(params.weight_decay);
    const Acc decay_factor = static_cast<Acc>(1 - params.lr * params.weight_decay);
    const bool use_multiplier = control.grad_multiplier != nullptr;

    T* p = chunk_data<T>(meta, chunk, kParam);
    const T* g = chunk_data<const T>(meta, chunk, kGrad);
    S* m = chunk_data<S>(meta, chunk, kExpAvg);
    S* v = chunk_data<S>(meta, chunk, kExpAvgSq);
    S* vmax = Amsgrad ? chunk_data<S>(meta, chunk, kMaxExpAvgSq) : nullptr;
    float* master = nullptr;
    if constexpr (kMaster) {
      master = chunk_data<float>(meta, chunk, kLast);
    }
    const ParamRounding<T, W> round_param = param_rounding<T, W>(meta, chunk, kLast, step);

    auto update = [&](Acc& pa, Acc ga, Acc& ma, Acc& va, Acc& vmaxa) {
      if (use_multiplier) {
        ga = mul_rn(ga, multiplier);  // clipped (and unscaled) gradient, as torch's in-place mul_
      }
      if (params.maximize) {
        ga = -ga;
      }
      if (params.weight_decay != 0) {
        if (params.decoupled_weight_decay) {
          pa = mul_rn(pa, decay_factor);
        } else {
          ga = fma_rn(pa, weight_decay, ga);
        }
      }
      const Acc diff = sub_rn(ga, ma);
      ma = small_weight ? fma_rn(lerp_weight, diff, ma) : fma_rn(lerp_weight_minus_one, diff, ga);
      va = fma_rn(mul_rn(one_minus_beta2, ga), ga, mul_rn(va, beta2));
      Acc second = va;
      if (Amsgrad) {
        vmaxa = nan_maximum(vmaxa, va);
        second = vmaxa;
      }
      const Acc denom = add_rn(div_rn(sqrt_rn(second), bias_correction2_sqrt), eps);
      pa = add_rn(pa, div_rn(mul_rn(neg_step_size, ma), denom));
    };

    constexpr int kVec = 16 / sizeof(T);
    const int64_t n = chunk.size;
    int64_t tail_start = 0;
    const bool aligned = vector_aligned<T, kVec>(p) && vector_aligned<T, kVec>(g) &&
                         vector_aligned<S, kVec>(m) && vector_aligned<S, kVec>(v) &&
                         (!Amsgrad || vector_aligned<S, kVec>(vmax)) &&
                         (!kMaster || vector_aligned<float, kVec>(master));
    if (aligned) {
      using Vec = AlignedVector<T, kVec>;
      using StateVec = AlignedVector<S, kVec>;
      using MasterVec = AlignedVector<float, kVec>;
      const int64_t nvec = n / kVec;
      for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
        Vec pv;
        MasterVec wv;
        if constexpr (kMaster) {
          wv = reinterpret_cast<MasterVec*>(master)[i];
        } else {
          pv = reinterpret_cast<Vec*>(p)[i];
        }
        const Vec gv = reinterpret_cast<const Vec*>(g)[i];
        StateVec mv = reinterpret_cast<StateVec*>(m)[i];
        StateVec vv = reinterpret_cast<StateVec*>(v)[i];
        StateVec xv;
        if (Amsgrad) {
          xv = reinterpret_cast<StateVec*>(vmax)[i];
        }
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          Acc pa;
          if constexpr (kMaster) {
            pa = wv.val[j];
          } else {
            pa = static_cast<Acc>(pv.val[j]);
          }
          Acc ma = static_cast<Acc>(mv.val[j]);
          Acc va = static_cast<Acc>(vv.val[j]);
          Acc xa = Amsgrad ? static_cast<Acc>(xv.val[j]) : Acc(0);
          update(pa, static_cast<Acc>(gv.val[j]), ma, va, xa);
          if constexpr (kMaster) {
            wv.val[j] = pa;
          }
          pv.val[j] = round_param(i * kVec + j, pa);
          mv.val[j] = static_cast<S>(ma);
          vv.val[j] = static_cast<S>(va);
          if (Amsgrad) {
            xv.val[j] = static_cast<S>(xa);
          }
        }
        reinterpret_cast<Vec*>(p)[i] = pv;
        if constexpr (kMaster) {
          reinterpret_cast<MasterVec*>(master)[i] = wv;
        }
        reinterpret_cast<StateVec*>(m)[i] = mv;
        reinterpret_cast<StateVec*>(v)[i] = vv;
        if (Amsgrad) {
          reinterpret_cast<StateVec*>(vmax)[i] = xv;
        }
      }
      tail_start = nvec * kVec;
    }
    for (int64_t i = tail_start + threadIdx.x; i < n; i += blockDim.x) {
      Acc pa;
      if constexpr (kMaster) {
        pa = master[i];
      } else {
        pa = static_cast<Acc>(p[i]);
      }
      Acc ma = static_cast<Acc>(m[i]), va = static_cast<Acc>(v[i]);
      Acc xa = Amsgrad ? static_cast<Acc>(vmax[i]) : Acc(0);
      update(pa, static_cast<Acc>(g[i]), ma, va, xa);
      if constexpr (kMaster) {
        master[i] = pa;
      }
      p[i] = round_param(i, pa);
      m[i] = static_cast<S>(ma);
      v[i] = static_cast<S>(va);
      if (Amsgrad) {
        vmax[i] = static_cast<S>(xa);
      }
    }
  }
};

// The launch metadata and the functor's arguments travel in the kernel's parameter space,
// which must stay under the classic 4 KB.
static_assert(sizeof(TensorListMetadata<7>) + sizeof(AdamParams) + 16 <= 4096);

template <typename T, typename S, ParamWrite W>
void adam_typed(const std::vector<std::array<void*, 7>>& tensors, const std::vector<int64_t>& numel,
                const AdamParams& params, cudaStream_t stream) {
  constexpr int kDepth = AdamFunctor<T, S, W, false>::kDepth;
  auto run = [&](const auto& entries) {
    if (params.amsgrad) {
      multi_tensor_apply<kDepth>(entries, numel, 0, stream, AdamFunctor<T, S, W, true>(), params);
    } else {
      multi_tensor_apply<kDepth>(entries, numel, 0, stream, AdamFunctor<T, S, W, false>(), params);
    }
  };
  if constexpr (kDepth == 7) {
    run(tensors);
  } else {
    run(first_slots<kDepth>(tensors));  // the last slot is unused: one pointer less per tensor
  }
}

}  // namespace

void launch_adam_step(const StepKind& kind, const std::vector<std::array<void*, 7>>& tensors,
                      const std::vector<int64_t>& numel, const AdamParams& params,
                      cudaStream_t stream) {
  dispatch_step_kind(kind, [&](auto t, auto s, auto w) {
    adam_typed<typename decltype(t)::type, typename decltype(s)::type, decltype(w)::value>(
        tensors, numel, params, stream);
  });
}

}  // namespace steadystep::cuda
