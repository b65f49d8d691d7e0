// FusedAdam / FusedSGD from C++: against golden values that torch's clip_grad_norm_ + optimizer
// produced (tests/golden/make_optimizer_golden.py), checkpoint round trips, the non-finite
// guard, and a LibTorch training loop with a steadystep scheduler.

#include <steadystep/lr_scheduler.h>
#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

namespace {

const std::vector<std::vector<int64_t>> kShapes = {{3, 5}, {17}, {32, 17}};
constexpr double kLrs[] = {1e-2, 3e-3};
constexpr int kSteps = 50;

// The same params and grads as the generator script, from the same torch ops.
torch::Tensor initial_param(int k) {
  const int64_t n = torch::tensor(kShapes[k]).prod().item<int64_t>();
  return torch::sin(torch::arange(n, torch::kDouble) * 0.1 + k)
      .to(torch::kFloat)
      .reshape(kShapes[k]);
}

torch::Tensor grad(int k, int step) {
  const int64_t n = torch::tensor(kShapes[k]).prod().item<int64_t>();
  return (3 * torch::cos(torch::arange(n, torch::kDouble) * 0.37 + 0.11 * step + k))
      .to(torch::kFloat)
      .reshape(kShapes[k]);
}

using Golden = std::map<std::string, std::map<std::string, std::vector<torch::Tensor>>>;

Golden read_golden() {
  std::ifstream in(STEADYSTEP_GOLDEN_DIR "/optimizers.txt");
  EXPECT_TRUE(in.good()) << "missing " STEADYSTEP_GOLDEN_DIR "/optimizers.txt";
  Golden golden;
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "case") {
      fields >> current;
      continue;
    }
    size_t k, n;
    fields >> k >> n;
    std::vector<float> values(n);
    for (auto& v : values) {
      fields >> v;
    }
    auto& list = golden[current][key];
    list.resize(std::max(list.size(), k + 1));
    list[k] = torch::tensor(values).reshape(kShapes[k]);
  }
  return golden;
}

// Within fp32 rounding of torch's own values: rel 1e-5 of the tensor's scale (the two sides
// round differently element by element: FMA contraction, operation order).
void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5 * scale))
      << what << ": max diff " << (got - want).abs().max().item<double>() << " at scale " << scale;
}

std::vector<torch::optim::OptimizerParamGroup> groups(const std::vector<torch::Tensor>& params,
                                                      const torch::optim::OptimizerOptions& o) {
  std::vector<torch::optim::OptimizerParamGroup> out;
  out.emplace_back(std::vector<torch::Tensor>{params[0]}, o.clone());
  out.emplace_back(std::vector<torch::Tensor>{params[1], params[2]}, o.clone());
  out[0].options().set_lr(kLrs[0]);
  out[1].options().set_lr(kLrs[1]);
  return out;
}

struct Case {
  std::string name;
  std::function<std::unique_ptr<torch::optim::Optimizer>(const std::vector<torch::Tensor>&)> make;
};

std::vector<Case> cases() {
  using steadystep::FusedAdam;
  using steadystep::FusedAdamOptions;
  using steadystep::FusedSGD;
  using steadystep::FusedSGDOptions;
  auto adam = [](FusedAdamOptions o) {
    return [o](const std::vector<torch::Tensor>& p) {
      return std::make_unique<FusedAdam>(groups(p, o), o);
    };
  };
  auto sgd = [](FusedSGDOptions o) {
    return [o](const std::vector<torch::Tensor>& p) {
      return std::make_unique<FusedSGD>(groups(p, o), o);
    };
  };
  return {
      {"adam", adam(FusedAdamOptions())},
      {"adam_clip", adam(FusedAdamOptions().max_grad_norm(1.0))},
      {"adam_amsgrad_wd",
       adam(FusedAdamOptions().weight_decay(0.1).amsgrad(true).max_grad_norm(2.0))},
      {"adamw_clip_inf", adam(FusedAdamOptions()
                                  .weight_decay(0.05)
                                  .decoupled_weight_decay(true)
                                  .max_grad_norm(0.5)
                                  .norm_type(INFINITY))},
      {"adam_maximize",
       adam(
           FusedAdamOptions().maximize(true).betas({0.8, 0.99}).max_grad_norm(1.0).norm_type(1.0))},
      {"sgd", sgd(FusedSGDOptions())},
      {"sgd_nesterov_clip", sgd(FusedSGDOptions().momentum(0.9).nesterov(true).max_grad_norm(1.0))},
      {"sgd_dampening_wd",
       sgd(FusedSGDOptions().momentum(0.5).dampening(0.1).weight_decay(0.01).max_grad_norm(3.0))},
  };
}

