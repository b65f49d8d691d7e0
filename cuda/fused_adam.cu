// CUDA kernel of steadystep::_adam_step_: the whole Adam/AdamW update of a tensor list in one
// pass (read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq), with the
// gradient's clip coefficient and AMP scale folded in, and the step skipped on the device.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace steadystep::cuda {

namespace {

constexpr int kParam = 0, kGrad = 1, kExpAvg = 2, kExpAvgSq = 3, kMaxExpAvgSq = 4, kStep = 5;

// NOTE [Adam arithmetic]: the arithmetic of the CPU kernel (NOTE [Torch's rounding] in
// csrc/cpu/fused_optim_kernels.cpp), which is torch's single-tensor Adam op by op: exp_avg by
// lerp (fma(w, g - m, m) for |w| < 0.5, else fma(w - 1, g - m, g)), exp_avg_sq as
// fma((1 - beta2) * g, g, v * beta2), amsgrad's max with NaN kept, denom = sqrt(v) /
// sqrt(bias_correction2) + eps, param += (-step_size * exp_avg) / denom; bias corrections and
// the step size in fp64 from the step count, as torch computes them on the host. Every
// operation is an explicit IEEE one (elementwise.cuh), so nvcc fuses nothing else.
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

    T* p = chunk.data<T>(kParam);
    const T* g = chunk.data<T>(kGrad);
    T* m = chunk.data<T>(kExpAvg);
    T* v = chunk.data<T>(kExpAvgSq);
    T* vmax = Amsgrad ? chunk.data<T>(kMaxExpAvgSq) : nullptr;

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
