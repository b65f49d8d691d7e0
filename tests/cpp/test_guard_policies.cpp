// steadystep::PercentileClip (C++) against AutoClip's rule computed here with at::quantile on a
// plain history (as autoclip 0.2.1's QuantileClip does, which tests/python/test_guard_percentile.py
// checks the same op against), and steadystep::SpikeSkip in a FusedSGD against a plain C++
// oracle of its rule (torch::std_mean over the window); resume from save/load.

#include <steadystep/guard.h>
#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

namespace {

// The norm sequence of tests/python/test_guard_percentile.py's cpp_test_norms (fp32).
std::vector<float> test_norms(int steps = 1000) {
  std::vector<float> norms;
  for (int t = 0; t < steps; ++t) {
    double n = 2.0 * std::exp(0.3 * std::sin(0.7 * t) + 0.1 * std::cos(2.3 * t));
    if (t == 5 || t == 60 || t == 61 || t == 333 || t == 777) {
      n *= 1e3;
    }
    norms.push_back(static_cast<float>(n));
  }
  return norms;
}

// autoclip's QuantileClip._clip_global on a given norm: the threshold and the coefficient.
struct ReferenceQuantileClip {
  double quantile;
  int64_t history_length;
  std::deque<float> history;
  float threshold = 0;
  float coef = 0;

  void step(float norm) {
    if (history.empty()) {
      threshold = std::numeric_limits<float>::infinity();
    } else {
      const auto h = torch::tensor(std::vector<float>(history.begin(), history.end()));
      threshold = at::quantile(h, quantile).item<float>();
    }
    // clip_grads_with_norm_: float(max_norm) / (norm + 1e-6) in fp32, clamped to 1.
    coef = std::min(1.0f / (norm + 1e-6f) * threshold, 1.0f);
    history.push_back(norm);
    if (static_cast<int64_t>(history.size()) > history_length) {
      history.pop_front();
    }
  }
};

struct Config {
  double quantile;
  int64_t history_length;
};

class PercentileClipTest : public ::testing::TestWithParam<Config> {};

TEST_P(PercentileClipTest, MatchesQuantileOfHistory) {
  const Config c = GetParam();
  steadystep::PercentileClip clip(
      steadystep::PercentileClipOptions().quantile(c.quantile).history_length(c.history_length));
  ReferenceQuantileClip ref{c.quantile, c.history_length};
  int clipped = 0;
  for (const float n : test_norms()) {
    torch::Tensor grad = torch::full({4}, 1.5f);
    const torch::Tensor norm = clip.clip_grads_({grad}, torch::tensor(n));
    ref.step(n);
    ASSERT_EQ(norm.item<float>(), n);
    ASSERT_EQ(clip.last_norm().item<double>(), static_cast<double>(n));
    ASSERT_EQ(clip.last_threshold().item<double>(), static_cast<double>(ref.threshold));
    ASSERT_EQ(clip.last_clip_coef().item<double>(), static_cast<double>(ref.coef));
    ASSERT_TRUE(torch::equal(grad, torch::full({4}, 1.5f * ref.coef)));
    clipped += ref.coef < 1.0f;
  }
  EXPECT_EQ(clip.step_count().item<double>(), 1000.0);
  EXPECT_GT(clipped, 0);
}

INSTANTIATE_TEST_SUITE_P(Configs, PercentileClipTest,
                         ::testing::Values(Config{0.9, 1000}, Config{0.5, 50}, Config{0.1, 7},
                                           Config{1.0, 1}, Config{0.0, 20}));

TEST(PercentileClip, ResumeEqualsUninterrupted) {
  const auto options = steadystep::PercentileClipOptions().quantile(0.3).history_length(17);
  steadystep::PercentileClip whole(options);
  steadystep::PercentileClip first(options);
  std::optional<steadystep::PercentileClip> resumed;
  const auto norms = test_norms(300);
  for (size_t t = 0; t < norms.size(); ++t) {
    torch::Tensor g_whole = torch::full({3}, 0.25f);
    torch::Tensor g = g_whole.clone();
    whole.clip_grads_({g_whole}, torch::tensor(norms[t]));
    if (t == 150) {
      std::stringstream buffer;
      torch::serialize::OutputArchive out;
      first.save(out);
      out.save_to(buffer);
      torch::serialize::InputArchive in;
      in.load_from(buffer);
      resumed.emplace(options);
      resumed->load(in);
    }
    steadystep::PercentileClip& clip = t < 150 ? first : *resumed;
    clip.clip_grads_({g}, torch::tensor(norms[t]));
    ASSERT_TRUE(torch::equal(g, g_whole)) << t;
    ASSERT_TRUE(torch::equal(clip.state(), whole.state())) << t;
  }
  // A history of another length is refused.
  std::stringstream buffer;
  torch::serialize::OutputArchive out;
  whole.save(out);
  out.save_to(buffer);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  steadystep::PercentileClip other(steadystep::PercentileClipOptions().history_length(18));
  EXPECT_THROW(other.load(in), c10::ValueError);
}

TEST(PercentileClip, OptionsCheckedAsAutoClip) {
  EXPECT_THROW(steadystep::PercentileClip(steadystep::PercentileClipOptions().quantile(1.5)),
               c10::ValueError);
  EXPECT_THROW(steadystep::PercentileClip(steadystep::PercentileClipOptions().quantile(-0.1)),
               c10::ValueError);
  EXPECT_THROW(steadystep::PercentileClip(steadystep::PercentileClipOptions().history_length(0)),
               c10::ValueError);
  try {
    steadystep::PercentileClip(steadystep::PercentileClipOptions().history_length(0));
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("QuantileClip history length must be greater than zero."),
              std::string::npos);
  }
}

