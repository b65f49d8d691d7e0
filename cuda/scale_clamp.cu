// CUDA kernels of steadystep::_scale_ (clip by a device-side coefficient) and
// steadystep::_clamp_ (clip by value), on the multi-tensor launcher.

#include "cuda/elementwise.cuh"
#include "cuda/multi_tensor_apply.cuh"
#include "cuda/scale_clamp.cuh"

namespace steadystep::cuda {

namespace {

template <typename T, typename Coef>
struct ScaleFunctor {
  __device__ void operator()(const TensorListMetadata<1>& meta, const Coef* coef) const {
    using Acc = typename OpMath<T>::type;
    const Acc c = static_cast<Acc>(*coef);
    if (c >= Acc(1)) {
      return;  // not clipping: leave the gradients untouched, read nothing else
    }
    const ChunkView<1> chunk = chunk_view<T>(meta);
    update_chunk_in_place(chunk.data<T>(0), chunk.size, [c](Acc x) { return x * c; });
  }
};

template <typename T>
struct ClampFunctor {
  __device__ void operator()(const TensorListMetadata<1>& meta,
                             typename OpMath<T>::type clip) const {
    using Acc = typename OpMath<T>::type;
    const ChunkView<1> chunk = chunk_view<T>(meta);
    update_chunk_in_place(chunk.data<T>(0), chunk.size, [clip](Acc x) {
      // clamp_min then clamp_max, each letting nan through, as torch's pair of foreach ops.
      x = (x < -clip) ? -clip : x;
      return (x > clip) ? clip : x;
    });
  }
};

template <typename T>
void scale_typed(const std::vector<std::array<void*, 1>>& data, const std::vector<int64_t>& numel,
                 const void* coef, bool double_coef, cudaStream_t stream) {
  if (double_coef) {
    multi_tensor_apply<1>(data, numel, 0, stream, ScaleFunctor<T, double>(),
                          static_cast<const double*>(coef));
  } else {
    multi_tensor_apply<1>(data, numel, 0, stream, ScaleFunctor<T, float>(),
                          static_cast<const float*>(coef));
  }
}

template <typename T>
void clamp_typed(const std::vector<std::array<void*, 1>>& data, const std::vector<int64_t>& numel,
                 double clip_value, cudaStream_t stream) {
  using Acc = typename OpMath<T>::type;
  multi_tensor_apply<1>(data, numel, 0, stream, ClampFunctor<T>(), static_cast<Acc>(clip_value));
}

}  // namespace

void launch_scale(DType dtype, const std::vector<std::array<void*, 1>>& data,
                  const std::vector<int64_t>& numel, const void* coef, bool double_coef,
                  cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return scale_typed<float>(data, numel, coef, double_coef, stream);
    case DType::Half:
      return scale_typed<__half>(data, numel, coef, double_coef, stream);
    case DType::BFloat16:
      return scale_typed<__nv_bfloat16>(data, numel, coef, double_coef, stream);
    case DType::Double:
      return scale_typed<double>(data, numel, coef, double_coef, stream);
  }
}

void launch_clamp(DType dtype, const std::vector<std::array<void*, 1>>& data,
                  const std::vector<int64_t>& numel, double clip_value, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return clamp_typed<float>(data, numel, clip_value, stream);
    case DType::Half:
      return clamp_typed<__half>(data, numel, clip_value, stream);
    case DType::BFloat16:
      return clamp_typed<__nv_bfloat16>(data, numel, clip_value, stream);
    case DType::Double:
      return clamp_typed<double>(data, numel, clip_value, stream);
  }
}

}  // namespace steadystep::cuda