std::vector<torch::Tensor> fresh_params() {
  std::vector<torch::Tensor> params;
  for (size_t k = 0; k < kShapes.size(); ++k) {
    params.push_back(initial_param(static_cast<int>(k)).requires_grad_(true));
  }
  return params;
}

void run(torch::optim::Optimizer& opt, std::vector<torch::Tensor>& params, int from, int to) {
  for (int step = from; step < to; ++step) {
    for (size_t k = 0; k < params.size(); ++k) {
      params[k].mutable_grad() = grad(static_cast<int>(k), step);
    }
    opt.step();
  }
}

torch::Tensor state_tensor(torch::optim::Optimizer& opt, const torch::Tensor& p,
                           const std::string& key) {
  auto& s = *opt.state().at(p.unsafeGetTensorImpl());
  if (auto* a = dynamic_cast<steadystep::FusedAdamParamState*>(&s)) {
    if (key == "exp_avg") return a->exp_avg();
    if (key == "exp_avg_sq") return a->exp_avg_sq();
    if (key == "max_exp_avg_sq") return a->max_exp_avg_sq();
  }
  if (auto* g = dynamic_cast<steadystep::FusedSGDParamState*>(&s)) {
    if (key == "momentum_buffer") return g->momentum_buffer();
  }
  return {};
}

TEST(FusedOptimizers, MatchTorchGoldenValues) {
  const Golden golden = read_golden();
  for (const auto& c : cases()) {
    ASSERT_TRUE(golden.count(c.name)) << c.name;
    auto params = fresh_params();
    auto opt = c.make(params);
    run(*opt, params, 0, kSteps);
    for (const auto& [key, tensors] : golden.at(c.name)) {
      for (size_t k = 0; k < tensors.size(); ++k) {
        const torch::Tensor got =
            key == "param" ? params[k].detach() : state_tensor(*opt, params[k], key);
        ASSERT_TRUE(got.defined()) << c.name << " " << key << " " << k;
        expect_close(got, tensors[k], c.name + " " + key + " " + std::to_string(k));
      }
    }
  }
}

TEST(FusedOptimizers, SaveLoadResumesIdentically) {
  const std::string path = ::testing::TempDir() + "/steadystep_fused_optim.pt";
  for (const auto& c : cases()) {
    auto full_params = fresh_params();
    auto full = c.make(full_params);
    run(*full, full_params, 0, 30);

    auto first_params = fresh_params();
    auto first = c.make(first_params);
    run(*first, first_params, 0, 12);
    torch::save(*first, path);
    auto resumed_params = fresh_params();
    for (size_t k = 0; k < resumed_params.size(); ++k) {
      resumed_params[k].detach().copy_(first_params[k].detach());
    }
    auto resumed = c.make(resumed_params);
    torch::load(*resumed, path);
    run(*resumed, resumed_params, 12, 30);
    for (size_t k = 0; k < full_params.size(); ++k) {
      EXPECT_TRUE(torch::equal(resumed_params[k], full_params[k])) << c.name;
    }
  }
  std::remove(path.c_str());
}

TEST(FusedOptimizers, NonFiniteStepChangesNothing) {
  for (const auto& c : cases()) {
    auto params = fresh_params();
    auto opt = c.make(params);
    run(*opt, params, 0, 3);
    std::vector<torch::Tensor> before;
    for (const auto& p : params) {
      before.push_back(p.detach().clone());
    }
    for (size_t k = 0; k < params.size(); ++k) {
      params[k].mutable_grad() = grad(static_cast<int>(k), 3);
    }
    params[2].mutable_grad()[1][2] = std::nan("");
    opt->step();
    for (size_t k = 0; k < params.size(); ++k) {
      EXPECT_TRUE(torch::equal(params[k], before[k])) << c.name;
    }
    const auto skipped = dynamic_cast<steadystep::FusedAdam*>(opt.get())
                             ? static_cast<steadystep::FusedAdam&>(*opt).skipped_steps()
                             : static_cast<steadystep::FusedSGD&>(*opt).skipped_steps();
    EXPECT_EQ(skipped.item<int64_t>(), 1) << c.name;
  }
}

