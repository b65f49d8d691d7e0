// The C++ scheduler classes beyond parity (which tests/python/test_cpp_schedulers.py checks
// against torch): momentum cycling on LibTorch's optimizers, bad input, composition.

#include <steadystep/lr_scheduler.h>
#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>

namespace {

std::vector<torch::Tensor> params() {
  return {torch::zeros({3}, torch::requires_grad())};
}

TEST(CyclicLR, CyclesBeta1OfAdamWAndMomentumOfRMSprop) {
  torch::optim::AdamW adamw(params(), torch::optim::AdamWOptions(0.1).betas({0.5, 0.999}));
  steadystep::CyclicLR a(adamw, steadystep::CyclicLROptions({0.01}, {0.1}).step_size_up(4));
  auto beta1 = [&] {
    return std::get<0>(
        static_cast<torch::optim::AdamWOptions&>(adamw.param_groups()[0].options()).betas());
  };
  EXPECT_DOUBLE_EQ(beta1(), 0.9);  // max_momentum at the start, as in PyTorch
  for (int i = 0; i < 4; ++i) {
    a.step();
  }
  EXPECT_DOUBLE_EQ(beta1(), 0.8);  // base_momentum at the lr peak
  EXPECT_DOUBLE_EQ(
      std::get<1>(
          static_cast<torch::optim::AdamWOptions&>(adamw.param_groups()[0].options()).betas()),
      0.999);  // beta2 untouched

  torch::optim::RMSprop rms(params(), torch::optim::RMSpropOptions(0.1).momentum(0.5));
  steadystep::OneCycleLR o(rms, steadystep::OneCycleLROptions({0.1}).total_steps(100));
  EXPECT_DOUBLE_EQ(
      static_cast<torch::optim::RMSpropOptions&>(rms.param_groups()[0].options()).momentum(), 0.95);
}

TEST(CyclicLR, CyclesSteadystepOptimizers) {
  steadystep::FusedAdam adam(params(), steadystep::FusedAdamOptions(0.1).betas({0.5, 0.99}));
  steadystep::CyclicLR a(adam, steadystep::CyclicLROptions({0.01}, {0.1}).step_size_up(4));
  auto& adam_options = static_cast<steadystep::FusedAdamOptions&>(adam.param_groups()[0].options());
  EXPECT_DOUBLE_EQ(std::get<0>(adam_options.betas()), 0.9);
  for (int i = 0; i < 4; ++i) {
    a.step();
  }
  EXPECT_DOUBLE_EQ(std::get<0>(adam_options.betas()), 0.8);
  EXPECT_DOUBLE_EQ(std::get<1>(adam_options.betas()), 0.99);

  steadystep::FusedSGD sgd(params(), steadystep::FusedSGDOptions(0.1).momentum(0.5));
  steadystep::OneCycleLR o(sgd, steadystep::OneCycleLROptions({0.1}).total_steps(10));
  auto& sgd_options = static_cast<steadystep::FusedSGDOptions&>(sgd.param_groups()[0].options());
  EXPECT_DOUBLE_EQ(sgd_options.momentum(), 0.95);
  for (int i = 0; i < 2; ++i) {  // the warmup phase ends at step 0.3 * 10 - 1 = 2
    o.step();
  }
  EXPECT_DOUBLE_EQ(sgd_options.momentum(), 0.85);  // base_momentum at the end of the warmup
}

TEST(CyclicLR, OptimizerWithoutMomentumIsRejectedUntouched) {
  torch::optim::Adagrad adagrad(params(), torch::optim::AdagradOptions(0.3));
  try {
    steadystep::CyclicLR c(adagrad, steadystep::CyclicLROptions({0.01}, {0.1}));
    FAIL() << "accepted an optimizer without momentum";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("momentum"), std::string::npos);
  }
  EXPECT_EQ(adagrad.param_groups()[0].options().get_lr(), 0.3);
  steadystep::CyclicLR ok(adagrad,
                          steadystep::CyclicLROptions({0.01}, {0.1}).cycle_momentum(false));
  EXPECT_EQ(adagrad.param_groups()[0].options().get_lr(), 0.01);
}

