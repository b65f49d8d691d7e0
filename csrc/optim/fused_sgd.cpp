#include <steadystep/optim.h>

#include "ops/optim_checks.h"
#include "optim/archive.h"
#include "optim/clip_settings.h"

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
  archive::write_precision(archive, master_weights(), stochastic_rounding(), state_dtype());
}

void FusedSGDOptions::serialize(torch::serialize::InputArchive& archive) {
  // LibTorch's SGDOptions write the first five; a field it lacks keeps this object's value.
  archive::FieldReader r(archive, "FusedSGDOptions");
  FusedSGDOptions read = *this;
  read.lr(r.number(r.get("lr"), "lr"));
  read.momentum(r.number(r.get("momentum"), "momentum"));
  read.dampening(r.number(r.get("dampening"), "dampening"));
  read.weight_decay(r.number(r.get("weight_decay"), "weight_decay"));
  read.nesterov(r.flag(r.get("nesterov"), "nesterov"));
  if (auto v = r.find("maximize")) {
    read.maximize(r.flag(*v, "maximize"));
  }
  archive::read_clip_settings(r, read);
  archive::read_precision(r, read);
  *this = read;
}

void FusedSGDParamState::serialize(torch::serialize::OutputArchive& archive) const {
  // LibTorch's SGDParamState reads the buffer only; the step is written as an int64 that it
  // ignores (FusedSGD::save leaves out the states LibTorch could not use).
  archive.write("step", archive::step_value(step()));
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(master_param);
}

void FusedSGDParamState::serialize(torch::serialize::InputArchive& archive) {
  archive::FieldReader r(archive, "FusedSGDParamState");
  torch::Tensor read_buffer;
  if (auto v = r.find("momentum_buffer")) {
    read_buffer = r.tensor(*v, "momentum_buffer");
  }
  // LibTorch's SGD writes no step: a buffer it wrote has been initialised from a gradient.
  const auto v = r.find("step");
  torch::Tensor read_step =
      v ? r.step(*v) : torch::full({}, read_buffer.defined() ? 1.0 : 0.0, torch::kFloat);
  torch::Tensor read_master;
  if (auto m = r.find("master_param")) {
    read_master = r.tensor(*m, "master_param");
  }
  step(read_step);
  momentum_buffer(read_buffer);
  master_param(read_master);
}

FusedSGD::FusedSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                   FusedSGDOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<FusedSGDOptions>(defaults)) {
  check_lr(defaults.lr());
  check_sgd_hyper({defaults.lr(), defaults.momentum(), defaults.dampening(),
                   defaults.weight_decay(), defaults.nesterov(), defaults.maximize()});
  check_clip_settings(defaults.max_grad_norm(), defaults.norm_type());
  check_precision(defaults.master_weights(), defaults.stochastic_rounding(),
                  defaults.state_dtype());
  check_groups_clip<FusedSGDOptions>(*this, "FusedSGD");
  if (defaults.stochastic_rounding()) {
    draw_rounding_seed();
  }
}

