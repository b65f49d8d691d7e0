#include <steadystep/optim.h>

#include "ops/optim_checks.h"
#include "optim/archive.h"
#include "optim/clip_settings.h"

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
  archive::write_precision(archive, master_weights(), stochastic_rounding(), state_dtype());
}

void FusedAdamOptions::serialize(torch::serialize::InputArchive& archive) {
  // LibTorch's AdamOptions and AdamWOptions write the first five; a field it lacks keeps this
  // object's value (FusedAdam::load reads into a copy of the group's own options, so
  // decoupled_weight_decay(true) loads a torch::optim::AdamW archive as AdamW).
  archive::FieldReader r(archive, "FusedAdamOptions");
  const double read_lr = r.number(r.get("lr"), "lr");
  const c10::IValue b = r.get("betas");
  TORCH_CHECK(b.isTuple() && b.toTupleRef().elements().size() == 2,
              "FusedAdamOptions: 'betas' in the archive is ", b.tagKind(),
              ", expected a tuple of two numbers");
  const betas_t read_betas{r.number(b.toTupleRef().elements()[0], "betas"),
                           r.number(b.toTupleRef().elements()[1], "betas")};
  const double read_eps = r.number(r.get("eps"), "eps");
  const double read_weight_decay = r.number(r.get("weight_decay"), "weight_decay");
  const bool read_amsgrad = r.flag(r.get("amsgrad"), "amsgrad");
  FusedAdamOptions read = *this;
  read.lr(read_lr).betas(read_betas).eps(read_eps).weight_decay(read_weight_decay);
  read.amsgrad(read_amsgrad);
  if (auto v = r.find("maximize")) {
    read.maximize(r.flag(*v, "maximize"));
  }
  if (auto v = r.find("decoupled_weight_decay")) {
    read.decoupled_weight_decay(r.flag(*v, "decoupled_weight_decay"));
  }
  archive::read_clip_settings(r, read);
  archive::read_precision(r, read);
  *this = read;
}

void FusedAdamParamState::serialize(torch::serialize::OutputArchive& archive) const {
  // The step as LibTorch's AdamParamState writes it, so that torch::optim::Adam/AdamW load it.
  archive.write("step", archive::step_value(step()));
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg_sq);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_exp_avg_sq);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(master_param);
}

void FusedAdamParamState::serialize(torch::serialize::InputArchive& archive) {
  archive::FieldReader r(archive, "FusedAdamParamState");
  const torch::Tensor read_step = r.step(r.get("step"));
  const torch::Tensor read_exp_avg = r.tensor(r.get("exp_avg"), "exp_avg");
  const torch::Tensor read_exp_avg_sq = r.tensor(r.get("exp_avg_sq"), "exp_avg_sq");
  torch::Tensor read_max, read_master;
  if (auto v = r.find("max_exp_avg_sq")) {
    read_max = r.tensor(*v, "max_exp_avg_sq");
  }
  if (auto v = r.find("master_param")) {
    read_master = r.tensor(*v, "master_param");
  }
  step(read_step);
  exp_avg(read_exp_avg);
  exp_avg_sq(read_exp_avg_sq);
  max_exp_avg_sq(read_max);
  master_param(read_master);
}

FusedAdam::FusedAdam(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                     FusedAdamOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<FusedAdamOptions>(defaults)) {
  check_lr(defaults.lr());
  check_adam_hyper({defaults.lr(), std::get<0>(defaults.betas()), std::get<1>(defaults.betas()),
                    defaults.eps(), defaults.weight_decay(), defaults.amsgrad(),
                    defaults.maximize(), defaults.decoupled_weight_decay()});
  check_clip_settings(defaults.max_grad_norm(), defaults.norm_type());
  check_precision(defaults.master_weights(), defaults.stochastic_rounding(),
                  defaults.state_dtype());
  check_groups_clip<FusedAdamOptions>(*this, "FusedAdam");
  if (defaults.stochastic_rounding()) {
    draw_rounding_seed();
  }
}