TEST(FusedOptimizers, BadOptionsAreRejected) {
  auto params = fresh_params();
  EXPECT_THROW(steadystep::FusedAdam(params, steadystep::FusedAdamOptions(-1.0)), c10::Error);
  EXPECT_THROW(steadystep::FusedAdam(params, steadystep::FusedAdamOptions().betas({1.0, 0.9})),
               c10::Error);
  EXPECT_THROW(steadystep::FusedAdam(params, steadystep::FusedAdamOptions().max_grad_norm(0.0)),
               c10::Error);
  EXPECT_THROW(steadystep::FusedSGD(params, steadystep::FusedSGDOptions().nesterov(true)),
               c10::Error);
  EXPECT_THROW(steadystep::FusedSGD(params, steadystep::FusedSGDOptions().momentum(-0.1)),
               c10::Error);
}

TEST(FusedOptimizers, TrainWithASteadystepScheduler) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(8, 32), torch::nn::Tanh(),
                              torch::nn::Linear(32, 1));
  steadystep::FusedAdam opt(model->parameters(), steadystep::FusedAdamOptions(1e-2)
                                                     .decoupled_weight_decay(true)
                                                     .weight_decay(0.01)
                                                     .max_grad_norm(1.0));
  steadystep::OneCycleLR sched(opt, steadystep::OneCycleLROptions({3e-2}).total_steps(200));
  const auto x = torch::randn({128, 8});
  const auto y = torch::sin(x.sum(1, true));
  double first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    opt.zero_grad();
    auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    opt.step();
    sched.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first * 0.5);
  EXPECT_TRUE(opt.last_grad_norm().defined());
  EXPECT_EQ(opt.skipped_steps().item<int64_t>(), 0);
}

TEST(FusedOptimizers, LibTorchSchedulersDriveThem) {
  auto params = fresh_params();
  steadystep::FusedSGD sgd(params, steadystep::FusedSGDOptions(0.1).momentum(0.9));
  torch::optim::StepLR step_lr(sgd, /*step_size=*/2, /*gamma=*/0.5);
  for (int i = 0; i < 4; ++i) {
    step_lr.step();
  }
  // LibTorch's StepLR decays one step later than Python's: once in four steps of size 2.
  EXPECT_DOUBLE_EQ(sgd.param_groups()[0].options().get_lr(), 0.05);
  steadystep::FusedAdam adam(params, steadystep::FusedAdamOptions(0.01));
  torch::optim::ReduceLROnPlateauScheduler plateau(
      adam, torch::optim::ReduceLROnPlateauScheduler::min, 0.5, /*patience=*/0);
  plateau.step(1.0f);
  plateau.step(2.0f);
  EXPECT_DOUBLE_EQ(adam.param_groups()[0].options().get_lr(), 0.005);
}

// LibTorch checks lr >= 0 in the constructors only; a scheduler (or the user) may take it below
// zero later, and the step then ascends the gradient. Ours steps the same.
TEST(FusedOptimizers, AnLrTakenBelowZeroLaterStepsLikeLibTorch) {
  auto fused_params = fresh_params();
  auto torch_params = fresh_params();
  steadystep::FusedSGD fused(fused_params, steadystep::FusedSGDOptions(0.1).momentum(0.9));
  torch::optim::SGD reference(torch_params, torch::optim::SGDOptions(0.1).momentum(0.9));
  run(fused, fused_params, 0, 3);
  run(reference, torch_params, 0, 3);
  fused.param_groups()[0].options().set_lr(-0.05);
  reference.param_groups()[0].options().set_lr(-0.05);
  run(fused, fused_params, 3, 6);
  run(reference, torch_params, 3, 6);
  for (size_t k = 0; k < fused_params.size(); ++k) {
    expect_close(fused_params[k].detach(), torch_params[k].detach(), "param " + std::to_string(k));
  }
  EXPECT_THROW(steadystep::FusedSGD(fresh_params(), steadystep::FusedSGDOptions(-0.1)),
               c10::ValueError);
}