torch::Tensor FusedSGD::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  // Groups added (add_param_group is not virtual) or changed since construction.
  const auto& wide = static_cast<const FusedSGDOptions&>(defaults());
  check_precision(wide.master_weights(), wide.stochastic_rounding(), wide.state_dtype());
  check_groups_clip<FusedSGDOptions>(*this, "FusedSGD");
  const torch::Tensor loss = evaluate(closure);
  std::vector<torch::Tensor> params, grads, buffers, steps, masters;
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
        // A missing buffer (momentum switched on mid-run, a momentum-free archive) starts from
        // the gradient, as torch's does: the kernel initialises it at step 1, which this step
        // reaches unless it is skipped (then the next one does).
        s.momentum_buffer(torch::zeros_like(
            p, p.options().dtype(state_dtype_for(p, wide.master_weights(), wide.state_dtype())),
            torch::MemoryFormat::Preserve));
        s.step().zero_();
      }
      if (wide.master_weights()) {
        masters.push_back(master_for(p, s));
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
  // With a process group, the norm over all ranks, taken by every rank: also by one with no
  // gradient to step, which the others' collective waits for.
  const std::optional<torch::Tensor> grads_norm = global_grads_norm(grads, clip_settings(wide));
  // A rank with nothing to step (with a process group) still takes the decisions the others
  // take from the global norm, through the op on no tensors: its skip count and guard states
  // stay those of the other ranks.
  if (params.empty() && !grads_norm) {
    return loss;
  }
  const std::optional<int64_t> seed = step_rounding_seed(wide.stochastic_rounding());
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("steadystep::fused_sgd_", "")
          .typed<at::Tensor(
              at::TensorList, at::TensorList, at::TensorList, at::TensorList, c10::IntArrayRef,
              c10::ArrayRef<double>, c10::ArrayRef<double>, c10::ArrayRef<double>,
              c10::ArrayRef<double>, const c10::List<bool>&, const c10::List<bool>&,
              std::optional<double>, double, bool, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, at::Tensor&, const std::optional<at::Tensor>&,
              at::TensorList, const std::vector<std::string>&, c10::ArrayRef<double>,
              const std::optional<at::Tensor>&, at::TensorList, std::optional<int64_t>)>();
  const c10::Device device = params.empty() ? grads_norm->device() : params[0].device();
  const GuardCall guard = prepare_guard(wide.guard(), params, device);
  at::Tensor norm =
      op.call(params, grads, buffers, steps, sizes, lr, momentum, dampening, weight_decay, nesterov,
              maximize, wide.max_grad_norm(), wide.norm_type(), wide.skip_nonfinite(), std::nullopt,
              std::nullopt, skipped_counter(device), grads_norm, guard.states, guard.kinds,
              guard.args, decisions(device), masters, seed);
  record_norm(norm);
  return loss;
}

void FusedSGD::save(torch::serialize::OutputArchive& archive) const {
  save_skipped_steps(archive);
  save_rounding_seed(archive);
  save_guard(archive, static_cast<const FusedSGDOptions&>(defaults()).guard());
  // A state is worth keeping once its buffer holds a gradient (step >= 1): without one, the
  // next step starts the buffer afresh either way, and LibTorch's SGD would step a state
  // without a buffer into an undefined tensor. A master is kept whatever the buffer: made
  // again from the rounded param, it would lose the bits it carries (a momentum-free archive
  // with masters then loads into LibTorch's SGD only without momentum).
  archive::write(archive, *this, [](const torch::optim::OptimizerParamState& state) {
    const auto& s = static_cast<const FusedSGDParamState&>(state);
    return (s.momentum_buffer().defined() && s.step().item<double>() >= 1) ||
           s.master_param().defined();
  });
}

void FusedSGD::load(torch::serialize::InputArchive& archive) {
  const auto skipped = read_skipped_steps(archive, "FusedSGD");
  const auto seed = read_rounding_seed(archive, "FusedSGD");
  archive::load<FusedSGDOptions, FusedSGDParamState>(
      archive, *this, "FusedSGD",
      [](const FusedSGDOptions& o) {
        check_sgd_hyper(
            {o.lr(), o.momentum(), o.dampening(), o.weight_decay(), o.nesterov(), o.maximize()});
        check_clip_settings(o.max_grad_norm(), o.norm_type());
        check_precision(o.master_weights(), o.stochastic_rounding(), o.state_dtype());
      },
      [](FusedSGDParamState& s, const torch::Tensor& p, const FusedSGDOptions& o) {
        s.step(s.step().to(p.device()));
        if (s.momentum_buffer().defined()) {
          // In the dtype this optimizer keeps the buffer in (state_dtype, fp32 beside a master).
          s.momentum_buffer(archive::like_param(
              s.momentum_buffer(), p, state_dtype_for(p, o.master_weights(), o.state_dtype()),
              "momentum_buffer"));
        } else {
          s.step().zero_();
        }
        // A master this optimizer keeps stays fp32; one it does not keep is dropped (as the
        // Python optimizers do).
        if (s.master_param().defined() && keeps_master(p, o.master_weights())) {
          s.master_param(archive::like_param(s.master_param(), p, torch::kFloat, "master_param"));
        } else {
          s.master_param({});
        }
      });
  load_guard(archive, static_cast<const FusedSGDOptions&>(defaults()).guard(), "FusedSGD");
  restore_skipped_steps(skipped);
  restore_rounding_seed(seed);
}

}  // namespace steadystep
