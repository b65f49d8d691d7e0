#include <steadystep/clip_grad.h>
#include <steadystep/optim.h>

#include "optim/archive.h"
#include "optim/clip_settings.h"

#include <torch/torch.h>

#include <sstream>

namespace steadystep {

torch::Tensor FusedOptimizer::skipped_steps() const {
  return skipped_steps_.defined() ? skipped_steps_ : torch::zeros({}, torch::kLong);
}

torch::Tensor FusedOptimizer::evaluate(const LossClosure& closure) {
  if (!closure) {
    return {};
  }
  at::AutoGradMode enable_grad(true);
  return closure();
}

torch::Tensor& FusedOptimizer::skipped_counter(const c10::Device& device) {
  if (!skipped_steps_.defined()) {
    skipped_steps_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  return skipped_steps_;
}

void FusedOptimizer::save_skipped_steps(torch::serialize::OutputArchive& archive) const {
  archive.write("skipped_steps", c10::IValue(skipped_steps().item<int64_t>()));
}

std::optional<int64_t> FusedOptimizer::read_skipped_steps(torch::serialize::InputArchive& archive,
                                                          const std::string& who) {
  c10::IValue count;
  if (!archive.try_read("skipped_steps", count)) {
    return std::nullopt;
  }
  TORCH_CHECK(count.isInt() && count.toInt() >= 0, who,
              "::load: 'skipped_steps' in the archive is ", count.tagKind(),
              ", expected an int64 >= 0");
  return count.toInt();
}

void FusedOptimizer::restore_skipped_steps(std::optional<int64_t> count) {
  c10::Device device(torch::kCPU);
  for (const auto& group : param_groups()) {
    if (!group.params().empty()) {
      device = group.params()[0].device();
      break;
    }
  }
  skipped_steps_ =
      torch::full({}, count.value_or(0), torch::TensorOptions().dtype(torch::kLong).device(device));
}

void FusedOptimizer::draw_rounding_seed() {
  // Python's int(torch.randint(0, 2**62, (), dtype=torch.int64)): the same draw from the same
  // default generator, so that torch::manual_seed / torch.manual_seed give both one seed.
  rounding_seed_ = torch::randint(0, int64_t(1) << 62, {}, torch::kLong).item<int64_t>();
}

std::optional<int64_t> FusedOptimizer::step_rounding_seed(bool stochastic_rounding) {
  if (!stochastic_rounding) {
    return std::nullopt;
  }
  if (!rounding_seed_) {
    draw_rounding_seed();  // switched on after construction
  }
  return rounding_seed_;
}

void FusedOptimizer::save_rounding_seed(torch::serialize::OutputArchive& archive) const {
  if (rounding_seed_) {
    archive.write("rounding_seed", c10::IValue(*rounding_seed_));
  }
}

std::optional<int64_t> FusedOptimizer::read_rounding_seed(torch::serialize::InputArchive& archive,
                                                          const std::string& who) {
  c10::IValue seed;
  if (!archive.try_read("rounding_seed", seed)) {
    return std::nullopt;
  }
  TORCH_CHECK(seed.isInt(), who, "::load: 'rounding_seed' in the archive is ", seed.tagKind(),
              ", expected an int64");
  return seed.toInt();
}

torch::Tensor FusedOptimizer::last_clip_coef() const {
  return decisions_.defined() ? decisions_.select(0, 1) : torch::Tensor();
}

torch::Tensor FusedOptimizer::last_skipped() const {
  return decisions_.defined() ? decisions_.select(0, 2).ne(0) : torch::Tensor();
}

torch::Tensor& FusedOptimizer::decisions(const c10::Device& device) {
  if (!decisions_.defined() || decisions_.device() != device) {
    decisions_ = torch::zeros({3}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  }
  return decisions_;
}

FusedOptimizer::GuardCall FusedOptimizer::prepare_guard(
    const std::vector<std::shared_ptr<GradientGuard>>& guard,
    const std::vector<torch::Tensor>& params, const c10::Device& device) {
  GuardCall call;
  for (const auto& policy : guard) {
    TORCH_CHECK_VALUE(policy, "guard: a policy is null");
    if (const auto* agc = dynamic_cast<const AdaptiveGradClip*>(policy.get())) {
      // AGC clips each unit against its weight: it needs the params, so it runs here, once,
      // on the gradients the step then reads.
      adaptive_clip_grad_(params, agc->options().clip_factor(), agc->options().eps(),
                          agc->options().norm_type());
      continue;
    }
    call.states.push_back(policy->state_on(device));
    call.kinds.push_back(policy->kind());
    for (double a : policy->args()) {
      call.args.push_back(a);
    }
  }
  return call;
}

void FusedOptimizer::save_guard(torch::serialize::OutputArchive& archive,
                                const std::vector<std::shared_ptr<GradientGuard>>& guard) {
  archive.write("guard_size", c10::IValue(static_cast<int64_t>(guard.size())));
  for (size_t i = 0; i < guard.size(); ++i) {
    torch::serialize::OutputArchive policy(archive.compilation_unit());
    guard[i]->save(policy);
    archive.write("guard/" + std::to_string(i), policy);
  }
}

void FusedOptimizer::load_guard(torch::serialize::InputArchive& archive,
                                const std::vector<std::shared_ptr<GradientGuard>>& guard,
                                const std::string& who) {
  c10::IValue size;
  if (!archive.try_read("guard_size", size)) {
    return;  // an archive without a guard (LibTorch's, or an unguarded one): states stay
  }
  TORCH_CHECK_VALUE(size.toInt() == static_cast<int64_t>(guard.size()), who,
                    "::load: the archive holds a guard of ", size.toInt(),
                    " policies, this optimizer's has ", guard.size());
  for (size_t i = 0; i < guard.size(); ++i) {
    torch::serialize::InputArchive policy;
    archive.read("guard/" + std::to_string(i), policy);
    guard[i]->load(policy);
  }
}

namespace {

std::string show(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  if (!group) {
    return "unset (the local norm)";
  }
  std::ostringstream out;
  out << "'" << group->getGroupName() << "' (rank " << group->getRank() << " of "
      << group->getSize() << ")";
  return out.str();
}

std::string show(const std::optional<double>& max_grad_norm) {
  std::ostringstream out;
  if (max_grad_norm) {
    out << *max_grad_norm;
  } else {
    out << "unset (no clipping)";
  }
  return out.str();
}

std::string show(const std::optional<c10::ScalarType>& dtype) {
  return dtype ? std::string(c10::toString(*dtype)) : std::string("unset");
}

}  // namespace

FusedAdamOptions& FusedAdamOptions::process_group(
    const c10::intrusive_ptr<c10d::ProcessGroup>& process_group) {
  process_group_ = process_group;
  return *this;
}

c10::intrusive_ptr<c10d::ProcessGroup> FusedAdamOptions::process_group() const {
  return c10::static_intrusive_pointer_cast<c10d::ProcessGroup>(process_group_);
}

FusedSGDOptions& FusedSGDOptions::process_group(
    const c10::intrusive_ptr<c10d::ProcessGroup>& process_group) {
  process_group_ = process_group;
  return *this;
}

c10::intrusive_ptr<c10d::ProcessGroup> FusedSGDOptions::process_group() const {
  return c10::static_intrusive_pointer_cast<c10d::ProcessGroup>(process_group_);
}

std::optional<at::Tensor> global_grads_norm(const std::vector<at::Tensor>& grads,
                                            const ClipSettings& settings) {
  if (!settings.process_group ||
      (!settings.max_grad_norm && !settings.skip_nonfinite && settings.guard.empty())) {
    return std::nullopt;
  }
  return get_total_norm(grads, settings.norm_type, /*error_if_nonfinite=*/false,
                        settings.process_group);
}

void check_group_clip(const std::string& who, size_t group, const ClipSettings& in_group,
                      const ClipSettings& optimizer_wide) {
  std::ostringstream differs;
  bool precision = false;
  if (in_group.max_grad_norm != optimizer_wide.max_grad_norm) {
    differs << "max_grad_norm " << show(in_group.max_grad_norm) << " where the optimizer's is "
            << show(optimizer_wide.max_grad_norm);
  } else if (in_group.norm_type != optimizer_wide.norm_type) {
    differs << "norm_type " << in_group.norm_type << " where the optimizer's is "
            << optimizer_wide.norm_type;
  } else if (in_group.skip_nonfinite != optimizer_wide.skip_nonfinite) {
    differs << "skip_nonfinite " << std::boolalpha << in_group.skip_nonfinite
            << " where the optimizer's is " << optimizer_wide.skip_nonfinite;
  } else if (in_group.guard != optimizer_wide.guard) {
    differs << "another guard than the optimizer's";
  } else if (in_group.process_group.get() != optimizer_wide.process_group.get()) {
    differs << "process_group " << show(in_group.process_group) << " where the optimizer's is "
            << show(optimizer_wide.process_group);
  } else if (in_group.master_weights != optimizer_wide.master_weights) {
    precision = true;
    differs << "master_weights " << std::boolalpha << in_group.master_weights
            << " where the optimizer's is " << optimizer_wide.master_weights;
  } else if (in_group.stochastic_rounding != optimizer_wide.stochastic_rounding) {
    precision = true;
    differs << "stochastic_rounding " << std::boolalpha << in_group.stochastic_rounding
            << " where the optimizer's is " << optimizer_wide.stochastic_rounding;
  } else if (in_group.state_dtype != optimizer_wide.state_dtype) {
    precision = true;
    differs << "state_dtype " << show(in_group.state_dtype) << " where the optimizer's is "
            << show(optimizer_wide.state_dtype);
  } else {
    return;
  }
  if (precision) {
    TORCH_CHECK_VALUE(false, who, ": param group ", group, " sets ", differs.str(),
                      ". master_weights, stochastic_rounding and state_dtype apply to all param "
                      "groups together: set them in the options the optimizer is constructed "
                      "with, and give every group the same values (per-group precision is not "
                      "supported)");
  }
  TORCH_CHECK_VALUE(
      false, who, ": param group ", group, " sets ", differs.str(),
      ". max_grad_norm, norm_type, skip_nonfinite, guard and process_group clip and "
      "guard all param groups together: set them in the options the optimizer is constructed with, "
      "and give every group the same values (per-group clipping is not supported)");
}

void check_precision(bool master_weights, bool stochastic_rounding,
                     std::optional<c10::ScalarType> state_dtype) {
  TORCH_CHECK_VALUE(!(master_weights && stochastic_rounding),
                    "stochastic_rounding rounds bf16 params that have no master; with "
                    "master_weights=True the masters carry the precision");
  TORCH_CHECK_VALUE(
      !state_dtype || *state_dtype == torch::kFloat || *state_dtype == torch::kBFloat16,
      "state_dtype must be unset (the param's dtype), kFloat or kBFloat16, got ",
      show(state_dtype));
}

bool keeps_master(const at::Tensor& param, bool master_weights) {
  return master_weights &&
         (param.scalar_type() == torch::kHalf || param.scalar_type() == torch::kBFloat16);
}

c10::ScalarType state_dtype_for(const at::Tensor& param, bool master_weights,
                                std::optional<c10::ScalarType> state_dtype) {
  const c10::ScalarType own = param.scalar_type();
  if (own == torch::kDouble || c10::isComplexType(own)) {
    return own;
  }
  if (state_dtype) {
    return *state_dtype;
  }
  return keeps_master(param, master_weights) ? torch::kFloat : own;
}

namespace archive {

std::string field_list(torch::serialize::InputArchive& archive) {
  std::string out;
  for (const auto& key : archive.keys()) {
    if (key == "training") {  // every scripted module's own attribute, not a field
      continue;
    }
    out += (out.empty() ? "" : ", ") + key;
  }
  return out.empty() ? "none" : out;
}

std::optional<c10::IValue> FieldReader::find(const std::string& key) {
  c10::IValue value;
  if (archive_.try_read(key, value)) {
    return value;
  }
  return std::nullopt;
}

c10::IValue FieldReader::get(const std::string& key) {
  auto value = find(key);
  TORCH_CHECK(value.has_value(), where_, ": the archive has no '", key,
              "' (its fields: ", field_list(archive_), "); is it an archive of another optimizer?");
  return *value;
}

double FieldReader::number(const c10::IValue& value, const std::string& key) const {
  if (value.isDouble()) {
    return value.toDouble();
  }
  TORCH_CHECK(value.isInt(), where_, ": '", key, "' in the archive is ", value.tagKind(),
              ", expected a number");
  return static_cast<double>(value.toInt());
}

bool FieldReader::flag(const c10::IValue& value, const std::string& key) const {
  TORCH_CHECK(value.isBool(), where_, ": '", key, "' in the archive is ", value.tagKind(),
              ", expected a bool");
  return value.toBool();
}

torch::Tensor FieldReader::tensor(const c10::IValue& value, const std::string& key) const {
  TORCH_CHECK(value.isTensor(), where_, ": '", key, "' in the archive is ", value.tagKind(),
              ", expected a tensor");
  return value.toTensor();
}

torch::Tensor FieldReader::step(const c10::IValue& value) const {
  if (value.isInt() || value.isDouble()) {
    // fp32 counts exactly to 2^24 steps, as torch's own fp32 step tensors do.
    return torch::full({}, number(value, "step"), torch::kFloat);
  }
  TORCH_CHECK(
      value.isTensor() && value.toTensor().numel() == 1, where_, ": 'step' in the archive is ",
      value.isTensor() ? "a tensor of " + std::to_string(value.toTensor().numel()) + " elements"
                       : std::string(value.tagKind()),
      ", expected an int64 (LibTorch) or a one-element tensor");
  return value.toTensor().detach().to(torch::kFloat).reshape({}).clone();
}

Matched read_matched(torch::serialize::InputArchive& archive,
                     const torch::optim::Optimizer& optimizer, const std::string& who) {
  const std::string where = who + "::load";
  c10::IValue version;
  TORCH_CHECK(archive.try_read("pytorch_version", version) && version.isString() &&
                  version.toStringRef() == "1.5.0",
              where,
              ": not an optimizer archive in LibTorch's layout (no pytorch_version \"1.5.0\";",
              " its fields: ", field_list(archive), ")");
  torch::serialize::InputArchive states, groups;
  TORCH_CHECK(archive.try_read("state", states) && archive.try_read("param_groups", groups), where,
              ": the archive has no 'state' or 'param_groups' (its fields: ", field_list(archive),
              ")");
  torch::Tensor group_count;
  TORCH_CHECK(groups.try_read("param_groups/size", group_count), where,
              ": the archive's param_groups have no size");
  const auto& own = optimizer.param_groups();
  TORCH_CHECK(group_count.item<int64_t>() == static_cast<int64_t>(own.size()), where,
              ": the archive has ", group_count.item<int64_t>(), " param groups, this optimizer ",
              own.size());
  Matched matched;
  for (size_t g = 0; g < own.size(); ++g) {
    torch::serialize::InputArchive group;
    groups.read("param_groups/" + std::to_string(g), group);
    torch::Tensor size;
    group.read("params/size", size);
    const auto& params = own[g].params();
    TORCH_CHECK(size.item<int64_t>() == static_cast<int64_t>(params.size()), where,
                ": param group ", g, " of the archive has ", size.item<int64_t>(),
                " parameters, this optimizer's ", params.size());
    std::vector<std::optional<torch::serialize::InputArchive>> group_states;
    for (size_t j = 0; j < params.size(); ++j) {
      c10::IValue key;
      group.read("params/" + std::to_string(j), key);
      TORCH_CHECK(key.isString(), where, ": param ", j, " of group ", g, " has no state key");
      torch::serialize::InputArchive state;
      if (states.try_read(key.toStringRef(), state)) {
        group_states.emplace_back(std::move(state));
      } else {
        group_states.emplace_back(std::nullopt);
      }
    }
    matched.states.push_back(std::move(group_states));
    torch::serialize::InputArchive options;
    group.read("options", options);
    matched.group_options.push_back(std::move(options));
  }
  return matched;
}

void write(torch::serialize::OutputArchive& archive, const torch::optim::Optimizer& optimizer,
           const std::function<bool(const torch::optim::OptimizerParamState&)>& keep) {
  auto key_of = [](const torch::Tensor& p) {
    return std::to_string(reinterpret_cast<size_t>(p.unsafeGetTensorImpl()));
  };
  archive.write("pytorch_version", c10::IValue("1.5.0"));
  torch::serialize::OutputArchive states(archive.compilation_unit());
  torch::serialize::OutputArchive groups(archive.compilation_unit());
  const auto& own = optimizer.param_groups();
  groups.write("param_groups/size", torch::tensor(static_cast<int64_t>(own.size())));
  for (size_t g = 0; g < own.size(); ++g) {
    torch::serialize::OutputArchive group(archive.compilation_unit());
    const auto& params = own[g].params();
    group.write("params/size", torch::tensor(static_cast<int64_t>(params.size())));
    for (size_t j = 0; j < params.size(); ++j) {
      group.write("params/" + std::to_string(j), c10::IValue(key_of(params[j])));
      const auto found = optimizer.state().find(params[j].unsafeGetTensorImpl());
      if (found != optimizer.state().end() && keep(*found->second)) {
        torch::serialize::OutputArchive state(archive.compilation_unit());
        found->second->serialize(state);
        states.write(key_of(params[j]), state);
      }
    }
    torch::serialize::OutputArchive options(archive.compilation_unit());
    own[g].options().serialize(options);
    group.write("options", options);
    groups.write("param_groups/" + std::to_string(g), group);
  }
  archive.write("state", states);
  archive.write("param_groups", groups);
}

torch::Tensor like_param(const torch::Tensor& loaded, const torch::Tensor& param,
                         const std::string& what) {
  return like_param(loaded, param, param.scalar_type(), what);
}

torch::Tensor like_param(const torch::Tensor& loaded, const torch::Tensor& param,
                         c10::ScalarType dtype, const std::string& what) {
  TORCH_CHECK(loaded.sizes() == param.sizes(), what, " has shape ", loaded.sizes(),
              " but its parameter has shape ", param.sizes());
  torch::Tensor t = loaded.detach().to(param.device(), dtype);
  if (t.strides() != param.strides()) {
    t = torch::empty_like(param, param.options().dtype(dtype), torch::MemoryFormat::Preserve)
            .copy_(t);
  }
  return t;
}

void write_precision(torch::serialize::OutputArchive& archive, bool master_weights,
                     bool stochastic_rounding, std::optional<c10::ScalarType> state_dtype) {
  archive.write("master_weights", c10::IValue(master_weights));
  archive.write("stochastic_rounding", c10::IValue(stochastic_rounding));
  archive.write("state_dtype",
                state_dtype ? c10::IValue(static_cast<int64_t>(*state_dtype)) : c10::IValue());
}

std::optional<c10::ScalarType> FieldReader::dtype(const c10::IValue& value,
                                                  const std::string& key) const {
  if (value.isNone()) {
    return std::nullopt;
  }
  TORCH_CHECK(value.isInt() && value.toInt() >= 0 &&
                  value.toInt() < static_cast<int64_t>(c10::ScalarType::NumOptions),
              where_, ": '", key, "' in the archive is ", value.tagKind(),
              ", expected None or a dtype's number");
  return static_cast<c10::ScalarType>(value.toInt());
}

c10::IValue step_value(const torch::Tensor& step) {
  return c10::IValue(static_cast<int64_t>(std::llround(step.item<double>())));
}

}  // namespace archive

}  // namespace steadystep
