// Schedulers that drive other schedulers: SequentialLR, ChainedScheduler, BoundedLR.

#include <steadystep/lr_scheduler.h>

#include <algorithm>

namespace steadystep {

namespace {
void check_schedulers(const std::vector<std::shared_ptr<LRScheduler>>& schedulers,
                      const torch::optim::Optimizer& optimizer, const char* name) {
  TORCH_CHECK_VALUE(!schedulers.empty(), name, " expects at least one scheduler, got none");
  for (size_t i = 0; i < schedulers.size(); ++i) {
    TORCH_CHECK_VALUE(schedulers[i] != nullptr, name, ": scheduler ", i, " is null");
    TORCH_CHECK_VALUE(dynamic_cast<const ReduceLROnPlateau*>(schedulers[i].get()) == nullptr, name,
                      " does not support ReduceLROnPlateau (its step needs a metric), got one "
                      "at index ",
                      i);
    TORCH_CHECK_VALUE(&schedulers[i]->optimizer() == &optimizer, name,
                      " expects all schedulers to belong to the same optimizer, but scheduler ", i,
                      " has another one");
  }
}

torch::optim::Optimizer& first_optimizer(
    const std::vector<std::shared_ptr<LRScheduler>>& schedulers, const char* name) {
  TORCH_CHECK_VALUE(!schedulers.empty() && schedulers[0] != nullptr, name,
                    " expects at least one scheduler, got none");
  return schedulers[0]->optimizer();
}
}  // namespace

// ---- SequentialLR ---------------------------------------------------------------------------

SequentialLR::SequentialLR(torch::optim::Optimizer& optimizer,
                           std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch),
      schedulers_(std::move(schedulers)),
      milestones_(std::move(milestones)) {
  check_schedulers(schedulers_, optimizer, "SequentialLR");
  TORCH_CHECK_VALUE(milestones_.size() + 1 == schedulers_.size(),
                    "SequentialLR expects one more scheduler than milestones, got ",
                    schedulers_.size(), " schedulers and ", milestones_.size(), " milestones");
  // PyTorch's recipe: restore the initial lrs, undo the construction step of every scheduler,
  // and let the first one take it again.
  set_last_epoch(last_epoch + 1);
  for (auto& group : optimizer.param_groups()) {
    group.options().set_lr(initial_lr(group));
  }
  for (const auto& s : schedulers_) {
    undo_step(*s);
  }
  schedulers_[0]->initial_step();
  last_lr_ = schedulers_[0]->get_last_lr();
}

void SequentialLR::undo_step(LRScheduler& scheduler) {
  const auto kids = scheduler.children();
  if (kids.empty()) {
    scheduler.last_epoch_ -= 1;
    return;
  }
  for (const auto& kid : kids) {
    undo_step(*kid);
  }
}

std::vector<double> SequentialLR::compute_lr(const schedules::StepContext& ctx) {
  const int64_t t = ctx.last_epoch;
  const size_t idx =
      std::upper_bound(milestones_.begin(), milestones_.end(), t) - milestones_.begin();
  LRScheduler& scheduler = *schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == t) {
    scheduler.update_lr(0);  // restart at the milestone, closed form at epoch 0
  } else {
    scheduler.step();
  }
  return scheduler.get_last_lr();
}

// ---- ChainedScheduler -----------------------------------------------------------------------

ChainedScheduler::ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers,
                                   torch::optim::Optimizer* optimizer)
    : LRScheduler(optimizer ? *optimizer : first_optimizer(schedulers, "ChainedScheduler"), 0),
      schedulers_(std::move(schedulers)) {
  check_schedulers(schedulers_, this->optimizer(), "ChainedScheduler");
  apply_lrs(context().lrs);  // no step at construction: record the current lrs
}

std::vector<double> ChainedScheduler::compute_lr(const schedules::StepContext&) {
  for (const auto& s : schedulers_) {
    s->step();
  }
  return context().lrs;
}

// ---- BoundedLR ------------------------------------------------------------------------------

BoundedLR::BoundedLR(std::shared_ptr<LRScheduler> scheduler, double min_lr, double max_lr)
    : LRScheduler(first_optimizer({scheduler}, "BoundedLR"), 0),
      scheduler_(std::move(scheduler)),
      min_lr_(min_lr),
      max_lr_(max_lr) {
  schedules::check_bounds(min_lr, max_lr);
  apply_lrs(schedules::clamp_lrs(context().lrs, min_lr_, max_lr_));
  set_last_epoch(scheduler_->last_epoch());
}

std::vector<double> BoundedLR::compute_lr(const schedules::StepContext&) {
  scheduler_->step();
  set_last_epoch(scheduler_->last_epoch());
  return schedules::clamp_lrs(context().lrs, min_lr_, max_lr_);
}

std::vector<double> BoundedLR::compute_closed_form_lr(const schedules::StepContext& ctx) {
  scheduler_->update_lr(ctx.last_epoch);
  set_last_epoch(scheduler_->last_epoch());
  return schedules::clamp_lrs(context().lrs, min_lr_, max_lr_);
}

void BoundedLR::initial_step() {
  scheduler_->initial_step();
  set_last_epoch(scheduler_->last_epoch());
  apply_lrs(schedules::clamp_lrs(context().lrs, min_lr_, max_lr_));
}

}  // namespace steadystep
