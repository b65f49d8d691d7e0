#include <steadystep/lr_scheduler.h>

#include <c10/util/Exception.h>

namespace steadystep {

LRScheduler::LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch)
    : torch::optim::LRScheduler(optimizer), optimizer_(optimizer), last_epoch_(last_epoch) {
  TORCH_CHECK_VALUE(last_epoch >= -1, "last_epoch must be >= -1, got ", last_epoch);
  base_lrs_ = get_current_lrs();
  last_lr_ = base_lrs_;
}

void LRScheduler::initial_step() {
  step_count_py_ = 0;
  is_initial_ = true;
  step();
  is_initial_ = false;
}

schedules::StepContext LRScheduler::context() const {
  schedules::StepContext ctx;
  ctx.last_epoch = last_epoch_;
  ctx.step_count = step_count_py_;
  ctx.is_initial = is_initial_;
  ctx.base_lrs = base_lrs_;
  ctx.lrs = get_current_lrs();
  return ctx;
}

// LibTorch's step() asks for the lrs here, then sets them itself (again: same values).
std::vector<double> LRScheduler::get_lrs() {
  ++step_count_py_;
  update_lr(std::nullopt);
  return last_lr_;
}

void LRScheduler::step(int64_t epoch) {
  TORCH_CHECK_VALUE(epoch >= 0, "step(epoch): epoch must be >= 0, got ", epoch);
  ++step_count_py_;
  update_lr(epoch);
}

void LRScheduler::update_lr(std::optional<int64_t> epoch) {
  std::vector<double> lrs;
  if (epoch) {
    last_epoch_ = *epoch;
    lrs = compute_closed_form_lr(context());
  } else {
    ++last_epoch_;
    lrs = compute_lr(context());
  }
  apply_lrs(std::move(lrs));
}

void LRScheduler::apply_lrs(std::vector<double> lrs) {
  auto& groups = optimizer_.param_groups();
  TORCH_CHECK(lrs.size() == groups.size(), "scheduler returned ", lrs.size(),
              " learning rates for ", groups.size(), " param groups");
  for (size_t i = 0; i < groups.size(); ++i) {
    groups[i].options().set_lr(lrs[i]);
  }
  last_lr_ = std::move(lrs);
}

void LRScheduler::set_base_lrs(std::vector<double> base_lrs) {
  TORCH_CHECK(base_lrs.size() == optimizer_.param_groups().size(), "got ", base_lrs.size(),
              " base lrs for ", optimizer_.param_groups().size(), " param groups");
  base_lrs_ = std::move(base_lrs);
}

void LRScheduler::write_doubles(torch::serialize::OutputArchive& archive, const std::string& key,
                                const std::vector<double>& values) {
  archive.write(key, c10::IValue(values));
}

std::vector<double> LRScheduler::read_doubles(torch::serialize::InputArchive& archive,
                                              const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toDoubleVector();
}

void LRScheduler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("last_epoch", c10::IValue(last_epoch_));
  archive.write("step_count", c10::IValue(step_count_py_));
  write_doubles(archive, "base_lrs", base_lrs_);
  write_doubles(archive, "last_lr", last_lr_);
  // Composite schedulers save the schedulers they drive, each in its own sub-archive.
  const auto kids = children();
  for (size_t i = 0; i < kids.size(); ++i) {
    torch::serialize::OutputArchive child(archive.compilation_unit());
    kids[i]->save(child);
    archive.write("child_" + std::to_string(i), child);
  }
}

void LRScheduler::load(torch::serialize::InputArchive& archive) {
  c10::IValue last_epoch, step_count;
  archive.read("last_epoch", last_epoch);
  archive.read("step_count", step_count);
  auto base = read_doubles(archive, "base_lrs");
  TORCH_CHECK(base.size() == optimizer_.param_groups().size(), "checkpoint holds ", base.size(),
              " base lrs but the optimizer has ", optimizer_.param_groups().size(),
              " param groups");
  last_epoch_ = last_epoch.toInt();
  step_count_py_ = step_count.toInt();
  base_lrs_ = std::move(base);
  last_lr_ = read_doubles(archive, "last_lr");
  const auto kids = children();
  for (size_t i = 0; i < kids.size(); ++i) {
    torch::serialize::InputArchive child;
    archive.read("child_" + std::to_string(i), child);
    kids[i]->load(child);
  }
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
