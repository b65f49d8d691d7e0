#include <steadystep/lr_scheduler.h>

namespace steadystep {

CosineAnnealingWarmRestarts::CosineAnnealingWarmRestarts(torch::optim::Optimizer& optimizer,
                                                         int64_t T_0, int64_t T_mult,
                                                         double eta_min, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch),
      schedule_(T_0, T_mult, eta_min),
      state_(schedule_.initial_state(last_epoch)) {
  initial_step();
}

std::vector<double> CosineAnnealingWarmRestarts::compute_lr(const schedules::StepContext& ctx) {
  // last_epoch is the base class's (SequentialLR's undo of the construction step moves it);
  // T_cur and T_i are ours, and an undo leaves them as PyTorch's does.
  state_.last_epoch = ctx.last_epoch - 1;
  state_ = schedule_.advance(state_, std::nullopt);
  set_last_epoch(state_.last_epoch);
  return schedule_.lr(state_, ctx.base_lrs);
}

std::vector<double> CosineAnnealingWarmRestarts::compute_closed_form_lr(
    const schedules::StepContext& ctx) {
  state_.last_epoch = ctx.last_epoch;
  return schedule_.lr(state_, ctx.base_lrs);
}

void CosineAnnealingWarmRestarts::step(double epoch) {
  state_ = schedule_.advance(state_, epoch);
  set_last_epoch(state_.last_epoch);
  apply_lrs(schedule_.lr(state_, base_lrs()));
}

void CosineAnnealingWarmRestarts::save(torch::serialize::OutputArchive& archive) const {
  LRScheduler::save(archive);
  write_doubles(archive, "T_cur_T_i", {state_.T_cur, state_.T_i});
}

void CosineAnnealingWarmRestarts::load(torch::serialize::InputArchive& archive) {
  LRScheduler::load(archive);
  const auto values = read_doubles(archive, "T_cur_T_i");
  TORCH_CHECK(values.size() == 2, "CosineAnnealingWarmRestarts: malformed checkpoint");
  state_ = {values[0], values[1], last_epoch()};
}

}  // namespace steadystep
