#include <steadystep/lr_scheduler.h>

#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace steadystep {

namespace {

// NOTE [initial_lr]: PyTorch's schedulers keep `initial_lr` in each param group: the first
// scheduler built on a group sets it (setdefault) and every later one (in SequentialLR,
// ChainedScheduler, or stacked by hand) takes its base lr from there. OneCycleLR keeps its
// `max_lr`, `min_lr`, `max_momentum` and `base_momentum` there too, and reads them at every step,
// so a later OneCycleLR on the same group changes what an earlier one computes. LibTorch's param
// groups have no such fields, so they live here, keyed by the group's options object. A weak
// reference to the group's first parameter tells a live entry from one left by a destroyed
// optimizer whose memory was reused.
struct GroupFields {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> first_param;
  std::unordered_map<std::string, double> values;
};
std::mutex group_fields_mutex;
std::unordered_map<const void*, GroupFields> group_fields;

c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> first_param(
    torch::optim::OptimizerParamGroup& group) {
  if (group.params().empty()) {
    return c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
        c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>());
  }
  return c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
      group.params()[0].getIntrusivePtr());
}

// The live fields of `group` (a stale entry is dropped), or null. Call with the mutex held.
GroupFields* find_fields(torch::optim::OptimizerParamGroup& group) {
  const auto it = group_fields.find(&group.options());
  if (it == group_fields.end()) {
    return nullptr;
  }
  const auto param = it->second.first_param.lock();
  const bool same = group.params().empty() ? !param.defined()
                                           : param.get() == group.params()[0].unsafeGetTensorImpl();
  if (!same) {
    group_fields.erase(it);
    return nullptr;
  }
  return &it->second;
}

std::optional<double> find_value(torch::optim::OptimizerParamGroup& group, const std::string& key) {
  const GroupFields* fields = find_fields(group);
  if (fields == nullptr) {
    return std::nullopt;
  }
  const auto it = fields->values.find(key);
  return it == fields->values.end() ? std::nullopt : std::optional<double>(it->second);
}

void store_value(torch::optim::OptimizerParamGroup& group, const std::string& key, double value) {
  GroupFields* fields = find_fields(group);
  if (fields == nullptr) {
    fields =
        &group_fields.emplace(&group.options(), GroupFields{first_param(group), {}}).first->second;
  }
  fields->values[key] = value;
}

bool has_initial_lr(torch::optim::OptimizerParamGroup& group) {
  std::lock_guard<std::mutex> lock(group_fields_mutex);
  return find_value(group, "initial_lr").has_value();
}

}  // namespace

std::optional<double> group_field(torch::optim::OptimizerParamGroup& group,
                                  const std::string& key) {
  std::lock_guard<std::mutex> lock(group_fields_mutex);
  return find_value(group, key);
}

void set_group_field(torch::optim::OptimizerParamGroup& group, const std::string& key,
                     double value) {
  std::lock_guard<std::mutex> lock(group_fields_mutex);
  store_value(group, key, value);
}

double initial_lr(torch::optim::OptimizerParamGroup& group, std::optional<double> set) {
  std::lock_guard<std::mutex> lock(group_fields_mutex);
  if (!set) {
    if (auto found = find_value(group, "initial_lr")) {
      return *found;
    }
    set = group.options().get_lr();
  }
  store_value(group, "initial_lr", *set);
  return *set;
}

LRScheduler::LRScheduler(torch::optim::Optimizer& optimizer, int64_t last_epoch)
    : torch::optim::LRScheduler(optimizer), optimizer_(optimizer), last_epoch_(last_epoch) {
  TORCH_CHECK_VALUE(last_epoch >= -1, "last_epoch must be >= -1, got ", last_epoch);
  // Python: base_lrs = [group["initial_lr"]], set from the current lr if absent.
  for (auto& group : optimizer.param_groups()) {
    created_initial_lr_.push_back(!has_initial_lr(group));
    base_lrs_.push_back(initial_lr(group));
  }
  last_lr_ = get_current_lrs();
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
