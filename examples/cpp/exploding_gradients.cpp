// steadystep's main demo: a training run whose gradients explode, and the same run kept stable.
//
// A deep, un-normalised ReLU MLP (initialised a little hot) regresses a synthetic target. Two
// of the 8192 training targets are corrupted (inf, as a broken sensor record would be): any
// batch that draws one has an infinite loss and exploding, non-finite gradients. The same
// model, data and seed train three ways:
//   1. torch::optim::Adam, constant lr                      -> the first bad batch poisons it
//   2. torch::optim::Adam + steadystep::WarmupCosineLR      -> warmup alone does not help
//   3. steadystep::FusedAdam (max_grad_norm, skip_nonfinite) + WarmupCosineLR
//                                                           -> bad steps skipped, converges
// Then the finite-spike scenario: the same two records are x1000 instead of inf, so the bad
// batches have a huge but finite loss and gradient (nothing non-finite to skip). Four ways, all
// steadystep::FusedAdam + WarmupCosineLR, same model, batches and seed:
//   4. no clipping; 5. max_grad_norm; 6. guard ZScoreClip (ZClip's defaults);
//   7. max_grad_norm and guard SpikeSkip (defaults: skip a norm 6 std above a 128-step window).
// Losses are judged on a clean held-out set; demo_cli.h defines the verdicts and the command line.
// It prints a progress line while training, a table per configuration, and writes the metrics
// of every step to <out>/metrics.csv (examples/python/plot_demo.py draws <out>/training.png).

#include "demo_cli.h"

#include <steadystep/steadystep.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

torch::nn::Sequential make_model(const torch::Device& device) {
  torch::manual_seed(0);
  torch::nn::Sequential model;
  int64_t in = 16;
  for (int layer = 0; layer < 8; ++layer) {
    torch::nn::Linear linear(in, 64);
    // 1.5 / sqrt(fan_in): slightly hotter than He init, no normalisation anywhere.
    torch::nn::init::normal_(linear->weight, 0.0, 1.5 / std::sqrt(static_cast<double>(in)));
    torch::nn::init::zeros_(linear->bias);
    model->push_back(linear);
    model->push_back(torch::nn::ReLU());
    in = 64;
  }
  model->push_back(torch::nn::Linear(in, 1));
  model->to(device);
  return model;
}

struct Step {
  double loss, lr, grad_norm;
  bool clipped, skipped;
};

struct Summary {
  std::string name;
  double final_loss, best_loss, max_grad_norm, seconds;
  int64_t clipped, skipped;
  std::string verdict;
};

enum class Scenario { kInf, kFinite };

// How a configuration trains; every steadystep one uses WarmupCosineLR.
enum class Setup { kAdam, kAdamCosine, kClip, kNoClip, kZScore, kClipSpikeSkip };

struct Config {
  const char* name;
  Scenario scenario;
  Setup setup;
};

constexpr Config kConfigs[] = {
    {"Adam, constant lr", Scenario::kInf, Setup::kAdam},
    {"Adam + WarmupCosineLR", Scenario::kInf, Setup::kAdamCosine},
    {"FusedAdam(max_grad_norm) + WarmupCosineLR", Scenario::kInf, Setup::kClip},
    {"spikes: FusedAdam, no clipping", Scenario::kFinite, Setup::kNoClip},
    {"spikes: FusedAdam(max_grad_norm)", Scenario::kFinite, Setup::kClip},
    {"spikes: FusedAdam(guard=ZScoreClip)", Scenario::kFinite, Setup::kZScore},
    {"spikes: FusedAdam(max_grad_norm, SpikeSkip)", Scenario::kFinite, Setup::kClipSpikeSkip},
};
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);

// The corrupted training records, and how much the finite scenario scales their targets.
constexpr int64_t kBadRecords[] = {1000, 7000};
constexpr double kSpikeScale = 1e3;

}  // namespace