torch::Tensor FusedAdam::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  // Groups added (add_param_group is not virtual) or changed since construction.
  const auto& wide = static_cast<const FusedAdamOptions&>(defaults());
  check_precision(wide.master_weights(), wide.stochastic_rounding(), wide.state_dtype());
  check_groups_clip<FusedAdamOptions>(*this, "FusedAdam");
  const torch::Tensor loss = evaluate(closure);
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, masters;
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
        const auto state_options =
            p.options().dtype(state_dtype_for(p, wide.master_weights(), wide.state_dtype()));
        auto s = std::make_unique<FusedAdamParamState>();
        s->step(torch::zeros({}, p.options().dtype(torch::kFloat)));
        s->exp_avg(torch::zeros_like(p, state_options, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, state_options, torch::MemoryFormat::Preserve));
        slot = std::move(s);
      }
      auto& s = static_cast<FusedAdamParamState&>(*slot);
      if (o.amsgrad() && !s.max_exp_avg_sq().defined()) {
        // In the dtype of the param's other states: the kernel takes one state dtype per param.
        s.max_exp_avg_sq(
            torch::zeros_like(p, s.exp_avg().options(), torch::MemoryFormat::Preserve));
      }
      if (wide.master_weights()) {
        masters.push_back(master_for(p, s));
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
  // With a process group, the norm over all ranks, taken by every rank: also by one with no
  // gradient to step, which the others' collective waits for.
  const std::optional<torch::Tensor> grads_norm = global_grads_norm(grads, clip_settings(wide));
  // A rank with nothing to step (with a process group) still takes the decisions the others
  // take from the global norm, through the op on no tensors: its skip count and guard states
  // stay those of the other ranks.
  if (params.empty() && !grads_norm) {
    return loss;
  }
  if (!any_amsgrad) {
    max_exp_avg_sqs.clear();
  }
  const std::optional<int64_t> seed = step_rounding_seed(wide.stochastic_rounding());
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::fused_adam_", "")
          .typed<at::Tensor(
              at::TensorList, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
              at::TensorList, c10::IntArrayRef, c10::ArrayRef<double>, c10::ArrayRef<double>,
              c10::ArrayRef<double>, c10::ArrayRef<double>, c10::ArrayRef<double>,
              const c10::List<bool>&, const c10::List<bool>&, const c10::List<bool>&,
              std::optional<double>, double, bool, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, at::Tensor&, const std::optional<at::Tensor>&,
              at::TensorList, const std::vector<std::string>&, c10::ArrayRef<double>,
              const std::optional<at::Tensor>&, at::TensorList, std::optional<int64_t>)>();
  const c10::Device device = params.empty() ? grads_norm->device() : params[0].device();
  const GuardCall guard = prepare_guard(wide.guard(), params, device);
  at::Tensor norm = op.call(
      params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, sizes, lr, beta1, beta2, eps,
      weight_decay, amsgrad, maximize, decoupled, wide.max_grad_norm(), wide.norm_type(),
      wide.skip_nonfinite(), std::nullopt, std::nullopt, skipped_counter(device), grads_norm,
      guard.states, guard.kinds, guard.args, decisions(device), masters, seed);
  record_norm(norm);
  return loss;
}

void FusedAdam::save(torch::serialize::OutputArchive& archive) const {
  save_skipped_steps(archive);
  save_rounding_seed(archive);
  save_guard(archive, static_cast<const FusedAdamOptions&>(defaults()).guard());
  archive::write(archive, *this, [](const torch::optim::OptimizerParamState&) { return true; });
}

void FusedAdam::load(torch::serialize::InputArchive& archive) {
  const auto skipped = read_skipped_steps(archive, "FusedAdam");
  const auto seed = read_rounding_seed(archive, "FusedAdam");
  archive::load<FusedAdamOptions, FusedAdamParamState>(
      archive, *this, "FusedAdam",
      [](const FusedAdamOptions& o) {
        check_adam_hyper({o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.eps(),
                          o.weight_decay(), o.amsgrad(), o.maximize(), o.decoupled_weight_decay()});
        check_clip_settings(o.max_grad_norm(), o.norm_type());
        check_precision(o.master_weights(), o.stochastic_rounding(), o.state_dtype());
      },
      [](FusedAdamParamState& s, const torch::Tensor& p, const FusedAdamOptions& o) {
        // As torch's load_state_dict casts state to its param's dtype, but to the dtype this
        // optimizer keeps the state in (state_dtype, fp32 beside a master).
        const c10::ScalarType dtype = state_dtype_for(p, o.master_weights(), o.state_dtype());
        s.step(s.step().to(p.device()));
        s.exp_avg(archive::like_param(s.exp_avg(), p, dtype, "exp_avg"));
        s.exp_avg_sq(archive::like_param(s.exp_avg_sq(), p, dtype, "exp_avg_sq"));
        if (s.max_exp_avg_sq().defined()) {
          s.max_exp_avg_sq(archive::like_param(s.max_exp_avg_sq(), p, dtype, "max_exp_avg_sq"));
        }
        // A master this optimizer keeps stays fp32; one it does not keep is dropped (as the
        // Python optimizers do).
        if (s.master_param().defined() && keeps_master(p, o.master_weights())) {
          s.master_param(archive::like_param(s.master_param(), p, torch::kFloat, "master_param"));
        } else {
          s.master_param({});
        }
      });
  load_guard(archive, static_cast<const FusedAdamOptions&>(defaults()).guard(), "FusedAdam");
  restore_skipped_steps(skipped);
  restore_rounding_seed(seed);
}

}  // namespace steadystep
