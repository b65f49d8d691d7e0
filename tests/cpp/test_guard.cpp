// steadystep::ZScoreClip (C++) against a hand-written ZClip in plain doubles (the equations of
// zclip 1.0.0's ZClip, which tests/python/test_guard_zscore.py checks the same op against), on
// a deterministic norm sequence with spikes; and a resume from save/load.

#include <steadystep/guard.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

// zclip.ZClip.step on a given norm: returns the coefficient it applies to the gradients.
struct ReferenceZClip {
  steadystep::ZScoreClipOptions o;
  std::vector<double> buffer;
  bool initialized = false;
  double mean = 0, var = 0;
  bool spike = false;

  double step(double norm) {
    spike = false;
    if (!initialized) {
      buffer.push_back(norm);
      if (static_cast<int64_t>(buffer.size()) >= o.warmup_steps()) {
        double sum = 0;
        for (double x : buffer) sum += x;
        mean = sum / buffer.size();
        double sq = 0;
        for (double x : buffer) sq += (x - mean) * (x - mean);
        var = sq / buffer.size();
        initialized = true;
        buffer.clear();
      }
      if (!o.max_grad_norm()) return 1.0;
      // torch.nn.utils.clip_grad_norm_ in the norm's dtype (fp32 here).
      const float c =
          1.0f / (static_cast<float>(norm) + 1e-6f) * static_cast<float>(*o.max_grad_norm());
      return std::min(c, 1.0f);
    }
    const double sd = std::pow(var, 0.5);
    std::optional<double> clip;
    if (o.mode() == "percentile") {
      const double t = mean + o.z_thresh() * sd;
      if (norm > t) clip = t;
    } else {
      const double z = (norm - mean) / (sd + o.eps());
      if (z > o.z_thresh()) {
        clip = o.clip_option() == "mean"
                   ? mean
                   : (mean + (o.z_thresh() * sd) / (z / o.z_thresh())) * o.clip_factor();
      }
    }
    spike = clip.has_value();
    double to = clip.value_or(norm);
    if (o.max_grad_norm()) to = std::min(to, *o.max_grad_norm());
    const double coef = norm > to ? to / (norm + 1e-6) : 1.0;
    if (!(clip && o.skip_update_on_spike())) {
      const double u = clip.value_or(norm);
      mean = o.alpha() * mean + (1 - o.alpha()) * u;
      var = o.alpha() * var + (1 - o.alpha()) * (u - mean) * (u - mean);
    }
    return coef;
  }
};

// Norms around 2 that wander, spikes x1e3 at a few steps (one during warmup).
std::vector<float> norm_sequence(int steps) {
  std::vector<float> norms;
  for (int t = 0; t < steps; ++t) {
    double n = 2.0 * std::exp(0.3 * std::sin(0.7 * t) + 0.1 * std::cos(2.3 * t));
    if (t == 5 || t == 60 || t == 61 || t == 333 || t == 777) n *= 1e3;
    norms.push_back(static_cast<float>(n));
  }
  return norms;
}

std::vector<steadystep::ZScoreClipOptions> configs() {
  using O = steadystep::ZScoreClipOptions;
  return {
      O().max_grad_norm(std::nullopt),
      O().clip_option("mean").max_grad_norm(5.0),
      O().mode("percentile").max_grad_norm(std::nullopt),
      O().clip_factor(0.8).skip_update_on_spike(true).max_grad_norm(std::nullopt).warmup_steps(10),
      O().mode("percentile").skip_update_on_spike(true).max_grad_norm(3.0).z_thresh(2.0),
      O()};
}

TEST(ZScoreClip, MatchesReferenceZClip) {
  const auto norms = norm_sequence(1000);
  for (const auto& options : configs()) {
    steadystep::ZScoreClip clip(options);
    ReferenceZClip ref{options};
    int spikes = 0;
    for (size_t t = 0; t < norms.size(); ++t) {
      auto grad = torch::full({3}, 1.5f);
      const torch::Tensor norm = torch::tensor(norms[t]);
      const torch::Tensor out = clip.clip_grads_({grad}, norm);
      const double coef = ref.step(norms[t]);
      EXPECT_EQ(out.item<float>(), norms[t]);
      EXPECT_DOUBLE_EQ(clip.last_clip_coef().item<double>(), coef) << t;
      EXPECT_EQ(clip.last_spike().item<bool>(), ref.spike) << t;
      if (ref.initialized) {
        EXPECT_DOUBLE_EQ(clip.mean().item<double>(), ref.mean) << t;
        EXPECT_DOUBLE_EQ(clip.var().item<double>(), ref.var) << t;
      }
      // The grads times the coefficient read in fp32, as a Python float multiplier is read.
      EXPECT_EQ(grad[0].item<float>(), 1.5f * static_cast<float>(coef)) << t;
      spikes += ref.spike;
    }
    EXPECT_GE(spikes, 3);
    EXPECT_EQ(clip.step_count().item<double>(), 1000.0);
  }
}

TEST(ZScoreClip, ResumeFromArchiveEqualsUninterrupted) {
  const auto norms = norm_sequence(300);
  const auto options = steadystep::ZScoreClipOptions().warmup_steps(10).max_grad_norm(std::nullopt);
  steadystep::ZScoreClip whole(options), first(options);
  std::optional<steadystep::ZScoreClip> resumed;
  for (size_t t = 0; t < norms.size(); ++t) {
    const torch::Tensor n = torch::tensor(norms[t]);
    whole.clip_grads_({}, n);
    if (t == 150) {
      std::stringstream stream;
      torch::serialize::OutputArchive out;
      first.save(out);
      out.save_to(stream);
      first.clip_grads_({}, torch::tensor(1e6f));  // the original goes on elsewhere
      torch::serialize::InputArchive in;
      in.load_from(stream);
      resumed.emplace(options);
      resumed->load(in);
    }
    auto& clip = resumed ? *resumed : first;
    clip.clip_grads_({}, n);
    ASSERT_TRUE(torch::equal(clip.state(), whole.state())) << t;
  }
}

TEST(ZScoreClip, ClipTakesTheGradientNormOfParameters) {
  auto p = torch::zeros({4}, torch::requires_grad());
  p.mutable_grad() = torch::full({4}, 3.0);  // norm 6
  steadystep::ZScoreClip clip(steadystep::ZScoreClipOptions().warmup_steps(1));
  const torch::Tensor norm = clip.clip_({p});
  EXPECT_FLOAT_EQ(norm.item<float>(), 6.0f);
  EXPECT_FLOAT_EQ(p.grad().norm().item<float>(), 1.0f);  // warmup: clipped to max_grad_norm 1
  EXPECT_DOUBLE_EQ(clip.mean().item<double>(), 6.0);
}

TEST(ZScoreClip, RejectsUnknownModes) {
  EXPECT_THROW(steadystep::ZScoreClip(steadystep::ZScoreClipOptions().mode("median")),
               c10::ValueError);
  EXPECT_THROW(steadystep::ZScoreClip(steadystep::ZScoreClipOptions().clip_option("max")),
               c10::ValueError);
  EXPECT_NO_THROW(steadystep::ZScoreClip(steadystep::ZScoreClipOptions().mode("Percentile")));
}

}  // namespace
