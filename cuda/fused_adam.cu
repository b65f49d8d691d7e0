// CUDA kernel of steadystep::_adam_step_: the whole Adam/AdamW update of a tensor list in one
// pass (read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq), with the
// gradient's clip coefficient and AMP scale folded in, and the step skipped on the device.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace steadystep::cuda {

namespace {

constexpr int kParam = 0, kGrad = 1, kExpAvg = 2, kExpAvgSq = 3, kMaxExpAvgSq = 4, kStep = 5;

// NOTE [Adam arithmetic]: the order of operations follows torch's foreach Adam: exp_avg by
// lerp (a + w * (b - a) for w < 0.5), exp_avg_sq as mul then addcmul, denom = sqrt(v) /
// sqrt(bias_correction2) + eps, param += (-step_size) * (exp_avg / denom); bias corrections
// and the step size in fp64 from the step count, as torch computes them on the host.
template <typename T, bool Amsgrad>
struct AdamFunctor {
  __device__ void operator()(const TensorListMetadata<6>& meta, AdamParams params) const {
    using Acc = typename OpMath<T>::type;
    const StepControl& control = params.control;
    if (control.skip != nullptr && *control.skip != 0.0f) {
      return;  // non-finite gradients: leave every tensor bit-identical
    }
    const ChunkView<6> chunk = chunk_view<T>(meta);
    const double step = *static_cast<const float*>(meta.addresses[kStep][chunk.tensor]);
    const double bias_correction1 = 1 - pow(params.beta1, step);
    const double bias_correction2 = 1 - pow(params.beta2, step);
    const Acc neg_step_size = static_cast<Acc>(-(params.lr / bias_correction1));
    const Acc bias_correction2_sqrt = static_cast<Acc>(sqrt(bias_correction2));
    const Acc multiplier =
        control.grad_multiplier ? static_cast<Acc>(*control.grad_multiplier) : Acc(1);
    const Acc lerp_weight = static_cast<Acc>(1 - params.beta1);
    const Acc beta2 = static_cast<Acc>(params.beta2);
    const Acc one_minus_beta2 = static_cast<Acc>(1 - params.beta2);
    const Acc eps = static_cast<Acc>(params.eps);
    const Acc weight_decay = static_cast<Acc>(params.weight_decay);
    const Acc decay_factor = static_cast<Acc>(1 - params.lr * params.weight_decay);
    const bool use_multiplier = control.grad_multiplier != nullptr;

    T* p = chunk.data<T>(kParam);
    const T* g = chunk.data<T>(kGrad);
    T* m = chunk.data<T>(kExpAvg);
    T* v = chunk.data<T>(kExpAvgSq);
    T* vmax = Amsgrad ? chunk.data<T>(kMaxExpAvgSq) : nullptr;

    auto update = [&](Acc& pa, Acc ga, Acc& ma, Acc& va, Acc& vmaxa) {
      if (use_multiplier) {
        ga = ga * multiplier;  // clipped (and unscaled) gradient, as torch's in-place mul_
      }
      if (params.maximize) {
        ga = -ga;
      }
      if (params.weight_decay != 0) {
        if (params.decoupled_weight_decay) {
          pa = pa * decay_factor;
        } else {
          ga = ga + weight_decay * pa;
        }
      }
      ma = ma + lerp_weight * (ga - ma);
      va = va * beta2;
      va = va + one_minus_beta2 * ga * ga;
      Acc second = va;
      if (Amsgrad) {
        vmaxa = vmaxa > va ? vmaxa : va;
        second = vmaxa;
      }
      const Acc denom = sqrt(second) / bias_correction2_sqrt + eps;
      pa = pa + neg_step_size * (ma / denom);
    };

    constexpr int kVec = 16 / sizeof(T);
    const int64_t n = chunk.size;
    int64_t tail_start = 0;
    const bool aligned = is_aligned<16>(p) && is_aligned<16>(g) && is_aligned<16>(m) &&
                         is_aligned<16>(v) && (!Amsgrad || is_aligned<16>(vmax));
    if (aligned) {
      using Vec = AlignedVector<T, kVec>;
      const int64_t nvec = n / kVec;
      for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
        Vec pv = reinterpret_cast<Vec*>(p)[i];
        const Vec gv = reinterpret_cast<const Vec*>(g)[i];
        Vec mv = reinterpret_cast<Vec*>(m)[i];
        Vec vv = reinterpret_cast<Vec*>(v)[i];
        Vec xv;
        if (Amsgrad) {
          xv = reinterpret_cast<Vec*>(vmax)[i];
        }
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          Acc pa = static_cast<Acc>(pv.val[j]), ma = static_cast<Acc>(mv.val[j]);
          Acc va = static_cast<Acc>(vv.val[j]);
          Acc xa = Amsgrad ? static_cast<Acc>(xv.val[j]) : Acc(0);
          update(pa, static_cast<Acc>(gv.val[j]), ma, va, xa);
          pv.val[j] = static_cast<T>(pa);
          mv.val[j] = static_cast<T>(ma);
          vv.val[j] = static_cast<T>(va);
          if (Amsgrad) {
            xv.val[j] = static_cast<T>(xa);
          }
        }
        reinterpret_cast<Vec*>(p)[i] = pv;
        reinterpret_cast<Vec*>(m)[i] = mv;
        reinterpret_cast<Vec*>(v)[i] = vv;
        if (Amsgrad) {
          reinterpret_cast<Vec*>(vmax)[i] = xv;
        }
      }
      tail_start = nvec * kVec;
    }
    for (int64_t i = tail_start + threadIdx.x; i < n; i += blockDim.x) {
      Acc pa = static_cast<Acc>(p[i]), ma = static_cast<Acc>(m[i]), va = static_cast<Acc>(v[i]);
      Acc xa = Amsgrad ? static_cast<Acc>(vmax[i]) : Acc(0);
      update(pa, static_cast<Acc>(g[i]), ma, va, xa);
      p[i] = static_cast<T>(pa);
      m[i] = static_cast<T>(ma);
      v[i] = static_cast<T>(va);
      if (Amsgrad) {
        vmax[i] = static_cast<T>(xa);
      }
    }
  }
};

template <typename T>
void adam_typed(const std::vector<std::array<void*, 6>>& tensors, const std::vector<int64_t>& numel,
                const AdamParams& params, cudaStream_t stream) {
  if (params.amsgrad) {
    multi_tensor_apply<6>(tensors, numel, 0, stream, AdamFunctor<T, true>(), params);
  } else {
    multi_tensor_apply<6>(tensors, numel, 0, stream, AdamFunctor<T, false>(), params);
  }
}

}  // namespace

void launch_adam_step(DType dtype, const std::vector<std::array<void*, 6>>& tensors,
                      const std::vector<int64_t>& numel, const AdamParams& params,
                      cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return adam_typed<float>(tensors, numel, params, stream);
    case DType::Half:
      return adam_typed<__half>(tensors, numel, params, stream);
    case DType::BFloat16:
      return adam_typed<__nv_bfloat16>(tensors, numel, params, stream);
    case DType::Double:
      return adam_typed<double>(tensors, numel, params, stream);
  }
}

}  // namespace steadystep::cuda
