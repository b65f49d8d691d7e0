// The gradient guard inside steadystep::FusedAdam (AdamW): a ZScoreClip guard equals the
// standalone ZScoreClip followed by the unguarded step, bitwise; a SpikeSkip guard leaves params
// and state bit-identical on the steps it skips (and the ZScoreClip beside it untouched), and the
// run equals an unguarded one that skips those steps by not stepping; a save/load mid-run
// resumes exactly. The problem is built from arange/sin (no RNG), with finite spikes x1e3.
// tests/python/test_optim_guard.py holds this optimizer against the Python one (guard_driver).

#include <steadystep/guard.h>
#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <set>
#include <sstream>
#include <vector>

namespace {

const std::vector<std::vector<int64_t>> kShapes = {{31, 17}, {64}, {5, 3, 7}};
const std::set<int64_t> kSpikes = {40, 41, 90, 150};

std::vector<torch::Tensor> initial_params() {
  std::vector<torch::Tensor> out;
  for (size_t k = 0; k < kShapes.size(); ++k) {
    int64_t n = 1;
    for (int64_t s : kShapes[k]) n *= s;
    out.push_back(
        (torch::sin(torch::arange(n, torch::kDouble) * 0.37 + static_cast<double>(k)) * 0.5)
            .to(torch::kFloat)
            .reshape(kShapes[k])
            .requires_grad_());
  }
  return out;
}

// Step t's gradients: smooth, a norm around 2.5 that wanders by ~30%, x1e3 on a spike step.
std::vector<torch::Tensor> grads_at(int64_t t) {
  std::vector<torch::Tensor> out;
  const double scale = 0.1 * (1.0 + 0.3 * std::sin(0.7 * static_cast<double>(t)));
  for (size_t k = 0; k < kShapes.size(); ++k) {
    int64_t n = 1;
    for (int64_t s : kShapes[k]) n *= s;
    torch::Tensor g =
        torch::sin(torch::arange(n, torch::kDouble) * 0.1 * static_cast<double>(k + 1) +
                   0.37 * static_cast<double>(t)) *
        scale;
    if (kSpikes.count(t) != 0 && static_cast<int64_t>(k) == t % 3) {
      g = g * 1e3;
    }
    out.push_back(g.to(torch::kFloat).reshape(kShapes[k]));
  }
  return out;
}

void set_grads(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads) {
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = grads[i].clone();
  }
}

steadystep::FusedAdamOptions adamw() {
  return steadystep::FusedAdamOptions(1e-2).weight_decay(1e-2).decoupled_weight_decay(true);
}

std::shared_ptr<steadystep::ZScoreClip> zscore() {
  return std::make_shared<steadystep::ZScoreClip>(
      steadystep::ZScoreClipOptions().warmup_steps(10).max_grad_norm(std::nullopt));
}

std::vector<torch::Tensor> adam_state(const steadystep::FusedAdam& opt,
                                      const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    const auto& s = static_cast<const steadystep::FusedAdamParamState&>(
        *opt.state().at(p.unsafeGetTensorImpl()));
    out.push_back(s.step().clone());
    out.push_back(s.exp_avg().clone());
    out.push_back(s.exp_avg_sq().clone());
  }
  return out;
}

void expect_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                  int64_t t) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "step " << t << ", tensor " << i;
  }
}

std::vector<torch::Tensor> values(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().clone());
  return out;
}

TEST(OptimGuard, ZScoreGuardEqualsStandaloneClipThenStep) {
  auto params = initial_params();
  auto other = initial_params();
  auto guard = zscore();
  auto alone = zscore();
  steadystep::FusedAdam opt(params, adamw().guard({guard}));
  steadystep::FusedAdam plain(other, adamw().skip_nonfinite(false));
  int64_t clipped = 0;
  for (int64_t t = 0; t < 200; ++t) {
    set_grads(params, grads_at(t));
    set_grads(other, grads_at(t));
    opt.step();
    std::vector<torch::Tensor> grads;
    for (const auto& p : other) grads.push_back(p.grad());
    alone->clip_grads_(grads);
    plain.step();
    EXPECT_TRUE(torch::equal(guard->state(), alone->state())) << t;
    expect_equal(values(params), values(other), t);
    EXPECT_FALSE(opt.last_skipped().item<bool>()) << t;
    const double coef = opt.last_clip_coef().item<double>();
    EXPECT_FLOAT_EQ(coef, static_cast<float>(guard->last_clip_coef().item<double>())) << t;
    if (kSpikes.count(t) != 0) {
      EXPECT_TRUE(guard->last_spike().item<bool>()) << t;
      EXPECT_LT(coef, 0.01) << t;  // a x1e3 spike is clipped back near the EMA mean
    }
    clipped += coef < 1.0;
  }
  EXPECT_GE(clipped, static_cast<int64_t>(kSpikes.size()));
  EXPECT_EQ(opt.skipped_steps().item<int64_t>(), 0);
}

