// The public C++ adaptive_clip_grad_: the parameters' defined gradients, then the op through the
// dispatcher (CPU, CUDA or Meta kernel by the gradients' device).

#include <steadystep/clip_grad.h>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

namespace steadystep {

void adaptive_clip_grad_(at::TensorList parameters, double clip_factor, double eps,
                         double norm_type) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("steadystep::adaptive_clip_grad_", "")
                           .typed<void(at::TensorList, at::TensorList, double, double, double)>();
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> grads;
  for (const auto& p : parameters) {
    if (p.grad().defined()) {
      // Detached: the op reads the weights' values, never records autograd history (timm:
      // p.detach()).
      params.push_back(p.detach());
      grads.push_back(p.grad());
    }
  }
  if (grads.empty()) {
    return;  // an empty list has no tensor to dispatch on
  }
  at::NoGradGuard no_grad;
  handle.call(params, grads, clip_factor, eps, norm_type);
}

}  // namespace steadystep
