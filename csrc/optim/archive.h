#pragma once

// NOTE [Optimizer archives]: FusedAdam and FusedSGD read and write the layout that
// torch::optim::serialize writes for LibTorch's own optimizers ("pytorch_version" "1.5.0";
// "state/<TensorImpl key>/<field>"; "param_groups/<i>/params/<j>" naming those keys, and
// "param_groups/<i>/options/<field>"), so that a torch::optim::Adam, AdamW or SGD archive loads
// into them and theirs load into LibTorch's:
//   - a `step` is read as LibTorch's int64 or as a tensor (older steadystep archives), and
//     written as int64 (LibTorch's AdamParamState reads nothing else);
//   - fields LibTorch does not know (maximize, decoupled_weight_decay, the clipping and
//     low-precision settings; a state's master_param) are written after LibTorch's, which it
//     ignores; read back, an absent one keeps the optimizer's own value (an absent master is
//     made from the param at the next step);
//   - a missing required field, or a value of the wrong kind, is a c10::Error that names the
//     field and what the archive holds, raised before anything changes.
// torch::optim::serialize itself cannot do this: it asserts on a missing non-tensor field and
// its `to<T>()` refuses an int where a tensor was written.

#include "optim/clip_settings.h"

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace steadystep::archive {

/// Reads named fields from one archive; `where` prefixes every message.
class FieldReader {
 public:
  FieldReader(torch::serialize::InputArchive& archive, std::string where)
      : archive_(archive), where_(std::move(where)) {}

  /// The field, if the archive has it.
  std::optional<c10::IValue> find(const std::string& key);
  /// The field; a c10::Error naming it and the fields present when it is absent.
  c10::IValue get(const std::string& key);
  double number(const c10::IValue& value, const std::string& key) const;
  bool flag(const c10::IValue& value, const std::string& key) const;
  torch::Tensor tensor(const c10::IValue& value, const std::string& key) const;
  /// A step count, written as LibTorch's int64 or as a one-element tensor: fp32 0-dim, on CPU.
  torch::Tensor step(const c10::IValue& value) const;
  /// A dtype written by write_precision: None or the ScalarType's number.
  std::optional<c10::ScalarType> dtype(const c10::IValue& value, const std::string& key) const;

 private:
  torch::serialize::InputArchive& archive_;
  std::string where_;
};

/// Reads the clipping settings a steadystep archive holds into `options`; a LibTorch archive
/// has none and leaves them as they are.
template <typename Options>
void read_clip_settings(FieldReader& r, Options& options) {
  if (auto v = r.find("max_grad_norm")) {
    options.max_grad_norm(v->isNone() ? std::nullopt
                                      : std::optional<double>(r.number(*v, "max_grad_norm")));
  }
  if (auto v = r.find("norm_type")) {
    options.norm_type(r.number(*v, "norm_type"));
  }
  if (auto v = r.find("skip_nonfinite")) {
    options.skip_nonfinite(r.flag(*v, "skip_nonfinite"));
  }
}

/// Writes the low-precision settings into an options archive (after LibTorch's fields).
void write_precision(torch::serialize::OutputArchive& archive, bool master_weights,
                     bool stochastic_rounding, std::optional<c10::ScalarType> state_dtype);

/// Reads the low-precision settings a steadystep archive holds into `options`; an archive
/// without them (LibTorch's, earlier steadystep builds') leaves them as they are.
template <typename Options>
void read_precision(FieldReader& r, Options& options) {
  if (auto v = r.find("master_weights")) {
    options.master_weights(r.flag(*v, "master_weights"));
  }
  if (auto v = r.find("stochastic_rounding")) {
    options.stochastic_rounding(r.flag(*v, "stochastic_rounding"));
  }
  if (auto v = r.find("state_dtype")) {
    options.state_dtype(r.dtype(*v, "state_dtype"));
  }
}

/// An optimizer archive matched to an optimizer's parameters: per group, its options archive;
/// per parameter (group by group, in order), its state archive, if it has one.
struct Matched {
  std::vector<torch::serialize::InputArchive> group_options;
  std::vector<std::vector<std::optional<torch::serialize::InputArchive>>> states;
};

/// Reads `archive` and matches it to `optimizer`'s groups; `who` (e.g. "FusedAdam") prefixes
/// errors: different group count or group sizes, or not an optimizer archive at all.
Matched read_matched(torch::serialize::InputArchive& archive,
                     const torch::optim::Optimizer& optimizer, const std::string& who);

/// Writes `optimizer` in the layout above, each state and options by its own serialize();
/// `keep` may leave a parameter's state out (LibTorch could not read it).
void write(torch::serialize::OutputArchive& archive, const torch::optim::Optimizer& optimizer,
           const std::function<bool(const torch::optim::OptimizerParamState&)>& keep);

/// A loaded state tensor as `param` keeps its state: same device and dtype (what torch's
/// load_state_dict does), same strides; `what` names it when the shapes differ.
torch::Tensor like_param(const torch::Tensor& loaded, const torch::Tensor& param,
                         const std::string& what);
/// The same in `dtype` (a state kept in state_dtype, an fp32 master).
torch::Tensor like_param(const torch::Tensor& loaded, const torch::Tensor& param,
                         c10::ScalarType dtype, const std::string& what);

/// A step tensor as LibTorch writes a step: int64 (reads the device value back to the host).
c10::IValue step_value(const torch::Tensor& step);

/// "a, b, c": the fields of an archive, for messages.
std::string field_list(torch::serialize::InputArchive& archive);

}  // namespace steadystep::archive