// ---- Archives shared with LibTorch's optimizers (NOTE [Optimizer archives]) ----

namespace archives {

constexpr int kSaveAt = 7;
constexpr int kResumeTo = 20;

std::string save_to_string(const torch::optim::Optimizer& opt) {
  std::ostringstream out;
  torch::save(opt, out);
  return out.str();
}

void load_from_string(torch::optim::Optimizer& opt, const std::string& bytes) {
  std::istringstream in(bytes);
  torch::load(opt, in);
}

std::vector<torch::Tensor> copy_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    out.push_back(p.detach().clone().requires_grad_(true));
  }
  return out;
}

using Make = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>&)>;

// Trains `from` to kSaveAt, saves it, loads the archive into `to` over a copy of the params,
// and continues both to kResumeTo: they must stay within fp32 rounding of each other.
void expect_resume_continues(const std::string& name, const Make& from, const Make& to) {
  auto params = fresh_params();
  auto first = from(params);
  run(*first, params, 0, kSaveAt);
  const std::string bytes = save_to_string(*first);
  auto resumed_params = copy_of(params);
  auto second = to(resumed_params);
  ASSERT_NO_THROW(load_from_string(*second, bytes)) << name;
  run(*first, params, kSaveAt, kResumeTo);
  run(*second, resumed_params, kSaveAt, kResumeTo);
  for (size_t k = 0; k < params.size(); ++k) {
    expect_close(resumed_params[k].detach(), params[k].detach(),
                 name + " param " + std::to_string(k));
  }
}

template <typename Opt, typename Options>
Make make(Options o) {
  return [o](std::vector<torch::Tensor>& p) { return std::make_unique<Opt>(groups(p, o), o); };
}

TEST(FusedOptimizerArchives, LibTorchAdamAndAdamWLoadIntoFusedAdam) {
  using steadystep::FusedAdam;
  using steadystep::FusedAdamOptions;
  using torch::optim::Adam;
  using torch::optim::AdamOptions;
  using torch::optim::AdamW;
  using torch::optim::AdamWOptions;
  expect_resume_continues("Adam", make<Adam>(AdamOptions()), make<FusedAdam>(FusedAdamOptions()));
  expect_resume_continues(
      "Adam wd amsgrad",
      make<Adam>(AdamOptions().weight_decay(0.1).amsgrad(true).betas({0.8, 0.99})),
      make<FusedAdam>(FusedAdamOptions()));
  // LibTorch's archives do not say AdamW: the loading optimizer's decoupled_weight_decay stays.
  expect_resume_continues("AdamW", make<AdamW>(AdamWOptions().weight_decay(0.05)),
                          make<FusedAdam>(FusedAdamOptions().decoupled_weight_decay(true)));
}

TEST(FusedOptimizerArchives, FusedAdamLoadsIntoLibTorchAdamAndAdamW) {
  using steadystep::FusedAdam;
  using steadystep::FusedAdamOptions;
  using torch::optim::Adam;
  using torch::optim::AdamOptions;
  using torch::optim::AdamW;
  using torch::optim::AdamWOptions;
  expect_resume_continues("FusedAdam -> Adam",
                          make<FusedAdam>(FusedAdamOptions().weight_decay(0.1).amsgrad(true)),
                          make<Adam>(AdamOptions()));
  expect_resume_continues(
      "FusedAdam(decoupled) -> AdamW",
      make<FusedAdam>(FusedAdamOptions().weight_decay(0.05).decoupled_weight_decay(true)),
      make<AdamW>(AdamWOptions()));
}

