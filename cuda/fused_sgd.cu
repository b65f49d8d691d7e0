// CUDA kernel of steadystep::_sgd_step_: the whole SGD update (weight decay, momentum with
// dampening, nesterov, maximize) of a tensor list in one pass, with the gradient's clip
// coefficient folded in and the step skipped on the device.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/fused_step.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace steadystep::cuda {

namespace {

constexpr int kParam = 0, kGrad = 1, kBuffer = 2, kStep = 3, kLast = 4;

// The arithmetic of the CPU kernel (NOTE [Torch's rounding] in
// csrc/cpu/fused_optim_kernels.cpp), torch's single-tensor SGD op by op: g = fma(p, wd, g);
// buf = g on the first step, else fma(g, 1 - dampening, buf * momentum); g = fma(buf,
// momentum, g) (nesterov) or buf; p = fma(g, -lr, p). The momentum buffer (S) and the param
// write (W) as NOTE [Low-precision steps on CUDA] in fused_adam.cu says.
template <typename T, typename S, ParamWrite W, bool Momentum>
struct SGDFunctor {
  static constexpr int kDepth = W == ParamWrite::Nearest ? 4 : 5;

  __device__ void operator()(const TensorListMetadata<kDepth>& meta, SGDParams params) const {
    using Acc = typename OpMath<T>::type;
    constexpr bool kMaster = W == ParamWrite::Master;
    const StepControl& control = params.control;
    if (control.skip != nullptr && *control.skip != 0.0f) {
      return;
    }
    const StepChunk chunk = step_chunk(meta);
    const float step = chunk_step(meta, chunk, kStep);
    const bool first_step = Momentum && step <= 1.0f;
    const Acc multiplier =
        control.grad_multiplier ? static_cast<Acc>(*control.grad_multiplier) : Acc(1);
    const bool use_multiplier = control.grad_multiplier != nullptr;
    const Acc weight_decay = static_cast<Acc>(params.weight_decay);
    const Acc momentum = static_cast<Acc>(params.momentum);
    const Acc one_minus_dampening = static_cast<Acc>(1 - params.dampening);
    const Acc neg_lr = static_cast<Acc>(-params.lr);

    T* p = chunk_data<T>(meta, chunk, kParam);
    const T* g = chunk_data<const T>(meta, chunk, kGrad);
    S* buf = Momentum ? chunk_data<S>(meta, chunk, kBuffer) : nullptr;
    float* master = nullptr;
    if constexpr (kMaster) {
      master = chunk_data<float>(meta, chunk, kLast);
    }
    const ParamRounding<T, W> round_param = param_rounding<T, W>(meta, chunk, kLast, step);

    auto update = [&](Acc& pa, Acc ga, Acc& ba) {
      if (use_multiplier) {
        ga = mul_rn(ga, multiplier);
      }
      if (params.maximize) {
        ga = -ga;
      }
      if (params.weight_decay != 0) {
        ga = fma_rn(pa, weight_decay, ga);
      }
      if (Momentum) {
        ba = first_step ? ga : fma_rn(ga, one_minus_dampening, mul_rn(ba, momentum));
        ga = params.nesterov ? fma_rn(ba, momentum, ga) : ba;
      }
      pa = fma_rn(ga, neg_lr, pa);
    };

    constexpr int kVec = 16 / sizeof(T);
    const int64_t n = chunk.size;
    int64_t tail_start = 0;
    if (vector_aligned<T, kVec>(p) && vector_aligned<T, kVec>(g) &&
        (!Momentum || vector_aligned<S, kVec>(buf)) &&
        (!kMaster || vector_aligned<float, kVec>(master))) {
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
        StateVec bv;
        if (Momentum) {
          bv = reinterpret_cast<StateVec*>(buf)[i];
        }
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          Acc pa;
          if constexpr (kMaster) {
            pa = wv.val[j];
          } else {
            pa = static_cast<Acc>(pv.val[j]);
          }
          Acc ba = Momentum ? static_cast<Acc>(bv.val[j]) : Acc(0);
          update(pa, static_cast<Acc>(gv.val[j]), ba);
          if constexpr (kMaster) {
            wv.val[j] = pa;
          }
          pv.val[j] = round_param(i * kVec + j, pa);
          if (Momentum) {
            bv.val[j] = static_cast<S>(ba);
          }
        }
        reinterpret_cast<Vec*>(p)[i] = pv;
        if constexpr (kMaster) {
          reinterpret_cast<MasterVec*>(master)[i] = wv;
        }
        if (Momentum) {
          reinterpret_cast<StateVec*>(buf)[i] = bv;
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
      Acc ba = Momentum ? static_cast<Acc>(buf[i]) : Acc(0);
      update(pa, static_cast<Acc>(g[i]), ba);
      if constexpr (kMaster) {
        master[i] = pa;
      }
      p[i] = round_param(i, pa);
      if (Momentum) {
        buf[i] = static_cast<S>(ba);
      }
    }
  }
};

static_assert(sizeof(TensorListMetadata<5>) + sizeof(SGDParams) + 16 <= 4096);

template <typename T, typename S, ParamWrite W>
void sgd_typed(const std::vector<std::array<void*, 5>>& tensors, const std::vector<int64_t>& numel,
               const SGDParams& params, cudaStream_t stream) {
  constexpr int kDepth = SGDFunctor<T, S, W, false>::kDepth;
  auto run = [&](const auto& entries) {
    if (params.momentum != 0) {
      multi_tensor_apply<kDepth>(entries, numel, 0, stream, SGDFunctor<T, S, W, true>(), params);
    } else {
      multi_tensor_apply<kDepth>(entries, numel, 0, stream, SGDFunctor<T, S, W, false>(), params);
    }
  };
  if constexpr (kDepth == 5) {
    run(tensors);
  } else {
    run(first_slots<kDepth>(tensors));  // the last slot is unused: one pointer less per tensor
  }
}

}  // namespace

void launch_sgd_step(const StepKind& kind, const std::vector<std::array<void*, 5>>& tensors,
                     const std::vector<int64_t>& numel, const SGDParams& params,
                     cudaStream_t stream) {
  dispatch_step_kind(kind, [&](auto t, auto s, auto w) {
    sgd_typed<typename decltype(t)::type, typename decltype(s)::type, decltype(w)::value>(
        tensors, numel, params, stream);
  });
}

}  // namespace steadystep::cuda
