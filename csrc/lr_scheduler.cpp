#include <steadystep/lr_scheduler.h>

#include <c10/util/Exception.h>

namespace steadystep {

LRScheduler::LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch)
    : torch::optim::LRScheduler(optimizer), optimizer_(optimizer), last_epoch_(last_epoch) {
  TORCH_CHECK_VALUE(last_epoch >= -1, "last_epoch must be >= -1, got ", last_epoch);
  base_lrs_ = get_current_lrs();
}

void LRScheduler::initial_step() {
  is_initial_ = true;
  step();
  is_initial_ = false;
}

schedules::StepContext LRScheduler::context() const {
  schedules::StepContext ctx;
  ctx.last_epoch = last_epoch_;
  // LibTorch counts a step after computing its lrs, Python before: add the one in flight.
  ctx.step_count = static_cast<int64_t>(step_count_) + 1;
  ctx.is_initial = is_initial_;
  ctx.base_lrs = base_lrs_;
  ctx.lrs = get_current_lrs();
  return ctx;
}

std::vector<double> LRScheduler::get_lrs() {
  ++last_epoch_;
  last_lr_ = compute_lr(context());
  return last_lr_;
}

void LRScheduler::step(int64_t epoch) {
  TORCH_CHECK_VALUE(epoch >= 0, "step(epoch): epoch must be >= 0, got ", epoch);
  last_epoch_ = epoch;
  std::vector<double> lrs = compute_closed_form_lr(context());
  set_lrs(lrs);
  last_lr_ = std::move(lrs);
  ++step_count_;
}

void LRScheduler::set_lrs(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  TORCH_CHECK(lrs.size() == groups.size(), "scheduler returned ", lrs.size(),
              " learning rates for ", groups.size(), " param groups");
  for (size_t i = 0; i < groups.size(); ++i) {
    groups[i].options().set_lr(lrs[i]);
  }
}

void LRScheduler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("last_epoch", c10::IValue(last_epoch_));
  archive.write("step_count", c10::IValue(static_cast<int64_t>(step_count_)));
  archive.write("base_lrs", c10::IValue(base_lrs_));
  archive.write("last_lr", c10::IValue(last_lr_));
}

void LRScheduler::load(torch::serialize::InputArchive& archive) {
  c10::IValue last_epoch, step_count, base_lrs, last_lr;
  archive.read("last_epoch", last_epoch);
  archive.read("step_count", step_count);
  archive.read("base_lrs", base_lrs);
  archive.read("last_lr", last_lr);
  auto base = base_lrs.toDoubleVector();
  TORCH_CHECK(base.size() == optimizer_.param_groups().size(), "checkpoint holds ", base.size(),
              " base lrs but the optimizer has ", optimizer_.param_groups().size(),
              " param groups");
  last_epoch_ = last_epoch.toInt();
  step_count_ = static_cast<unsigned>(step_count.toInt());
  base_lrs_ = std::move(base);
  last_lr_ = last_lr.toDoubleVector();
}

torch::serialize::OutputArchive& operator<<(torch::serialize::OutputArchive& archive,
                                            const LRScheduler& scheduler) {
  scheduler.save(archive);
  return archive;
}

torch::serialize::InputArchive& operator>>(torch::serialize::InputArchive& archive,
                                           LRScheduler& scheduler) {
  scheduler.load(archive);
  return archive;
}

}  // namespace steadystep