TEST(FusedOptimizerArchives, LibTorchSGDLoadsIntoFusedSGDAndBack) {
  using steadystep::FusedSGD;
  using steadystep::FusedSGDOptions;
  using torch::optim::SGD;
  using torch::optim::SGDOptions;
  const std::vector<std::pair<SGDOptions, FusedSGDOptions>> configs = {
      {SGDOptions(0.1), FusedSGDOptions(0.1)},
      {SGDOptions(0.1).momentum(0.9).dampening(0.2).weight_decay(0.01), FusedSGDOptions(0.1)},
      {SGDOptions(0.1).momentum(0.5).nesterov(true), FusedSGDOptions(0.1)},
  };
  for (size_t i = 0; i < configs.size(); ++i) {
    const auto& [libtorch, fused] = configs[i];
    expect_resume_continues("SGD -> FusedSGD " + std::to_string(i), make<SGD>(libtorch),
                            make<FusedSGD>(fused));
    // The other way, with the fused optimizer set up as LibTorch's was.
    FusedSGDOptions same(libtorch.lr());
    same.momentum(libtorch.momentum())
        .dampening(libtorch.dampening())
        .weight_decay(libtorch.weight_decay())
        .nesterov(libtorch.nesterov());
    expect_resume_continues("FusedSGD -> SGD " + std::to_string(i), make<FusedSGD>(same),
                            make<SGD>(SGDOptions(1.0)));
  }
}

std::string load_error(torch::optim::Optimizer& opt, const std::string& bytes) {
  try {
    load_from_string(opt, bytes);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(FusedOptimizerArchives, AnotherOptimizersArchiveIsRefusedClearly) {
  auto params = fresh_params();
  torch::optim::SGD sgd(groups(params, torch::optim::SGDOptions(0.1).momentum(0.9)),
                        torch::optim::SGDOptions(0.1));
  run(sgd, params, 0, 2);
  steadystep::FusedAdam adam(groups(params, steadystep::FusedAdamOptions()));
  run(adam, params, 0, 2);
  const auto before = state_tensor(adam, params[0], "exp_avg").clone();
  const double lr_before = adam.param_groups()[1].options().get_lr();
  std::string error = load_error(adam, save_to_string(sgd));
  EXPECT_NE(error.find("FusedAdam::load"), std::string::npos) << error;
  EXPECT_NE(error.find("'betas'"), std::string::npos) << error;
  EXPECT_NE(error.find("momentum"), std::string::npos) << error;  // what the archive holds
  // Nothing changed.
  EXPECT_TRUE(torch::equal(state_tensor(adam, params[0], "exp_avg"), before));
  EXPECT_EQ(adam.param_groups()[1].options().get_lr(), lr_before);

  steadystep::FusedSGD fused_sgd(groups(params, steadystep::FusedSGDOptions(0.1)));
  error = load_error(fused_sgd, save_to_string(adam));
  EXPECT_NE(error.find("FusedSGD::load"), std::string::npos) << error;
  EXPECT_NE(error.find("'momentum'"), std::string::npos) << error;

  steadystep::FusedAdam one_group(params);
  error = load_error(one_group, save_to_string(adam));
  EXPECT_NE(error.find("the archive has 2 param groups, this optimizer 1"), std::string::npos)
      << error;
}

TEST(FusedOptimizerArchives, ClippingSettingsComeFromTheArchive) {
  const steadystep::FusedAdamOptions clipped =
      steadystep::FusedAdamOptions().max_grad_norm(0.5).norm_type(1.0);
  auto params = fresh_params();
  steadystep::FusedAdam first(groups(params, clipped), clipped);
  run(first, params, 0, kSaveAt);
  auto resumed_params = copy_of(params);
  steadystep::FusedAdam second(groups(resumed_params, steadystep::FusedAdamOptions()));
  load_from_string(second, save_to_string(first));
  const auto& wide = static_cast<const steadystep::FusedAdamOptions&>(second.defaults());
  EXPECT_EQ(wide.max_grad_norm(), std::optional<double>(0.5));
  EXPECT_EQ(wide.norm_type(), 1.0);
  run(first, params, kSaveAt, kResumeTo);
  run(second, resumed_params, kSaveAt, kResumeTo);
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_TRUE(torch::equal(resumed_params[k], params[k])) << k;
  }
}

TEST(FusedOptimizerArchives, EarlierSteadystepArchivesWithTensorStepsStillLoad) {
  // The layout earlier builds wrote: the same as today's, but each step an fp32 0-dim tensor.
  const steadystep::FusedAdamOptions o = steadystep::FusedAdamOptions().amsgrad(true);
  auto params = fresh_params();
  steadystep::FusedAdam first(groups(params, o), o);
  run(first, params, 0, kSaveAt);
  torch::serialize::OutputArchive archive;
  auto cu = archive.compilation_unit();
  archive.write("pytorch_version", c10::IValue("1.5.0"));
  torch::serialize::OutputArchive states(cu), param_groups(cu);
  param_groups.write("param_groups/size", torch::tensor(int64_t{2}));
  for (size_t g = 0; g < 2; ++g) {
    torch::serialize::OutputArchive group(cu), options(cu);
    const auto& group_params = first.param_groups()[g].params();
    group.write("params/size", torch::tensor(static_cast<int64_t>(group_params.size())));
    for (size_t j = 0; j < group_params.size(); ++j) {
      const std::string key = std::to_string(j + 10 * g);
      group.write("params/" + std::to_string(j), c10::IValue(key));
      const auto& s = static_cast<const steadystep::FusedAdamParamState&>(
          *first.state().at(group_params[j].unsafeGetTensorImpl()));
      torch::serialize::OutputArchive state(cu);
      state.write("step", c10::IValue(s.step()));
      state.write("exp_avg", c10::IValue(s.exp_avg()));
      state.write("exp_avg_sq", c10::IValue(s.exp_avg_sq()));
      state.write("max_exp_avg_sq", c10::IValue(s.max_exp_avg_sq()));
      states.write(key, state);
    }
    first.param_groups()[g].options().serialize(options);
    group.write("options", options);
    param_groups.write("param_groups/" + std::to_string(g), group);
  }
  archive.write("state", states);
  archive.write("param_groups", param_groups);
  std::ostringstream bytes;
  archive.save_to(bytes);

  auto resumed_params = copy_of(params);
  steadystep::FusedAdam second(groups(resumed_params, o), o);
  load_from_string(second, bytes.str());
  run(first, params, kSaveAt, kResumeTo);
  run(second, resumed_params, kSaveAt, kResumeTo);
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_TRUE(torch::equal(resumed_params[k], params[k])) << k;
  }
}

