#include "lr_scheduler/optimizer_momentum.h"

#include <steadystep/optim.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <tuple>

namespace steadystep {

namespace {
// Applies `f` to the options as the type that holds a momentum; false if none does.
template <typename F>
bool visit_momentum(torch::optim::OptimizerOptions& options, F&& f) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<SGDOptions*>(&options)) {
    f([&](double m) { sgd->momentum(m); });
  } else if (auto* rms = dynamic_cast<RMSpropOptions*>(&options)) {
    f([&](double m) { rms->momentum(m); });
  } else if (auto* adam = dynamic_cast<AdamOptions*>(&options)) {
    f([&](double m) { adam->betas(std::make_tuple(m, std::get<1>(adam->betas()))); });
  } else if (auto* adamw = dynamic_cast<AdamWOptions*>(&options)) {
    f([&](double m) { adamw->betas(std::make_tuple(m, std::get<1>(adamw->betas()))); });
  } else if (auto* fsgd = dynamic_cast<FusedSGDOptions*>(&options)) {
    f([&](double m) { fsgd->momentum(m); });
  } else if (auto* fadam = dynamic_cast<FusedAdamOptions*>(&options)) {
    f([&](double m) { fadam->betas(std::make_tuple(m, std::get<1>(fadam->betas()))); });
  } else {
    return false;
  }
  return true;
}
}  // namespace

bool has_momentum(const torch::optim::Optimizer& optimizer) {
  auto& defaults = const_cast<torch::optim::Optimizer&>(optimizer).defaults();
  return visit_momentum(defaults, [](auto&&) {});
}

void check_has_momentum(const torch::optim::Optimizer& optimizer, const char* scheduler) {
  TORCH_CHECK_VALUE(has_momentum(optimizer), scheduler,
                    ": optimizer must support momentum or beta1 with `cycle_momentum` option "
                    "enabled (SGD, RMSprop, Adam, AdamW or steadystep's optimizers); pass "
                    "cycle_momentum(false) otherwise");
}

void set_momentum(torch::optim::OptimizerParamGroup& group, double momentum) {
  const bool ok = visit_momentum(group.options(), [&](auto&& set) { set(momentum); });
  TORCH_CHECK(ok, "param group options have no momentum or beta1");
}

}  // namespace steadystep
