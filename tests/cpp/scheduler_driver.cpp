// Test-only Python module: builds steadystep's C++ schedulers (the LibTorch classes) from the
// case specs of tests/python/scheduler_cases.py, drives them on a LibTorch optimizer and
// returns lr and momentum per step, so pytest can hold them against torch's Python sequence.
// It also checkpoints mid-run with torch::save / torch::load and resumes.

#include <steadystep/lr_scheduler.h>

#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;
using namespace steadystep;

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& kind,
                                                        const std::vector<double>& lrs) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (double lr : lrs) {
    std::vector<torch::Tensor> params{torch::zeros({2}, torch::requires_grad())};
    if (kind == "adam") {
      groups.emplace_back(params, std::make_unique<torch::optim::AdamOptions>(lr));
    } else {
      groups.emplace_back(params, std::make_unique<torch::optim::SGDOptions>(
                                      torch::optim::SGDOptions(lr).momentum(0.9)));
    }
  }
  if (kind == "adam") {
    return std::make_unique<torch::optim::Adam>(groups, torch::optim::AdamOptions(lrs[0]));
  }
  return std::make_unique<torch::optim::SGD>(groups,
                                             torch::optim::SGDOptions(lrs[0]).momentum(0.9));
}

// One value for all groups or a list: PyTorch's float-or-list arguments.
std::vector<double> doubles(const py::handle& v) {
  if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
    return v.cast<std::vector<double>>();
  }
  return {v.cast<double>()};
}

template <typename T>
std::optional<T> optional(const py::dict& d, const char* key) {
  if (d[key].is_none()) {
    return std::nullopt;
  }
  return d[key].cast<T>();
}

std::vector<schedules::LrLambda> lambdas(const py::handle& v) {
  if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
    return v.cast<std::vector<schedules::LrLambda>>();
  }
  return {v.cast<schedules::LrLambda>()};
}

std::shared_ptr<LRScheduler> build(const py::dict& d, torch::optim::Optimizer& opt);

std::vector<std::shared_ptr<LRScheduler>> build_all(const py::handle& list,
                                                    torch::optim::Optimizer& opt) {
  std::vector<std::shared_ptr<LRScheduler>> out;
  for (const auto& item : list) {
    out.push_back(build(item.cast<py::dict>(), opt));
  }
  return out;
}

std::shared_ptr<LRScheduler> build(const py::dict& d, torch::optim::Optimizer& opt) {
  const auto name = d["__name__"].cast<std::string>();
  auto i64 = [&](const char* k) { return d[k].cast<int64_t>(); };
  auto f64 = [&](const char* k) { return d[k].cast<double>(); };
  auto str = [&](const char* k) { return d[k].cast<std::string>(); };
  auto flag = [&](const char* k) { return d[k].cast<bool>(); };
  if (name == "LambdaLR") {
    return std::make_shared<LambdaLR>(opt, lambdas(d["lr_lambda"]), i64("last_epoch"));
  }
  if (name == "MultiplicativeLR") {
    return std::make_shared<MultiplicativeLR>(opt, lambdas(d["lr_lambda"]), i64("last_epoch"));
  }
  if (name == "StepLR") {
    return std::make_shared<StepLR>(opt, i64("step_size"), f64("gamma"), i64("last_epoch"));
  }
  if (name == "MultiStepLR") {
    return std::make_shared<MultiStepLR>(opt, d["milestones"].cast<std::vector<int64_t>>(),
                                         f64("gamma"), i64("last_epoch"));
  }
  if (name == "ConstantLR") {
    return std::make_shared<ConstantLR>(opt, f64("factor"), i64("total_iters"), i64("last_epoch"));
  }
  if (name == "LinearLR") {
    return std::make_shared<LinearLR>(opt, f64("start_factor"), f64("end_factor"),
                                      i64("total_iters"), i64("last_epoch"));
  }
  if (name == "ExponentialLR") {
    return std::make_shared<ExponentialLR>(opt, f64("gamma"), i64("last_epoch"));
  }
  if (name == "PolynomialLR") {
    return std::make_shared<PolynomialLR>(opt, i64("total_iters"), f64("power"), i64("last_epoch"));
  }
  if (name == "CosineAnnealingLR") {
    return std::make_shared<CosineAnnealingLR>(opt, i64("T_max"), f64("eta_min"),
                                               i64("last_epoch"));
  }
  if (name == "CosineAnnealingWarmRestarts") {
    return std::make_shared<CosineAnnealingWarmRestarts>(opt, i64("T_0"), i64("T_mult"),
                                                         f64("eta_min"), i64("last_epoch"));
  }
  if (name == "CyclicLR") {
    CyclicLROptions o(doubles(d["base_lr"]), doubles(d["max_lr"]));
    o.step_size_up(f64("step_size_up"))
        .step_size_down(optional<double>(d, "step_size_down"))
        .mode(str("mode"))
        .gamma(f64("gamma"))
        .scale_mode(str("scale_mode"))
        .cycle_momentum(flag("cycle_momentum"))
        .base_momentum(doubles(d["base_momentum"]))
        .max_momentum(doubles(d["max_momentum"]))
        .last_epoch(i64("last_epoch"));
    if (!d["scale_fn"].is_none()) {
      o.scale_fn(d["scale_fn"].cast<schedules::ScaleFn>());
    }
    return std::make_shared<CyclicLR>(opt, o);
  }
  if (name == "OneCycleLR") {
    OneCycleLROptions o(doubles(d["max_lr"]));
    o.total_steps(optional<int64_t>(d, "total_steps"))
        .epochs(optional<int64_t>(d, "epochs"))
        .steps_per_epoch(optional<int64_t>(d, "steps_per_epoch"))
        .pct_start(f64("pct_start"))
        .anneal_strategy(str("anneal_strategy"))
        .cycle_momentum(flag("cycle_momentum"))
        .base_momentum(doubles(d["base_momentum"]))
        .max_momentum(doubles(d["max_momentum"]))
        .div_factor(f64("div_factor"))
        .final_div_factor(f64("final_div_factor"))
        .three_phase(flag("three_phase"))
        .last_epoch(i64("last_epoch"));
    return std::make_shared<OneCycleLR>(opt, o);
  }
  if (name == "ReduceLROnPlateau") {
    ReduceLROnPlateauOptions o;
    o.mode(str("mode"))
        .factor(f64("factor"))
        .patience(i64("patience"))
        .threshold(f64("threshold"))
        .threshold_mode(str("threshold_mode"))
        .cooldown(i64("cooldown"))
        .min_lr(doubles(d["min_lr"]))
        .eps(f64("eps"));
    return std::make_shared<ReduceLROnPlateau>(opt, o);
  }
  if (name == "SWALR") {
    return std::make_shared<SWALR>(opt, doubles(d["swa_lr"]), i64("anneal_epochs"),
                                   str("anneal_strategy"), i64("last_epoch"));
  }
  if (name == "SequentialLR") {
    return std::make_shared<SequentialLR>(opt, build_all(d["schedulers"], opt),
                                          d["milestones"].cast<std::vector<int64_t>>(),
                                          i64("last_epoch"));
  }
  if (name == "ChainedScheduler") {
    return std::make_shared<ChainedScheduler>(build_all(d["schedulers"], opt));
  }
  if (name == "BoundedLR") {
    return std::make_shared<BoundedLR>(build(d["scheduler"].cast<py::dict>(), opt), f64("min_lr"),
                                       f64("max_lr"));
  }
  if (name == "WarmupCosineLR") {
    return std::make_shared<WarmupCosineLR>(opt, i64("warmup_steps"), i64("total_steps"),
                                            f64("warmup_start_factor"), f64("eta_min"),
                                            i64("last_epoch"));
  }
  if (name == "WarmupStableDecayLR") {
    return std::make_shared<WarmupStableDecayLR>(
        opt, i64("warmup_steps"), i64("stable_steps"), i64("decay_steps"),
        f64("warmup_start_factor"), f64("min_lr_ratio"), str("decay_type"), i64("last_epoch"));
  }
  if (name == "InverseSqrtLR") {
    return std::make_shared<InverseSqrtLR>(opt, i64("warmup_steps"),
                                           optional<int64_t>(d, "timescale"), i64("last_epoch"));
  }
  if (name == "ExponentialDecayLR") {
    return std::make_shared<ExponentialDecayLR>(opt, f64("decay_rate"), i64("decay_steps"),
                                                flag("staircase"), f64("min_lr"),
                                                i64("last_epoch"));
  }
  if (name == "RandomLR") {
    return std::make_shared<RandomLR>(opt, f64("min_lr"), f64("max_lr"), i64("period"),
                                      flag("log_uniform"), d["seed"].cast<uint64_t>(),
                                      i64("last_epoch"));
  }
  throw py::value_error("scheduler_driver: unknown scheduler " + name);
}