TEST(FusedOptimizerArchives, SkippedStepsSurviveAResume) {
  auto params = fresh_params();
  steadystep::FusedSGD first(groups(params, steadystep::FusedSGDOptions(0.1).momentum(0.9)));
  run(first, params, 0, 3);
  for (size_t k = 0; k < params.size(); ++k) {
    params[k].mutable_grad() = grad(static_cast<int>(k), 3);
  }
  params[0].mutable_grad()[0][0] = std::nan("");
  first.step();
  ASSERT_EQ(first.skipped_steps().item<int64_t>(), 1);
  steadystep::FusedSGD second(groups(copy_of(params), steadystep::FusedSGDOptions(0.1)));
  load_from_string(second, save_to_string(first));
  EXPECT_EQ(second.skipped_steps().item<int64_t>(), 1);
  // LibTorch's archives hold no count: a resume from one starts at zero.
  torch::optim::SGD libtorch(groups(params, torch::optim::SGDOptions(0.1)),
                             torch::optim::SGDOptions(0.1));
  load_from_string(second, save_to_string(libtorch));
  EXPECT_EQ(second.skipped_steps().item<int64_t>(), 0);
}

}  // namespace archives

// ---- Clipping settings are optimizer-wide: a group that differs is refused ----

template <typename Fn>
std::string value_error(Fn fn) {
  try {
    fn();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::unique_ptr<torch::optim::OptimizerOptions> own(const torch::optim::OptimizerOptions& o) {
  return o.clone();
}

TEST(FusedOptimizerGroups, DifferentClippingInAGroupIsRefused) {
  using steadystep::FusedAdam;
  using steadystep::FusedAdamOptions;
  using steadystep::FusedSGD;
  using steadystep::FusedSGDOptions;
  auto params = fresh_params();
  std::vector<torch::optim::OptimizerParamGroup> adam_groups;
  adam_groups.emplace_back(std::vector<torch::Tensor>{params[0]},
                           own(FusedAdamOptions().max_grad_norm(1.0)));
  adam_groups.emplace_back(std::vector<torch::Tensor>{params[1]},
                           own(FusedAdamOptions().max_grad_norm(2.0)));
  std::string error =
      value_error([&] { FusedAdam(adam_groups, FusedAdamOptions().max_grad_norm(1.0)); });
  EXPECT_NE(error.find("FusedAdam: param group 1 sets max_grad_norm 2 where the optimizer's is 1"),
            std::string::npos)
      << error;

  std::vector<torch::optim::OptimizerParamGroup> sgd_groups;
  sgd_groups.emplace_back(std::vector<torch::Tensor>{params[0]},
                          own(FusedSGDOptions(0.1).skip_nonfinite(false)));
  error = value_error([&] { FusedSGD(sgd_groups, FusedSGDOptions(0.1)); });
  EXPECT_NE(error.find("param group 0 sets skip_nonfinite false"), std::string::npos) << error;

  // A group added or changed later is refused at the step, before anything changes.
  FusedSGD sgd(std::vector<torch::Tensor>{params[0]}, FusedSGDOptions(0.1).max_grad_norm(1.0));
  sgd.add_param_group(torch::optim::OptimizerParamGroup(
      {params[1]}, own(FusedSGDOptions(0.1).max_grad_norm(1.0).norm_type(1.0))));
  const auto before = params[0].detach().clone();
  params[0].mutable_grad() = grad(0, 0);
  params[1].mutable_grad() = grad(1, 0);
  error = value_error([&] { sgd.step(); });
  EXPECT_NE(error.find("param group 1 sets norm_type 1 where the optimizer's is 2"),
            std::string::npos)
      << error;
  EXPECT_TRUE(torch::equal(params[0], before));

  FusedAdam adam(params, FusedAdamOptions());
  static_cast<FusedAdamOptions&>(adam.param_groups()[0].options()).max_grad_norm(3.0);
  error = value_error([&] { adam.step(); });
  EXPECT_NE(error.find("max_grad_norm 3 where the optimizer's is unset"), std::string::npos)
      << error;

  // The same settings in every group are fine.
  EXPECT_NO_THROW(FusedAdam(groups(params, FusedAdamOptions().max_grad_norm(1.0)),
                            FusedAdamOptions().max_grad_norm(1.0)));
}

// ---- FusedSGD initialises a missing momentum buffer from the gradient, as torch does ----

TEST(FusedSGDMomentum, SwitchedOnMidRunStartsFromTheGradient) {
  for (const bool skip_first : {false, true}) {
    auto fused_params = fresh_params();
    auto torch_params = fresh_params();
    steadystep::FusedSGD fused(groups(fused_params, steadystep::FusedSGDOptions(0.1)));
    torch::optim::SGD reference(groups(torch_params, torch::optim::SGDOptions(0.1)),
                                torch::optim::SGDOptions(0.1));
    run(fused, fused_params, 0, 5);
    run(reference, torch_params, 0, 5);
    for (auto* opt : std::vector<torch::optim::Optimizer*>{&fused, &reference}) {
      for (auto& group : opt->param_groups()) {
        if (auto* o = dynamic_cast<steadystep::FusedSGDOptions*>(&group.options())) {
          o->momentum(0.9).dampening(0.3);
        } else {
          static_cast<torch::optim::SGDOptions&>(group.options()).momentum(0.9).dampening(0.3);
        }
      }
    }
    if (skip_first) {  // the guard skips the first momentum step: the next one initialises
      for (size_t k = 0; k < fused_params.size(); ++k) {
        fused_params[k].mutable_grad() = grad(static_cast<int>(k), 5);
      }
      fused_params[1].mutable_grad()[0] = INFINITY;
      fused.step();
    }
    run(fused, fused_params, 5, 15);
    run(reference, torch_params, 5, 15);
    for (size_t k = 0; k < fused_params.size(); ++k) {
      expect_close(fused_params[k].detach(), torch_params[k].detach(),
                   "skip_first " + std::to_string(skip_first) + " param " + std::to_string(k));
      expect_close(state_tensor(fused, fused_params[k], "momentum_buffer"),
                   static_cast<torch::optim::SGDParamState&>(
                       *reference.state().at(torch_params[k].unsafeGetTensorImpl()))
                       .momentum_buffer(),
                   "buffer " + std::to_string(k));
    }
  }
}

}  // namespace
