#include <steadystep/optim.h>

#include "ops/optim_checks.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

namespace steadystep {

void FusedAdamOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(amsgrad);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(maximize);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(decoupled_weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_grad_norm);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(norm_type);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(skip_nonfinite);
}

void FusedAdamOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, amsgrad);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, maximize);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, decoupled_weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG_OPTIONAL(double, max_grad_norm);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, norm_type);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, skip_nonfinite);
}

void FusedAdamParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg_sq);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_exp_avg_sq);
}

void FusedAdamParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg_sq);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, max_exp_avg_sq);
}

FusedAdam::FusedAdam(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                     FusedAdamOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<FusedAdamOptions>(defaults)) {
  check_adam_hyper({defaults.lr(), std::get<0>(defaults.betas()), std::get<1>(defaults.betas()),
                    defaults.eps(), defaults.weight_decay(), defaults.amsgrad(),
                    defaults.maximize(), defaults.decoupled_weight_decay()});
  check_clip_settings(defaults.max_grad_norm(), defaults.norm_type());
}

torch::Tensor FusedAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  const torch::Tensor loss = evaluate(closure);
  const auto& wide = static_cast<const FusedAdamOptions&>(defaults());
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
  std::vector<int64_t> sizes;
  std::vector<double> lr, beta1, beta2, eps, weight_decay;
  c10::List<bool> amsgrad, maximize, decoupled;
  bool any_amsgrad = false;
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const FusedAdamOptions&>(group.options());
    int64_t count = 0;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) {
        continue;
      }
      auto& slot = state()[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto s = std::make_unique<FusedAdamParamState>();
        s->step(torch::zeros({}, p.options().dtype(torch::kFloat)));
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(s);
      }
      auto& s = static_cast<FusedAdamParamState&>(*slot);
      if (o.amsgrad() && !s.max_exp_avg_sq().defined()) {
        s.max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      }
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(s.exp_avg());
      exp_avg_sqs.push_back(s.exp_avg_sq());
      // Groups without amsgrad pass a placeholder their kernels never read.
      max_exp_avg_sqs.push_back(o.amsgrad() ? s.max_exp_avg_sq() : s.exp_avg_sq());
      steps.push_back(s.step());
      ++count;
    }
    sizes.push_back(count);
    lr.push_back(o.lr());
    beta1.push_back(std::get<0>(o.betas()));
    beta2.push_back(std::get<1>(o.betas()));
    eps.push_back(o.eps());
    weight_decay.push_back(o.weight_decay());
    amsgrad.push_back(o.amsgrad());
    maximize.push_back(o.maximize());
    decoupled.push_back(o.decoupled_weight_decay());
    any_amsgrad = any_amsgrad || o.amsgrad();
  }
  if (params.empty()) {
    return loss;
  }
  if (!any_amsgrad) {
    max_exp_avg_sqs.clear();
  }
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::fused_adam_", "")
          .typed<at::Tensor(at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                            at::TensorList, at::TensorList, c10::IntArrayRef, c10::ArrayRef<double>,
                            c10::ArrayRef<double>, c10::ArrayRef<double>, c10::ArrayRef<double>,
                            c10::ArrayRef<double>, const c10::List<bool>&, const c10::List<bool>&,
                            const c10::List<bool>&, std::optional<double>, double, bool,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            at::Tensor&)>();
  at::Tensor norm = op.call(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes, lr,
                            beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled,
                            wide.max_grad_norm(), wide.norm_type(), wide.skip_nonfinite(),
                            std::nullopt, std::nullopt, skipped_counter(params[0].device()));
  record_norm(norm);
  return loss;
}

void FusedAdam::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<FusedAdamParamState, FusedAdamOptions>(archive, *this);
}

void FusedAdam::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<FusedAdamParamState, FusedAdamOptions>(archive, *this);
}

}  // namespace steadystep
