#include <steadystep/lr_scheduler.h>

namespace steadystep {

namespace {
schedules::Plateau make_plateau(size_t groups, const ReduceLROnPlateauOptions& o) {
  std::vector<double> min_lrs = o.min_lr();
  if (min_lrs.size() == 1) {
    min_lrs.assign(groups, min_lrs[0]);
  }
  TORCH_CHECK_VALUE(min_lrs.size() == groups, "ReduceLROnPlateau: expected ", groups,
                    " min_lrs, got ", o.min_lr().size());
  return schedules::Plateau(o.mode(), o.factor(), o.patience(), o.threshold(), o.threshold_mode(),
                            o.cooldown(), std::move(min_lrs), o.eps());
}
}  // namespace

// PyTorch's ReduceLROnPlateau takes no step at construction and starts at last_epoch 0.
ReduceLROnPlateau::ReduceLROnPlateau(torch::optim::Optimizer& optimizer,
                                     const ReduceLROnPlateauOptions& options)
    : LRScheduler(optimizer, 0),
      options_(options),
      schedule_(make_plateau(optimizer.param_groups().size(), options)),
      state_(schedule_.initial_state()) {}

void ReduceLROnPlateau::step(double metric) {
  step_to(metric, std::nullopt);
}

void ReduceLROnPlateau::step(double metric, int64_t epoch) {
  step_to(metric, epoch);
}

// PyTorch's order: the bookkeeping (last_epoch, best, counters) happens before a reduction can
// fail on a param group added since construction; one min_lr given for all groups follows
// the groups, a list of them does not.
void ReduceLROnPlateau::step_to(double metric, std::optional<int64_t> epoch) {
  const bool due = schedule_.observe(state_, metric, epoch);
  set_last_epoch(state_.last_epoch);
  if (due) {
    const size_t groups = optimizer().param_groups().size();
    if (options_.min_lr().size() == 1 && groups != schedule_.min_lrs().size()) {
      schedule_ = make_plateau(groups, options_);
    }
    apply_lrs(schedule_.reduce(context().lrs));
    schedule_.rest(state_);
  } else {
    apply_lrs(context().lrs);
  }
}

std::vector<double> ReduceLROnPlateau::compute_lr(const schedules::StepContext&) {
  TORCH_CHECK(false, "ReduceLROnPlateau needs the metric: call step(metric)");
}

void ReduceLROnPlateau::save(torch::serialize::OutputArchive& archive) const {
  LRScheduler::save(archive);
  write_doubles(archive, "plateau",
                {state_.best, static_cast<double>(state_.num_bad_epochs),
                 static_cast<double>(state_.cooldown_counter)});
}

void ReduceLROnPlateau::load(torch::serialize::InputArchive& archive) {
  LRScheduler::load(archive);
  const auto v = read_doubles(archive, "plateau");
  TORCH_CHECK(v.size() == 3, "ReduceLROnPlateau: malformed checkpoint");
  state_ = {v[0], static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2]), last_epoch()};
}

SWALR::SWALR(torch::optim::Optimizer& optimizer, std::vector<double> swa_lr, int64_t anneal_epochs,
             const std::string& anneal_strategy, int64_t last_epoch)
    : ScheduleLR(optimizer, last_epoch, [&] {
        const size_t groups = optimizer.param_groups().size();
        if (swa_lr.size() == 1) {
          swa_lr.assign(groups, swa_lr[0]);
        }
        TORCH_CHECK_VALUE(swa_lr.size() == groups, "SWALR: swa_lr must have one value or one ",
                          "per param group (", groups, "), got ", swa_lr.size());
        return schedules::SWA(swa_lr, anneal_epochs, anneal_strategy);
      }()) {}

}  // namespace steadystep
