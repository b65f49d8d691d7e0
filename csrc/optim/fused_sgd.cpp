#include <steadystep/optim.h>

#include "ops/optim_checks.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

namespace steadystep {

void FusedSGDOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(dampening);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(nesterov);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(maximize);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_grad_norm);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(norm_type);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(skip_nonfinite);
}

void FusedSGDOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, dampening);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, nesterov);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, maximize);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG_OPTIONAL(double, max_grad_norm);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, norm_type);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, skip_nonfinite);
}

void FusedSGDParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
}

void FusedSGDParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, momentum_buffer);
}

FusedSGD::FusedSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                   FusedSGDOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<FusedSGDOptions>(defaults)) {
  check_sgd_hyper({defaults.lr(), defaults.momentum(), defaults.dampening(),
                   defaults.weight_decay(), defaults.nesterov(), defaults.maximize()});
  check_clip_settings(defaults.max_grad_norm(), defaults.norm_type());
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  const torch::Tensor loss = evaluate(closure);
  const auto& wide = static_cast<const FusedSGDOptions&>(defaults());
  std::vector<torch::Tensor> params, grads, buffers, steps;
  std::vector<int64_t> sizes;
  std::vector<double> lr, momentum, dampening, weight_decay;
  c10::List<bool> nesterov, maximize;
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const FusedSGDOptions&>(group.options());
    int64_t count = 0;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) {
        continue;
      }
      auto& slot = state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto s = std::make_unique<FusedSGDParamState>();
        s->step(torch::zeros({}, p.options().dtype(torch::kFloat)));
        slot = std::move(s);
      }
      auto& s = static_cast<FusedSGDParamState&>(*slot);
      if (o.momentum() != 0 && !s.momentum_buffer().defined()) {
        s.momentum_buffer(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      }
      params.push_back(p);
      grads.push_back(p.grad());
      // Without momentum a placeholder the kernel never reads.
      buffers.push_back(o.momentum() != 0 ? s.momentum_buffer() : p.grad());
      steps.push_back(s.step());
      ++count;
    }
    sizes.push_back(count);
    lr.push_back(o.lr());
    momentum.push_back(o.momentum());
    dampening.push_back(o.dampening());
    weight_decay.push_back(o.weight_decay());
    nesterov.push_back(o.nesterov());
    maximize.push_back(o.maximize());
  }
  if (params.empty()) {
    return loss;
  }
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::fused_sgd_", "")
          .typed<at::Tensor(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                            c10::IntArrayRef, c10::ArrayRef<double>, c10::ArrayRef<double>,
                            c10::ArrayRef<double>, c10::ArrayRef<double>, const c10::List<bool>&,
                            const c10::List<bool>&, std::optional<double>, double, bool,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            at::Tensor&)>();
  at::Tensor norm =
      op.call(params, grads, buffers, steps, sizes, lr, momentum, dampening, weight_decay, nesterov,
              maximize, wide.max_grad_norm(), wide.norm_type(), wide.skip_nonfinite(), std::nullopt,
              std::nullopt, skipped_counter(params[0].device()));
  record_norm(norm);
  return loss;
}

void FusedSGD::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<FusedSGDParamState, FusedSGDOptions>(archive, *this);
}

void FusedSGD::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<FusedSGDParamState, FusedSGDOptions>(archive, *this);
}

}  // namespace steadystep
