#include <steadystep/lr_scheduler.h>

namespace steadystep {

CosineAnnealingLR::CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t T_max,
                                     double eta_min, int64_t last_epoch)
    : LRScheduler(optimizer, last_epoch),
      T_max_(T_max),
      schedule_(static_cast<double>(T_max), eta_min) {
  initial_step();
}

std::vector<double> CosineAnnealingLR::compute_lr(const schedules::StepContext& ctx) {
  return schedule_.get_lr(ctx);
}

std::vector<double> CosineAnnealingLR::compute_closed_form_lr(const schedules::StepContext& ctx) {
  return schedule_.closed_form_lr(ctx);
}

}  // namespace steadystep
