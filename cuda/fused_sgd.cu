// CUDA kernel of steadystep::_sgd_step_: the whole SGD update (weight decay, momentum with
// dampening, nesterov, maximize) of a tensor list in one pass, with the gradient's clip
// coefficient folded in and the step skipped on the device.

#include "cuda/elementwise.cuh"
#include "cuda/fused_optim.cuh"
#include "cuda/multi_tensor_apply.cuh"

namespace steadystep::cuda {

namespace {

constexpr int kParam = 0, kGrad = 1, kBuffer = 2, kStep = 3;

// The arithmetic of the CPU kernel (NOTE [Torch's rounding] in
// csrc/cpu/fused_optim_kernels.cpp), torch's single-tensor SGD op by op: g = fma(p, wd, g);
// buf = g on the first step, else fma(g, 1 - dampening, buf * momentum); g = fma(buf,
// momentum, g) (nesterov) or buf; p = fma(g, -lr, p).
template <typename T, bool Momentum>
struct SGDFunctor {
  __device__ void operator()(const TensorListMetadata<4>& meta, SGDParams params) const {
    using Acc = typename OpMath<T>::type;
    const StepControl& control = params.control;
    if (control.skip != nullptr && *control.skip != 0.0f) {
      return;
    }
    const ChunkView<4> chunk = chunk_view<T>(meta);
    const bool first_step =
        Momentum && *static_cast<const float*>(meta.addresses[kStep][chunk.tensor]) <= 1.0f;
    const Acc multiplier =
        control.grad_multiplier ? static_cast<Acc>(*control.grad_multiplier) : Acc(1);
    const bool use_multiplier = control.grad_multiplier != nullptr;
    const Acc weight_decay = static_cast<Acc>(params.weight_decay);
    const Acc momentum = static_cast<Acc>(params.momentum);
    const Acc one_minus_dampening = static_cast<Acc>(1 - params.dampening);
    const Acc neg_lr = static_cast<Acc>(-params.lr);

    T* p = chunk.data<T>(kParam);
    const T* g = chunk.data<T>(kGrad);
    T* buf = Momentum ? chunk.data<T>(kBuffer) : nullptr;

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
    if (is_aligned<16>(p) && is_aligned<16>(g) && (!Momentum || is_aligned<16>(buf))) {
      using Vec = AlignedVector<T, kVec>;
      const int64_t nvec = n / kVec;
      for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
        Vec pv = reinterpret_cast<Vec*>(p)[i];
        const Vec gv = reinterpret_cast<const Vec*>(g)[i];
        Vec bv;
        if (Momentum) {
          bv = reinterpret_cast<Vec*>(buf)[i];
        }
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          Acc pa = static_cast<Acc>(pv.val[j]);
          Acc ba = Momentum ? static_cast<Acc>(bv.val[j]) : Acc(0);
          update(pa, static_cast<Acc>(gv.val[j]), ba);
          pv.val[j] = static_cast<T>(pa);
          if (Momentum) {
            bv.val[j] = static_cast<T>(ba);
          }
        }
        reinterpret_cast<Vec*>(p)[i] = pv;
        if (Momentum) {
          reinterpret_cast<Vec*>(buf)[i] = bv;
        }
      }
      tail_start = nvec * kVec;
    }
    for (int64_t i = tail_start + threadIdx.x; i < n; i += blockDim.x) {
      Acc pa = static_cast<Acc>(p[i]);
      Acc ba = Momentum ? static_cast<Acc>(buf[i]) : Acc(0);
      update(pa, static_cast<Acc>(g[i]), ba);
      p[i] = static_cast<T>(pa);
      if (Momentum) {
        buf[i] = static_cast<T>(ba);
      }
    }
  }
};

template <typename T>
void sgd_typed(const std::vector<std::array<void*, 4>>& tensors, const std::vector<int64_t>& numel,
               const SGDParams& params, cudaStream_t stream) {
  if (params.momentum != 0) {
    multi_tensor_apply<4>(tensors, numel, 0, stream, SGDFunctor<T, true>(), params);
  } else {
    multi_tensor_apply<4>(tensors, numel, 0, stream, SGDFunctor<T, false>(), params);
  }
}

}  // namespace

void launch_sgd_step(DType dtype, const std::vector<std::array<void*, 4>>& tensors,
                     const std::vector<int64_t>& numel, const SGDParams& params,
                     cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return sgd_typed<float>(tensors, numel, params, stream);
    case DType::Half:
      return sgd_typed<__half>(tensors, numel, params, stream);
    case DType::BFloat16:
      return sgd_typed<__nv_bfloat16>(tensors, numel, params, stream);
    case DType::Double:
      return sgd_typed<double>(tensors, numel, params, stream);
  }
}

}  // namespace steadystep::cuda
