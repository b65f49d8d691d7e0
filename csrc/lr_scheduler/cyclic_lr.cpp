#include <steadystep/lr_scheduler.h>

#include "lr_scheduler/optimizer_momentum.h"

namespace steadystep {

namespace {
// PyTorch's _format_param: one value for every group, or one per group.
std::vector<double> per_group(const std::vector<double>& values, size_t groups, const char* name) {
  if (values.size() == 1) {
    return std::vector<double>(groups, values[0]);
  }
  TORCH_CHECK_VALUE(values.size() == groups, name, " must have the same length as ",
                    "optimizer.param_groups (", groups, "), got ", values.size(), " values");
  return values;
}

schedules::Cyclic make_cyclic(torch::optim::Optimizer& optimizer, const CyclicLROptions& o) {
  const size_t groups = optimizer.param_groups().size();
  if (o.cycle_momentum()) {
    check_has_momentum(optimizer, "CyclicLR");
  }
  const auto [total_size, step_ratio] =
      schedules::Cyclic::cycle_shape(o.step_size_up(), o.step_size_down());
  return schedules::Cyclic(per_group(o.base_lr(), groups, "base_lr"),
                           per_group(o.max_lr(), groups, "max_lr"), total_size, step_ratio,
                           o.mode(), o.gamma(), o.scale_fn(), o.scale_mode(), o.cycle_momentum(),
                           per_group(o.base_momentum(), groups, "base_momentum"),
                           per_group(o.max_momentum(), groups, "max_momentum"));
}
}  // namespace

CyclicLR::CyclicLR(torch::optim::Optimizer& optimizer, const CyclicLROptions& options)
    : LRScheduler(optimizer, options.last_epoch()),
      schedule_(make_cyclic(optimizer, options)),
      cycle_momentum_(options.cycle_momentum()) {
  // Everything is validated above; only now is the optimizer touched, as in PyTorch.
  const size_t groups = optimizer.param_groups().size();
  const auto base = per_group(options.base_lr(), groups, "base_lr");
  if (options.last_epoch() == -1) {
    const auto max_momentum = per_group(options.max_momentum(), groups, "max_momentum");
    for (size_t i = 0; i < groups; ++i) {
      optimizer.param_groups()[i].options().set_lr(base[i]);
      // PyTorch sets the lr before its base class's setdefault of initial_lr; ours ran first.
      if (created_initial_lr(i)) {
        initial_lr(optimizer.param_groups()[i], base[i]);
      }
      if (cycle_momentum_) {
        set_momentum(optimizer.param_groups()[i], max_momentum[i]);
      }
    }
  }
  set_base_lrs(base);
  initial_step();
}

std::vector<double> CyclicLR::compute_lr(const schedules::StepContext& ctx) {
  if (cycle_momentum_) {
    const auto momentums = schedule_.momentums(ctx.last_epoch);
    for (size_t i = 0; i < momentums.size(); ++i) {
      set_momentum(optimizer().param_groups()[i], momentums[i]);
    }
  }
  return schedule_.lrs(ctx.last_epoch);
}

namespace {
int64_t one_cycle_total_steps(const OneCycleLROptions& o) {
  if (o.total_steps()) {
    TORCH_CHECK_VALUE(*o.total_steps() > 0,
                      "OneCycleLR: expected positive integer total_steps, got ", *o.total_steps());
    return *o.total_steps();
  }
  TORCH_CHECK_VALUE(o.epochs() && o.steps_per_epoch(),
                    "OneCycleLR: you must define either total_steps OR (epochs AND "
                    "steps_per_epoch)");
  TORCH_CHECK_VALUE(*o.epochs() > 0, "OneCycleLR: expected positive integer epochs, got ",
                    *o.epochs());
  TORCH_CHECK_VALUE(*o.steps_per_epoch() > 0,
                    "OneCycleLR: expected positive integer steps_per_epoch, got ",
                    *o.steps_per_epoch());
  return *o.epochs() * *o.steps_per_epoch();
}

schedules::OneCycle make_one_cycle(torch::optim::Optimizer& optimizer, const OneCycleLROptions& o) {
  const int64_t total = one_cycle_total_steps(o);
  schedules::OneCycle schedule(
      total, schedules::OneCycle::phase_ends(total, o.pct_start(), o.three_phase()),
      o.anneal_strategy());
  if (o.cycle_momentum()) {
    check_has_momentum(optimizer, "OneCycleLR");
  }
  return schedule;
}
}  // namespace

OneCycleLR::OneCycleLR(torch::optim::Optimizer& optimizer, const OneCycleLROptions& options)
    : LRScheduler(optimizer, options.last_epoch()),
      schedule_(make_one_cycle(optimizer, options)),
      cycle_momentum_(options.cycle_momentum()) {
  const size_t groups = optimizer.param_groups().size();
  const auto max_lrs = per_group(options.max_lr(), groups, "max_lr");
  const auto max_momentum = per_group(options.max_momentum(), groups, "max_momentum");
  const auto base_momentum = per_group(options.base_momentum(), groups, "base_momentum");
  std::vector<double> initial(groups);
  for (size_t i = 0; i < groups; ++i) {
    initial[i] = max_lrs[i] / options.div_factor();
    groups_.push_back({initial[i], max_lrs[i], initial[i] / options.final_div_factor(),
                       max_momentum[i], base_momentum[i]});
    if (options.last_epoch() == -1) {
      // PyTorch overwrites these group fields; every OneCycleLR of the group reads them.
      auto& group = optimizer.param_groups()[i];
      initial_lr(group, initial[i]);
      set_group_field(group, "max_lr", groups_[i].max_lr);
      set_group_field(group, "min_lr", groups_[i].min_lr);
      if (cycle_momentum_) {
        set_momentum(group, max_momentum[i]);
        set_group_field(group, "max_momentum", max_momentum[i]);
        set_group_field(group, "base_momentum", base_momentum[i]);
      }
    }
  }
  set_base_lrs(initial);
  initial_step();
}

std::vector<double> OneCycleLR::compute_lr(const schedules::StepContext& ctx) {
  std::vector<double> lrs(groups_.size());
  for (size_t i = 0; i < groups_.size(); ++i) {
    // PyTorch reads the group's fields, which a later OneCycleLR of the group may have written.
    auto& group = optimizer().param_groups()[i];
    const auto field = [&](const char* key, double own) {
      return group_field(group, key).value_or(own);
    };
    const schedules::OneCycleGroup g{initial_lr(group), field("max_lr", groups_[i].max_lr),
                                     field("min_lr", groups_[i].min_lr),
                                     field("max_momentum", groups_[i].max_momentum),
                                     field("base_momentum", groups_[i].base_momentum)};
    const auto [lr, momentum] = schedule_.at(ctx.last_epoch, g);
    lrs[i] = lr;
    if (cycle_momentum_) {
      set_momentum(optimizer().param_groups()[i], momentum);
    }
  }
  return lrs;
}

void OneCycleLR::save(torch::serialize::OutputArchive& archive) const {
  LRScheduler::save(archive);
  std::vector<double> flat;
  for (const auto& g : groups_) {
    flat.insert(flat.end(), {g.initial_lr, g.max_lr, g.min_lr, g.max_momentum, g.base_momentum});
  }
  write_doubles(archive, "groups", flat);
}

void OneCycleLR::load(torch::serialize::InputArchive& archive) {
  LRScheduler::load(archive);
  const auto flat = read_doubles(archive, "groups");
  TORCH_CHECK(flat.size() == 5 * groups_.size(), "OneCycleLR: checkpoint has ", flat.size() / 5,
              " groups, the optimizer ", groups_.size());
  for (size_t i = 0; i < groups_.size(); ++i) {
    groups_[i] = {flat[5 * i], flat[5 * i + 1], flat[5 * i + 2], flat[5 * i + 3], flat[5 * i + 4]};
    // What PyTorch restores with the optimizer's param groups.
    auto& group = optimizer().param_groups()[i];
    initial_lr(group, groups_[i].initial_lr);
    set_group_field(group, "max_lr", groups_[i].max_lr);
    set_group_field(group, "min_lr", groups_[i].min_lr);
    set_group_field(group, "max_momentum", groups_[i].max_momentum);
    set_group_field(group, "base_momentum", groups_[i].base_momentum);
  }
}

}  // namespace steadystep