namespace steadystep::archive {

/// Runs `body`; a c10::Error it raises is raised again with `context` in front.
template <typename Body>
void with_context(const std::string& context, Body body) {
  try {
    body();
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, context, ": ", e.what_without_backtrace());
  }
}

/// Loads `archive` into `optimizer` (of options type `Options`, state type `State`) all or
/// nothing: every group's options (read over a copy of the group's own, so that fields the
/// archive lacks keep their value) and every state are read and checked first, then the
/// state is replaced by the archive's (as torch's load_state_dict does: a parameter the
/// archive has no state for starts afresh), the groups' options too, and the optimizer-wide
/// clipping and low-precision settings become the archive's. `check_options` validates one
/// group's options; `place_state(state, param, options)` fills in and moves one state beside
/// its parameter, in the dtypes the loaded optimizer-wide `options` keep it in.
template <typename Options, typename State, typename CheckOptions, typename PlaceState>
void load(torch::serialize::InputArchive& archive, torch::optim::Optimizer& optimizer,
          const std::string& who, CheckOptions check_options, PlaceState place_state) {
  Matched matched = read_matched(archive, optimizer, who);
  auto& groups = optimizer.param_groups();
  std::vector<std::unique_ptr<Options>> options;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto o = std::make_unique<Options>(static_cast<const Options&>(groups[g].options()));
    with_context(who + "::load: param group " + std::to_string(g), [&] {
      o->serialize(matched.group_options[g]);
      check_options(*o);
    });
    if (g > 0) {
      check_group_clip(who + "::load: the archive", g, clip_settings(*o),
                       clip_settings(*options[0]));
    }
    options.push_back(std::move(o));
  }
  // The optimizer-wide settings the loaded optimizer will have (those of group 0, which the
  // other groups were checked to match).
  const Options& wide =
      options.empty() ? static_cast<const Options&>(optimizer.defaults()) : *options[0];
  std::vector<std::pair<void*, std::unique_ptr<State>>> states;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t j = 0; j < matched.states[g].size(); ++j) {
      if (!matched.states[g][j]) {
        continue;
      }
      const torch::Tensor& param = groups[g].params()[j];
      auto state = std::make_unique<State>();
      const std::string what = who + "::load: the state of parameter " + std::to_string(j) +
                               " of param group " + std::to_string(g);
      with_context(what, [&] {
        state->serialize(*matched.states[g][j]);
        place_state(*state, param, wide);
      });
      states.emplace_back(param.unsafeGetTensorImpl(), std::move(state));
    }
  }
  // Everything is read and checked: from here on nothing throws.
  optimizer.state().clear();
  for (auto& [key, state] : states) {
    optimizer.state()[key] = std::move(state);
  }
  if (!options.empty()) {
    auto& defaults = static_cast<Options&>(optimizer.defaults());
    defaults.max_grad_norm(options[0]->max_grad_norm());
    defaults.norm_type(options[0]->norm_type());
    defaults.skip_nonfinite(options[0]->skip_nonfinite());
    defaults.master_weights(options[0]->master_weights());
    defaults.stochastic_rounding(options[0]->stochastic_rounding());
    defaults.state_dtype(options[0]->state_dtype());
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].set_options(std::move(options[g]));
  }
}

}  // namespace steadystep::archive
