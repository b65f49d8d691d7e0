// Test-only Python module: the C++ FusedAdam (AdamW) with a gradient guard, driven on
// gradients that pytest hands over, so tests/python/test_optim_guard.py can hold the C++ step
// sequence (norm, clip coefficient, skip flag, params, guard states) against the Python
// optimizer's, bitwise. It can checkpoint mid-run (torch::save / torch::load into fresh
// policies and a fresh optimizer) and resume. Tensors cross as lists of doubles (fp32 values
// are exact in double), so the module needs no torch Python bindings.

#include <steadystep/guard.h>
#include <steadystep/optim.h>

#include "driver_common.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using steadystep::test::Flat;
using steadystep::test::from_flat;
using steadystep::test::to_flat;

// The policies the Python test builds under the same names.
std::vector<std::shared_ptr<steadystep::GradientGuard>> make_guard(const std::string& name) {
  auto zscore = std::make_shared<steadystep::ZScoreClip>(
      steadystep::ZScoreClipOptions().warmup_steps(10).max_grad_norm(std::nullopt));
  if (name == "zscore") {
    return {zscore};
  }
  if (name == "percentile") {
    return {std::make_shared<steadystep::PercentileClip>(
        steadystep::PercentileClipOptions().quantile(0.8).history_length(40))};
  }
  if (name == "skip+zscore") {
    return {
        std::make_shared<steadystep::SpikeSkip>(
            steadystep::SpikeSkipOptions().max_norm(100.0).z_thresh(3.0).window(16).warmup_steps(
                8)),
        zscore};
  }
  throw std::invalid_argument("unknown guard " + name);
}

using Guard = std::vector<std::shared_ptr<steadystep::GradientGuard>>;

std::unique_ptr<steadystep::FusedAdam> make_optimizer(const std::vector<torch::Tensor>& params,
                                                      const Guard& guard) {
  return std::make_unique<steadystep::FusedAdam>(
      params,
      steadystep::FusedAdamOptions(1e-2).weight_decay(1e-2).decoupled_weight_decay(true).guard(
          guard));
}

// Runs `grads.size()` steps from `init` (one flat list per param, `shapes`); at step
// `resume_at` (< 0: never) saves the optimizer and params, builds everything anew and loads.
py::dict run(const std::vector<Flat>& init, const std::vector<std::vector<int64_t>>& shapes,
             const std::vector<std::vector<Flat>>& grads, const std::string& guard,
             int64_t resume_at) {
  std::vector<torch::Tensor> params;
  for (size_t i = 0; i < init.size(); ++i) {
    params.push_back(from_flat(init[i], shapes[i]).requires_grad_());
  }
  Guard policies = make_guard(guard);
  auto opt = make_optimizer(params, policies);
  std::vector<Flat> decisions;
  for (size_t t = 0; t < grads.size(); ++t) {
    if (static_cast<int64_t>(t) == resume_at) {
      steadystep::test::resume_from_checkpoint(opt, params, [&](const auto& reloaded) {
        policies = make_guard(guard);  // fresh policies: the archive restores their states
        return make_optimizer(reloaded, policies);
      });
    }
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].mutable_grad() = from_flat(grads[t][i], shapes[i]);
    }
    opt->step();
    decisions.push_back({opt->last_grad_norm().item<double>(), opt->last_clip_coef().item<double>(),
                         opt->last_skipped().item<bool>() ? 1.0 : 0.0});
  }
  py::dict out;
  out["decisions"] = decisions;
  std::vector<Flat> final_params;
  for (const auto& p : params) {
    final_params.push_back(to_flat(p));
  }
  out["params"] = final_params;
  std::vector<Flat> states;
  for (const auto& policy : policies) {
    states.push_back(to_flat(policy->state()));
  }
  out["guard_states"] = states;
  out["skipped_steps"] = opt->skipped_steps().item<int64_t>();
  return out;
}

}  // namespace

PYBIND11_MODULE(_guard_driver, m) {
  m.doc() = "steadystep test driver: C++ FusedAdam with a gradient guard";
  m.def("run", &run, py::arg("init"), py::arg("shapes"), py::arg("grads"), py::arg("guard"),
        py::arg("resume_at") = -1);
}
