#include <steadystep/optim.h>

#include <torch/torch.h>

namespace steadystep {

torch::Tensor FusedOptimizer::skipped_steps() const {
  return skipped_steps_.defined() ? skipped_steps_ : torch::zeros({}, torch::kLong);
}

torch::Tensor FusedOptimizer::evaluate(const LossClosure& closure) {
  if (!closure) {
    return {};
  }
  at::AutoGradMode enable_grad(true);
  return closure();
}

torch::Tensor& FusedOptimizer::skipped_counter(const c10::Device& device) {
  if (!skipped_steps_.defined()) {
    skipped_steps_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  return skipped_steps_;
}

}  // namespace steadystep