static int run(const steadystep::demo::Args& args) {
  if (args.device == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "--device cuda: no CUDA device here\n");
    return 2;
  }
  const torch::Device device(args.device == "cuda" ? torch::kCUDA : torch::kCPU);
  std::filesystem::create_directories(args.out);

  torch::manual_seed(123);
  auto target = [](const torch::Tensor& x) {
    return torch::sin(x.narrow(1, 0, 4).sum(1, true)) + 0.1 * x.narrow(1, 4, 1);
  };
  const int64_t samples = 8192;
  const auto x = torch::randn({samples, 16});
  const auto y_clean = target(x);
  auto y_inf = y_clean.clone(), y_spike = y_clean.clone();
  for (int64_t bad : kBadRecords) {
    y_inf[bad][0] = std::numeric_limits<float>::infinity();  // corrupted records
    y_spike[bad][0] *= kSpikeScale;                          // the same, finite
  }
  const auto x_val = torch::randn({1024, 16}).to(device);
  const auto y_val = target(x_val.cpu()).to(device);
  const auto xd = x.to(device), y_inf_d = y_inf.to(device), y_spike_d = y_spike.to(device);
  const int64_t warmup = args.steps / 6;

  // The batches every configuration draws (the same generator and seed for all); a batch is
  // corrupted when it holds a bad record.
  std::vector<torch::Tensor> batch_idx;
  std::vector<bool> corrupted;
  {
    auto batches = torch::make_generator<torch::CPUGeneratorImpl>(7);
    for (int64_t step = 0; step < args.steps; ++step) {
      const auto idx = torch::randint(0, samples, {128}, batches, torch::kLong);
      bool bad = false;
      for (int64_t record : kBadRecords) {
        bad = bad || idx.eq(record).any().item<bool>();
      }
      corrupted.push_back(bad);
      batch_idx.push_back(idx.to(device));
    }
  }
  const auto corrupted_batches = std::count(corrupted.begin(), corrupted.end(), true);

  std::ofstream csv(args.out + "/metrics.csv");
  csv << "config,step,loss,lr,grad_norm,clipped,skipped,scenario,corrupted\n";
  std::vector<Summary> summaries;

  std::printf(
      "steadystep %s demo: 8-layer ReLU MLP without normalisation, lr %g, %lld steps, %s;\n"
      "2 of %lld training targets are inf (corrupted records), then x%g (finite spikes);\n"
      "%lld of %lld batches draw one\n\n",
      STEADYSTEP_VERSION, args.lr, static_cast<long long>(args.steps), args.device.c_str(),
      static_cast<long long>(samples), kSpikeScale, static_cast<long long>(corrupted_batches),
      static_cast<long long>(args.steps));
  for (int config = 0; config < kNumConfigs; ++config) {
    const Config& cfg = kConfigs[config];
    const bool finite = cfg.scenario == Scenario::kFinite;
    const auto& yd = finite ? y_spike_d : y_inf_d;
    auto model = make_model(device);
    std::unique_ptr<torch::optim::Optimizer> opt;
    steadystep::FusedAdam* fused = nullptr;
    if (cfg.setup == Setup::kAdam || cfg.setup == Setup::kAdamCosine) {
      opt = std::make_unique<torch::optim::Adam>(model->parameters(),
                                                 torch::optim::AdamOptions(args.lr));
    } else {
      auto options = steadystep::FusedAdamOptions(args.lr).skip_nonfinite(true);
      if (cfg.setup == Setup::kClip || cfg.setup == Setup::kClipSpikeSkip) {
        options.max_grad_norm(args.max_grad_norm);
      }
      if (cfg.setup == Setup::kZScore) {
        options.guard({std::make_shared<steadystep::ZScoreClip>()});
      } else if (cfg.setup == Setup::kClipSpikeSkip) {
        options.guard({std::make_shared<steadystep::SpikeSkip>()});
      }
      auto f = std::make_unique<steadystep::FusedAdam>(model->parameters(), options);
      fused = f.get();
      opt = std::move(f);
    }
    std::unique_ptr<steadystep::WarmupCosineLR> sched;
    if (cfg.setup != Setup::kAdam) {
      sched = std::make_unique<steadystep::WarmupCosineLR>(*opt, warmup, args.steps);
    }
    auto val_loss = [&] {
      torch::NoGradGuard no_grad;
      return torch::mse_loss(model->forward(x_val), y_val).item<double>();
    };
    const double initial_val_loss = val_loss();

    std::vector<Step> steps;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < args.steps; ++step) {
      const auto& idx = batch_idx[step];
      opt->zero_grad();
      auto loss = torch::mse_loss(model->forward(xd.index_select(0, idx)), yd.index_select(0, idx));
      loss.backward();
      const double lr = opt->param_groups()[0].options().get_lr();
      double grad_norm;
      bool skipped = false, clipped = false;
      if (fused != nullptr) {
        const int64_t before = fused->skipped_steps().item<int64_t>();
        opt->step();
        grad_norm = fused->last_grad_norm().item<double>();  // read for the log only
        skipped = fused->skipped_steps().item<int64_t>() > before;
        // The inf scenario counts as before (norm above max_grad_norm); the finite one takes
        // the step's own decision (ZScoreClip clips to its adaptive threshold).
        clipped =
            finite ? fused->last_clip_coef().item<double>() < 1.0 : grad_norm > args.max_grad_norm;
        if (finite && skipped != fused->last_skipped().item<bool>()) {
          throw std::runtime_error("the step's skipped decision disagrees with skipped_steps");
        }
      } else {
        std::vector<torch::Tensor> grads;
        for (const auto& p : model->parameters()) {
          grads.push_back(p.grad());
        }
        grad_norm = steadystep::get_total_norm(grads).item<double>();
        opt->step();
      }
      if (sched) {
        sched->step();
      }
      steps.push_back({loss.item<double>(), lr, grad_norm, clipped, skipped});
      if (step % 25 == 0 || step == args.steps - 1) {
        std::printf("\r[%d/%d] %-44s step %5lld/%lld  loss %11.4g  lr %.4f  |g| %10.4g", config + 1,
                    kNumConfigs, cfg.name, static_cast<long long>(step + 1),
                    static_cast<long long>(args.steps), steps.back().loss, lr, grad_norm);
        std::fflush(stdout);
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("\n");

    Summary s{cfg.name, val_loss(), std::numeric_limits<double>::infinity(), 0, seconds, 0, 0, ""};
    for (int64_t i = 0; i < args.steps; ++i) {
      const Step& st = steps[i];
      csv << config + 1 << ',' << i << ',' << st.loss << ',' << st.lr << ',' << st.grad_norm << ','
          << st.clipped << ',' << st.skipped << ',' << (finite ? "finite" : "inf") << ','
          << corrupted[i] << '\n';
      if (std::isfinite(st.loss)) {
        s.best_loss = std::min(s.best_loss, st.loss);
      }
      s.max_grad_norm =
          std::max(s.max_grad_norm, std::isfinite(st.grad_norm) ? st.grad_norm : INFINITY);
      s.clipped += st.clipped;
      s.skipped += st.skipped;
    }
    if (fused != nullptr && fused->skipped_steps().item<int64_t>() != s.skipped) {
      throw std::runtime_error("skipped_steps() disagrees with the steps the log saw skipped");
    }
    s.verdict = steadystep::demo::verdict_text(
        steadystep::demo::judge(initial_val_loss, s.final_loss), s.final_loss);
    std::printf(
        "  %-26s %g\n  %-26s %g\n  %-26s %g\n  %-26s %lld\n  %-26s %lld\n"
        "  %-26s %.2f s\n  %-26s %s\n\n",
        "held-out loss, final", s.final_loss, "training loss, best batch", s.best_loss,
        "max gradient norm", s.max_grad_norm, "steps clipped", static_cast<long long>(s.clipped),
        finite ? "steps skipped" : "steps skipped (non-finite)", static_cast<long long>(s.skipped),
        "wall time", s.seconds, "verdict", s.verdict.c_str());
    summaries.push_back(s);
  }

  std::printf("%-44s %12s %12s %14s %9s %9s %8s  %s\n", "configuration", "val loss", "best batch",
              "max |grad|", "clipped", "skipped", "time", "verdict");
  for (size_t i = 0; i < summaries.size(); ++i) {
    const Summary& s = summaries[i];
    if (i > 0 && kConfigs[i].scenario != kConfigs[i - 1].scenario) {
      std::printf("finite spikes (the 2 records x%g), all + WarmupCosineLR:\n", kSpikeScale);
    }
    std::printf("%-44s %12.4g %12.4g %14.4g %9lld %9lld %7.1fs  %s\n", s.name.c_str(), s.final_loss,
                s.best_loss, s.max_grad_norm, static_cast<long long>(s.clipped),
                static_cast<long long>(s.skipped), s.seconds, s.verdict.c_str());
  }
  std::printf("\nwrote %s/metrics.csv\n", args.out.c_str());
  return 0;
}

int main(int argc, char** argv) {
  namespace demo = steadystep::demo;
  const demo::ParseResult parsed =
      demo::parse_args(std::vector<std::string>(argv + 1, argv + argc));
  switch (parsed.action) {
    case demo::ParseResult::Action::kHelp:
      std::fputs(demo::usage(argv[0]).c_str(), stdout);
      return 0;
    case demo::ParseResult::Action::kError:
      std::fprintf(stderr, "%s: %s\n", argv[0], parsed.error.c_str());
      return demo::kUsageError;
    case demo::ParseResult::Action::kRun:
      break;
  }
  // What the arguments cannot catch (an unwritable --out, a CUDA failure) ends with a message
  // and status 1, never with an uncaught exception's abort.
  try {
    return run(parsed.args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", argv[0], e.what());
    return 1;
  }
}
