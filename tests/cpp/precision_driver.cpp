// Test-only Python module: the C++ FusedAdam (AdamW) or FusedSGD with the low-precision settings
// (master_weights, stochastic_rounding, state_dtype), driven on gradients that pytest hands over,
// so tests/python/test_optim_precision_cpp.py can hold the C++ optimizers against the Python
// ones bitwise: params, masters, state, and the rounding seed drawn after torch::manual_seed.
// It can checkpoint mid-run (torch::save / torch::load into a fresh optimizer, made under
// another torch seed, so that only the archive can bring the rounding seed back) and resume.
// Tensors cross as lists of doubles (fp32, fp16 and bf16 values are exact in double), so the
// module needs no torch Python bindings.

#include <steadystep/optim.h>

#include "driver_common.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using steadystep::test::Flat;
using steadystep::test::from_flat;
using steadystep::test::to_flat;

torch::ScalarType dtype_of(const std::string& name) {
  if (name == "float32") return torch::kFloat;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kHalf;
  if (name == "float64") return torch::kDouble;
  throw std::invalid_argument("unknown dtype " + name);
}

std::string name_of(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kDouble:
      return "float64";
    default:
      return c10::toString(dtype);
  }
}

// The Python test builds the same: two groups, the second at half the lr.
constexpr double kAdamLr = 1e-3;
constexpr double kSgdLr = 1e-2;

struct Settings {
  std::string kind;  // "adamw" or "sgd"
  bool master_weights;
  bool stochastic_rounding;
  std::optional<torch::ScalarType> state_dtype;
  std::optional<double> max_grad_norm;
};

std::unique_ptr<steadystep::FusedOptimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                           const Settings& s) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (s.kind == "adamw") {
    using Options = steadystep::FusedAdamOptions;
    auto o = steadystep::FusedAdamOptions(kAdamLr)
                 .weight_decay(1e-2)
                 .decoupled_weight_decay(true)
                 .max_grad_norm(s.max_grad_norm)
                 .master_weights(s.master_weights)
                 .stochastic_rounding(s.stochastic_rounding)
                 .state_dtype(s.state_dtype);
    auto half = o;
    half.lr(kAdamLr / 2);
    groups.emplace_back(std::vector<torch::Tensor>{params[0]}, std::make_unique<Options>(o));
    groups.emplace_back(std::vector<torch::Tensor>(params.begin() + 1, params.end()),
                        std::make_unique<Options>(half));
    return std::make_unique<steadystep::FusedAdam>(groups, o);
  }
  if (s.kind == "sgd") {
    using Options = steadystep::FusedSGDOptions;
    auto o = steadystep::FusedSGDOptions(kSgdLr)
                 .momentum(0.9)
                 .weight_decay(1e-3)
                 .max_grad_norm(s.max_grad_norm)
                 .master_weights(s.master_weights)
                 .stochastic_rounding(s.stochastic_rounding)
                 .state_dtype(s.state_dtype);
    auto half = o;
    half.lr(kSgdLr / 2);
    groups.emplace_back(std::vector<torch::Tensor>{params[0]}, std::make_unique<Options>(o));
    groups.emplace_back(std::vector<torch::Tensor>(params.begin() + 1, params.end()),
                        std::make_unique<Options>(half));
    return std::make_unique<steadystep::FusedSGD>(groups, o);
  }
  throw std::invalid_argument("unknown optimizer " + s.kind);
}

// The state of one param as the Python optimizer names it: {field: (dtype, values)}.
py::dict state_dict(const torch::optim::Optimizer& opt, const torch::Tensor& p, bool adam) {
  py::dict out;
  const auto found = opt.state().find(p.unsafeGetTensorImpl());
  if (found == opt.state().end()) {
    return out;
  }
  auto put = [&](const char* name, const torch::Tensor& t) {
    if (t.defined()) {
      out[name] = py::make_tuple(name_of(t.scalar_type()), to_flat(t));
    }
  };
  if (adam) {
    const auto& s = static_cast<const steadystep::FusedAdamParamState&>(*found->second);
    put("step", s.step());
    put("exp_avg", s.exp_avg());
    put("exp_avg_sq", s.exp_avg_sq());
    put("max_exp_avg_sq", s.max_exp_avg_sq());
    put("master_param", s.master_param());
  } else {
    const auto& s = static_cast<const steadystep::FusedSGDParamState&>(*found->second);
    put("step", s.step());
    put("momentum_buffer", s.momentum_buffer());
    put("master_param", s.master_param());
  }
  return out;
}

// Runs `grads.size()` steps from `init` (one flat list per param, `shapes`) in `dtype`, the
// optimizer made right after torch::manual_seed(`torch_seed`); at step `resume_at` (< 0: never)
// saves the optimizer and params, builds everything anew under torch seed `torch_seed + 1` and
// loads.
py::dict run(const std::string& kind, const std::string& dtype, bool master_weights,
             bool stochastic_rounding, const std::optional<std::string>& state_dtype,
             uint64_t torch_seed, const std::vector<Flat>& init,
             const std::vector<std::vector<int64_t>>& shapes,
             const std::vector<std::vector<Flat>>& grads, int64_t resume_at,
             std::optional<double> max_grad_norm) {
  const Settings settings{
      kind, master_weights, stochastic_rounding,
      state_dtype ? std::optional<torch::ScalarType>(dtype_of(*state_dtype)) : std::nullopt,
      max_grad_norm};
  const torch::ScalarType param_dtype = dtype_of(dtype);
  std::vector<torch::Tensor> params;
  for (size_t i = 0; i < init.size(); ++i) {
    params.push_back(from_flat(init[i], shapes[i], param_dtype).requires_grad_());
  }
  torch::manual_seed(torch_seed);
  auto opt = make_optimizer(params, settings);
  for (size_t t = 0; t < grads.size(); ++t) {
    if (static_cast<int64_t>(t) == resume_at) {
      steadystep::test::resume_from_checkpoint(opt, params, [&](const auto& reloaded) {
        torch::manual_seed(torch_seed + 1);
        return make_optimizer(reloaded, settings);
      });
    }
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].mutable_grad() = from_flat(grads[t][i], shapes[i], param_dtype);
    }
    opt->step();
  }
  py::dict out;
  std::vector<Flat> final_params;
  py::list states;
  for (const auto& p : params) {
    final_params.push_back(to_flat(p));
    states.append(state_dict(*opt, p, kind == "adamw"));
  }
  out["params"] = final_params;
  out["states"] = states;
  out["rounding_seed"] = opt->rounding_seed();
  out["skipped_steps"] = opt->skipped_steps().item<int64_t>();
  return out;
}

}  // namespace

PYBIND11_MODULE(_precision_driver, m) {
  m.doc() = "steadystep test driver: C++ FusedAdam/FusedSGD with low-precision settings";
  m.def("run", &run, py::arg("kind"), py::arg("dtype"), py::arg("master_weights"),
        py::arg("stochastic_rounding"), py::arg("state_dtype"), py::arg("torch_seed"),
        py::arg("init"), py::arg("shapes"), py::arg("grads"), py::arg("resume_at") = -1,
        py::arg("max_grad_norm") = std::nullopt);
}