TEST(LRScheduler, BadArgumentsNameThemselvesAndChangeNothing) {
  torch::optim::SGD sgd(params(), torch::optim::SGDOptions(0.5).momentum(0.9));
  auto expect_error = [&](auto make, const std::string& word) {
    try {
      make();
      FAIL() << "accepted: " << word;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
    EXPECT_EQ(sgd.param_groups()[0].options().get_lr(), 0.5);
  };
  expect_error([&] { steadystep::StepLR(sgd, 0); }, "step_size");
  expect_error([&] { steadystep::ConstantLR(sgd, 2.0); }, "factor");
  expect_error([&] { steadystep::WarmupCosineLR(sgd, 100, 10); }, "total_steps");
  expect_error([&] { steadystep::RandomLR(sgd, 0.1, 0.01); }, "min_lr");
  expect_error([&] { steadystep::OneCycleLR(sgd, steadystep::OneCycleLROptions({0.1})); },
               "total_steps");
  expect_error(
      [&] {
        steadystep::ReduceLROnPlateau(sgd, steadystep::ReduceLROnPlateauOptions().factor(1.5));
      },
      "factor");
  expect_error(
      [&] {
        auto a = std::make_shared<steadystep::ExponentialLR>(sgd, 0.9);
        sgd.param_groups()[0].options().set_lr(0.5);
        steadystep::SequentialLR(sgd, {a}, {10});
      },
      "milestones");
}

TEST(LRScheduler, DrivesALibTorchTrainingLoop) {
  torch::manual_seed(0);
  auto model = torch::nn::Linear(4, 1);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1));
  auto warmup = std::make_shared<steadystep::LinearLR>(sgd, 0.1, 1.0, 10);
  auto cosine = std::make_shared<steadystep::CosineAnnealingLR>(sgd, 90);
  steadystep::SequentialLR sched(sgd, {warmup, cosine}, {10});
  const auto x = torch::randn({64, 4});
  const auto y = x.sum(1, true);
  double first = 0, last = 0;
  for (int step = 0; step < 100; ++step) {
    sgd.zero_grad();
    auto loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    sgd.step();
    sched.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first * 0.1);
  EXPECT_NEAR(sched.get_last_lr()[0], 0.0, 1e-12);  // the cosine ends at eta_min = 0
}

// PyTorch's order: the bookkeeping of a step happens before a reduction fails on a param group
// added since construction (with one min_lr per group); one min_lr for all follows the groups.
TEST(ReduceLROnPlateau, ParamGroupAddedAfterConstruction) {
  torch::optim::SGD sgd(params(), torch::optim::SGDOptions(0.5));
  steadystep::ReduceLROnPlateau shared(
      sgd, steadystep::ReduceLROnPlateauOptions().patience(0).min_lr({1e-5}));
  // one min_lr for all: the added group is reduced too
  shared.step(1.0);
  sgd.add_param_group(
      torch::optim::OptimizerParamGroup(params(), std::make_unique<torch::optim::SGDOptions>(0.3)));
  shared.step(2.0);  // worse: reduce
  EXPECT_DOUBLE_EQ(sgd.param_groups()[0].options().get_lr(), 0.05);
  EXPECT_DOUBLE_EQ(sgd.param_groups()[1].options().get_lr(), 0.3 * 0.1);
  EXPECT_EQ(shared.last_epoch(), 2);

  // a min_lr per group: the reduction fails with PyTorch's message, after the bookkeeping
  torch::optim::SGD two(params(), torch::optim::SGDOptions(0.5));
  two.add_param_group(
      torch::optim::OptimizerParamGroup(params(), std::make_unique<torch::optim::SGDOptions>(0.4)));
  steadystep::ReduceLROnPlateau plateau(
      two, steadystep::ReduceLROnPlateauOptions().patience(0).min_lr({1e-5, 1e-4}));
  plateau.step(1.0);
  two.add_param_group(
      torch::optim::OptimizerParamGroup(params(), std::make_unique<torch::optim::SGDOptions>(0.3)));
  plateau.step(0.5);  // better: nothing to reduce, no error
  try {
    plateau.step(0.9);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace())
                  .find("The number of param groups in the `optimizer` (3) differs from when "
                        "`ReduceLROnPlateau` was initialized (2)"),
              std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_EQ(plateau.last_epoch(), 3);
  EXPECT_EQ(plateau.state().last_epoch, 3);
  EXPECT_DOUBLE_EQ(plateau.state().best, 0.5);
  EXPECT_EQ(plateau.state().num_bad_epochs, 1);
  EXPECT_DOUBLE_EQ(two.param_groups()[0].options().get_lr(), 0.5);  // nothing reduced
}

// SequentialLR restarts a BoundedLR at its milestone as it restarts any scheduler: the wrapped
// one restarts (closed form at epoch 0), then the lrs are clamped.
TEST(BoundedLR, RestartsInsideSequentialLR) {
  auto sequence = [](bool bounded) {
    torch::optim::SGD sgd(params(), torch::optim::SGDOptions(0.1));
    auto warmup = std::make_shared<steadystep::LinearLR>(sgd, 0.4, 1.0, 2);
    std::shared_ptr<steadystep::LRScheduler> decay =
        std::make_shared<steadystep::ExponentialLR>(sgd, 0.5);
    if (bounded) {
      decay = std::make_shared<steadystep::BoundedLR>(decay, 0.0, 1.0);
    }
    steadystep::SequentialLR sched(sgd, {warmup, decay}, {2});
    std::vector<double> lrs{sgd.param_groups()[0].options().get_lr()};
    for (int i = 0; i < 5; ++i) {
      sched.step();
      lrs.push_back(sgd.param_groups()[0].options().get_lr());
    }
    return lrs;
  };
  const auto plain = sequence(false);
  const std::vector<double> want{0.04, 0.07, 0.1, 0.05, 0.025, 0.0125};
  ASSERT_EQ(plain.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(plain[i], want[i], 1e-15) << i;
  }
  EXPECT_EQ(sequence(true), plain);
}

}  // namespace