// SpikeSkip's rule on a given norm, with torch::std_mean (correction 1) over the window.
struct ReferenceSpikeSkip {
  steadystep::SpikeSkipOptions o;
  std::deque<double> window;

  bool step(double norm) {
    bool skip = o.max_norm().has_value() && norm > *o.max_norm();
    if (o.z_thresh().has_value() && static_cast<int64_t>(window.size()) >= o.warmup_steps()) {
      const auto [sd, mean] = torch::std_mean(
          torch::tensor(std::vector<double>(window.begin(), window.end()), torch::kDouble));
      skip = skip || norm - mean.item<double>() > *o.z_thresh() * sd.item<double>();
    }
    window.push_back(norm);
    if (static_cast<int64_t>(window.size()) > o.window()) {
      window.pop_front();
    }
    return skip;
  }
};

class SpikeSkipTest : public ::testing::TestWithParam<steadystep::SpikeSkipOptions> {};

TEST_P(SpikeSkipTest, SkipsAsTheRuleInAFusedStep) {
  const steadystep::SpikeSkipOptions options = GetParam();
  auto skip = std::make_shared<steadystep::SpikeSkip>(options);
  torch::Tensor param = torch::zeros({1});
  steadystep::FusedSGD opt({param}, steadystep::FusedSGDOptions(0.5).guard({skip}));
  ReferenceSpikeSkip ref{options};
  std::vector<bool> skips;
  const auto norms = test_norms();
  for (size_t t = 0; t < norms.size(); ++t) {
    // A lasting shift after step 500: the norm doubles for good.
    const float n = t >= 500 ? 2.0f * norms[t] : norms[t];
    param.mutable_grad() = torch::full({1}, n);
    const torch::Tensor before = param.detach().clone();
    opt.step();
    const bool want = ref.step(static_cast<double>(n));
    ASSERT_EQ(opt.last_skipped().item<bool>(), want) << t;
    ASSERT_EQ(skip->last_skipped().item<bool>(), want) << t;
    ASSERT_EQ(torch::equal(param.detach(), before), want) << t;
    skips.push_back(want);
  }
  const int64_t skipped = std::count(skips.begin(), skips.end(), true);
  EXPECT_EQ(opt.skipped_steps().item<int64_t>(), skipped);
  EXPECT_EQ(skip->step_count().item<double>(), 1000.0);
  // The injected spikes (x1e3) once a rule applies: max_norm from the first step, the z-score
  // once the window holds warmup_steps norms.
  for (const int64_t t : {5, 60, 61, 333, 777}) {
    if (options.max_norm().has_value() || t >= options.warmup_steps()) {
      EXPECT_TRUE(skips[t]) << t;
    }
  }
  // No stall: the doubled norm from step 500 on becomes the window's normal.
  const int64_t after = std::count(skips.begin() + 500 + options.window(), skips.end(), true);
  EXPECT_LT(after, (500 - options.window()) / 4);
}

INSTANTIATE_TEST_SUITE_P(
    Options, SpikeSkipTest,
    ::testing::Values(
        steadystep::SpikeSkipOptions(),
        steadystep::SpikeSkipOptions().z_thresh(3.0).window(16).warmup_steps(4),
        steadystep::SpikeSkipOptions().z_thresh(std::nullopt).max_norm(100.0),
        steadystep::SpikeSkipOptions().max_norm(1e3).z_thresh(2.0).window(8).warmup_steps(8)));

TEST(SpikeSkip, OptionsChecked) {
  using O = steadystep::SpikeSkipOptions;
  EXPECT_THROW(steadystep::SpikeSkip(O().z_thresh(std::nullopt)), c10::ValueError);
  EXPECT_THROW(steadystep::SpikeSkip(O().window(1).warmup_steps(1)), c10::ValueError);
  EXPECT_THROW(steadystep::SpikeSkip(O().warmup_steps(1)), c10::ValueError);
  EXPECT_THROW(steadystep::SpikeSkip(O().window(8).warmup_steps(9)), c10::ValueError);
  EXPECT_NO_THROW(steadystep::SpikeSkip(O().window(2).warmup_steps(2)));
}

}  // namespace