TEST(OptimGuard, SpikeSkipLeavesParamsAndStateBitIdentical) {
  auto params = initial_params();
  auto skip = std::make_shared<steadystep::SpikeSkip>(steadystep::SpikeSkipOptions()
                                                          .max_norm(100.0)
                                                          .z_thresh(std::nullopt)
                                                          .window(8)
                                                          .warmup_steps(4));
  auto clip = zscore();
  steadystep::FusedAdam opt(params, adamw().guard({skip, clip}));
  // The same run without a guard that does not step where the guard skips: bitwise equal.
  auto other = initial_params();
  steadystep::FusedAdam plain(other, adamw());
  auto alone = zscore();
  int64_t skips = 0;
  for (int64_t t = 0; t < 200; ++t) {
    set_grads(params, grads_at(t));
    set_grads(other, grads_at(t));
    const auto before = values(params);
    const auto state_before = t > 0 ? adam_state(opt, params) : std::vector<torch::Tensor>{};
    const auto clip_before = t > 0 ? clip->state().clone() : torch::Tensor();
    opt.step();
    const bool spike = kSpikes.count(t) != 0;
    ASSERT_EQ(opt.last_skipped().item<bool>(), spike) << t;
    EXPECT_EQ(skip->last_skipped().item<bool>(), spike) << t;
    if (spike) {
      ++skips;
      expect_equal(values(params), before, t);
      expect_equal(adam_state(opt, params), state_before, t);
      EXPECT_TRUE(torch::equal(clip->state(), clip_before)) << t;
    } else {
      std::vector<torch::Tensor> grads;
      for (const auto& p : other) grads.push_back(p.grad());
      alone->clip_grads_(grads);
      plain.step();
    }
    EXPECT_EQ(opt.skipped_steps().item<int64_t>(), skips) << t;
    expect_equal(values(params), values(other), t);
  }
  expect_equal(adam_state(opt, params), adam_state(plain, other), 200);
  EXPECT_TRUE(torch::equal(clip->state(), alone->state()));
  EXPECT_EQ(skip->step_count().item<double>(), 200.0);  // skipped norms enter its window too
  EXPECT_EQ(clip->step_count().item<double>(), 200.0 - static_cast<double>(kSpikes.size()));
}

TEST(OptimGuard, SaveLoadResumeEqualsUninterrupted) {
  const auto make_guard = [] {
    return std::vector<std::shared_ptr<steadystep::GradientGuard>>{
        std::make_shared<steadystep::SpikeSkip>(
            steadystep::SpikeSkipOptions().max_norm(100.0).z_thresh(3.0).window(16).warmup_steps(
                8)),
        zscore()};
  };
  auto whole_params = initial_params();
  auto whole_guard = make_guard();
  steadystep::FusedAdam whole(whole_params, adamw().guard(whole_guard));
  auto params = initial_params();
  auto guard = make_guard();
  auto opt = std::make_unique<steadystep::FusedAdam>(params, adamw().guard(guard));
  for (int64_t t = 0; t < 200; ++t) {
    if (t == 100) {
      std::stringstream stream;
      torch::save(*opt, stream);
      auto saved_params = values(params);
      // The original goes on with other gradients: the archive must hold a copy.
      set_grads(params, grads_at(t + 7));
      opt->step();
      params.clear();
      for (const auto& p : saved_params) params.push_back(p.clone().requires_grad_());
      guard = make_guard();
      opt = std::make_unique<steadystep::FusedAdam>(params, adamw().guard(guard));
      torch::load(*opt, stream);
    }
    set_grads(whole_params, grads_at(t));
    set_grads(params, grads_at(t));
    whole.step();
    opt->step();
    EXPECT_TRUE(torch::equal(opt->last_grad_norm(), whole.last_grad_norm())) << t;
    EXPECT_TRUE(torch::equal(opt->last_clip_coef(), whole.last_clip_coef())) << t;
    EXPECT_TRUE(torch::equal(opt->last_skipped(), whole.last_skipped())) << t;
    for (size_t i = 0; i < guard.size(); ++i) {
      EXPECT_TRUE(torch::equal(guard[i]->state(), whole_guard[i]->state())) << t << " policy " << i;
    }
  }
  expect_equal(values(params), values(whole_params), 200);
  expect_equal(adam_state(*opt, params), adam_state(whole, whole_params), 200);
  EXPECT_EQ(opt->skipped_steps().item<int64_t>(), whole.skipped_steps().item<int64_t>());
  EXPECT_GE(whole.skipped_steps().item<int64_t>(), 2);  // the spikes at 150 (and 90)
}

}  // namespace