std::vector<double> row(torch::optim::Optimizer& opt) {
  std::vector<double> lrs, moms;
  for (auto& g : opt.param_groups()) {
    lrs.push_back(g.options().get_lr());
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&g.options())) {
      moms.push_back(sgd->momentum());
    } else {
      moms.push_back(std::get<0>(static_cast<torch::optim::AdamOptions&>(g.options()).betas()));
    }
  }
  lrs.insert(lrs.end(), moms.begin(), moms.end());
  return lrs;
}

void step(LRScheduler& sched, const py::object& values, int64_t i) {
  if (values.is_none()) {
    sched.step();
    return;
  }
  const double v = values.cast<py::list>()[i].cast<double>();
  if (auto* plateau = dynamic_cast<ReduceLROnPlateau*>(&sched)) {
    plateau->step(v);
  } else if (auto* restarts = dynamic_cast<CosineAnnealingWarmRestarts*>(&sched)) {
    restarts->step(v);
  } else {
    sched.step(static_cast<int64_t>(v));
  }
}

// Rows of lr and momentum after construction and each step. With resume_at >= 0, the run is
// checkpointed there (scheduler and optimizer through torch::save), rebuilt from scratch,
// restored with torch::load, and continued.
std::vector<std::vector<double>> run(const py::dict& spec, const std::string& optimizer,
                                     const std::vector<double>& lrs, int64_t steps,
                                     const py::object& step_values, int64_t resume_at,
                                     const std::string& path) {
  auto opt = make_optimizer(optimizer, lrs);
  auto sched = build(spec, *opt);
  std::vector<std::vector<double>> rows{row(*opt)};
  for (int64_t i = 0; i < steps; ++i) {
    if (i == resume_at) {
      torch::save(*sched, path + ".sched");
      torch::save(*opt, path + ".opt");
      auto opt2 = make_optimizer(optimizer, lrs);
      auto sched2 = build(spec, *opt2);
      torch::load(*opt2, path + ".opt");
      torch::load(*sched2, path + ".sched");
      sched = std::move(sched2);  // the old scheduler refers to the old optimizer: drop it first
      opt = std::move(opt2);
    }
    step(*sched, step_values, i);
    rows.push_back(row(*opt));
  }
  return rows;
}

}  // namespace

PYBIND11_MODULE(_scheduler_driver, m) {
  m.doc() = "Test-only: drives steadystep's C++ schedulers from pytest";
  m.def("run", &run, py::arg("spec"), py::arg("optimizer"), py::arg("lrs"), py::arg("steps"),
        py::arg("step_values"), py::arg("resume_at") = -1, py::arg("path") = "");
}
