// CosineAnnealingLR from C++: the sequence against the closed-form definition, PyTorch's
// step-at-construction convention, step(epoch), checkpoints and bad input.

#include <steadystep/lr_scheduler.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

namespace {

constexpr double kPi = 3.141592653589793;

double closed_form(double base, double eta_min, int64_t T_max, int64_t t) {
  return eta_min + (base - eta_min) * (1 + std::cos(kPi * t / T_max)) / 2;
}

// Three param groups with different lrs, as the parity promise is per group.
struct Fixture {
  std::vector<torch::Tensor> params{torch::zeros({2}), torch::zeros({3}), torch::zeros({1})};
  std::unique_ptr<torch::optim::SGD> opt;
  Fixture() {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    const double lrs[] = {0.1, 0.03, 1.0};
    for (int i = 0; i < 3; ++i) {
      groups.emplace_back(std::vector<torch::Tensor>{params[i]},
                          std::make_unique<torch::optim::SGDOptions>(lrs[i]));
    }
    opt = std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.5));
  }
  double lr(int g) const { return opt->param_groups()[g].options().get_lr(); }
};

// The recursive form accumulates one rounding per step; over the first period (t <= T_max)
// it stays within a few hundred ulps of the closed form: 1e-10 relative covers T_max up to
// thousands of steps with a wide margin. Beyond T_max the recursion passes through
// eta_min, where a relative bound is meaningless, so the test stops at T_max.
TEST(CosineAnnealingLR, FollowsClosedFormOverFirstPeriod) {
  for (int64_t T_max : {1, 7, 100, 1000}) {
    for (double eta_min : {0.0, 1e-4}) {
      Fixture f;
      steadystep::CosineAnnealingLR sched(*f.opt, T_max, eta_min);
      const double bases[] = {0.1, 0.03, 1.0};
      for (int64_t t = 0; t <= T_max; ++t) {
        if (t > 0) {
          sched.step();
        }
        ASSERT_EQ(sched.last_epoch(), t);
        for (int g = 0; g < 3; ++g) {
          const double expected = closed_form(bases[g], eta_min, T_max, t);
          ASSERT_NEAR(f.lr(g), expected, 1e-10 * bases[g]) << "T_max=" << T_max << " t=" << t;
          ASSERT_EQ(sched.get_last_lr()[g], f.lr(g));
        }
      }
    }
  }
}

TEST(CosineAnnealingLR, ConstructionStepKeepsLrAndCountsLikePython) {
  Fixture f;
  steadystep::CosineAnnealingLR sched(*f.opt, 10);
  EXPECT_EQ(sched.last_epoch(), 0);
  EXPECT_EQ(f.lr(0), 0.1);
  EXPECT_EQ(sched.base_lrs(), (std::vector<double>{0.1, 0.03, 1.0}));
}

TEST(CosineAnnealingLR, StepsThroughLibTorchBase) {
  Fixture a, b;
  steadystep::CosineAnnealingLR sa(*a.opt, 20, 0.001);
  steadystep::CosineAnnealingLR sb(*b.opt, 20, 0.001);
  torch::optim::LRScheduler& base = sb;
  for (int i = 0; i < 35; ++i) {
    sa.step();
    base.step();
  }
  EXPECT_EQ(sa.last_epoch(), sb.last_epoch());
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(a.lr(g), b.lr(g));
  }
}

TEST(CosineAnnealingLR, StepWithEpochUsesClosedForm) {
  Fixture f;
  steadystep::CosineAnnealingLR sched(*f.opt, 10, 0.0);
  sched.step(int64_t{4});
  EXPECT_EQ(sched.last_epoch(), 4);
  EXPECT_DOUBLE_EQ(f.lr(0), closed_form(0.1, 0.0, 10, 4));
}

TEST(CosineAnnealingLR, SaveLoadResumesIdentically) {
  const std::string path = ::testing::TempDir() + "/steadystep_cosine.pt";
  Fixture full, first, resumed;
  steadystep::CosineAnnealingLR s_full(*full.opt, 13, 0.002);
  steadystep::CosineAnnealingLR s_first(*first.opt, 13, 0.002);
  for (int i = 0; i < 40; ++i) {
    s_full.step();
  }
  for (int i = 0; i < 17; ++i) {
    s_first.step();
  }
  torch::save(s_first, path);
  // A fresh optimizer whose lrs match the checkpointed run (optimizer state is saved apart).
  steadystep::CosineAnnealingLR s_resumed(*resumed.opt, 13, 0.002);
  torch::load(s_resumed, path);
  for (int g = 0; g < 3; ++g) {
    resumed.opt->param_groups()[g].options().set_lr(first.lr(g));
  }
  EXPECT_EQ(s_resumed.last_epoch(), 17);
  for (int i = 17; i < 40; ++i) {
    s_resumed.step();
  }
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(resumed.lr(g), full.lr(g));
  }
  std::remove(path.c_str());
}

TEST(CosineAnnealingLR, RejectsNonPositiveTMaxWithoutTouchingOptimizer) {
  Fixture f;
  for (int64_t bad : {0, -3}) {
    try {
      steadystep::CosineAnnealingLR sched(*f.opt, bad);
      FAIL() << "T_max=" << bad << " accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("T_max"), std::string::npos);
    }
  }
  EXPECT_EQ(f.lr(0), 0.1);
  EXPECT_EQ(f.lr(1), 0.03);
}

}  // namespace
