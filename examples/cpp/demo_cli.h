#pragma once

// The command line and the verdict of examples/cpp/exploding_gradients, kept apart from the
// training code so that both are unit-tested (tests/cpp/test_demo_cli.cpp): plain C++, no torch.

#include <cstdint>
#include <string>
#include <vector>

namespace steadystep::demo {

/// Exit status of a command line the demo refuses (bad flag, bad value): the usage-error
/// convention of getopt-based tools.
constexpr int kUsageError = 2;

/// The demo's settings; the defaults are what `exploding_gradients` runs with no arguments.
struct Args {
  std::string device = "cpu";  ///< cpu or cuda
  int64_t steps = 600;         ///< training steps per configuration, in [kMinSteps, kMaxSteps]
  double lr = 0.02;            ///< peak learning rate, finite and > 0
  double max_grad_norm = 1.0;  ///< FusedAdam's global-norm clip, finite and > 0
  std::string out = "demo_out";
};

constexpr int64_t kMinSteps = 20;         // the warmup is steps / 6: at least a few steps
constexpr int64_t kMaxSteps = 1'000'000;  // the per-step log is kept in memory

/// What the command line asks for: run with `args`, print the usage (`--help`), or refuse it
/// with `error` (one line naming the flag and the value, no trailing newline).
struct ParseResult {
  enum class Action { kRun, kHelp, kError };
  Action action = Action::kRun;
  Args args;
  std::string error;
};

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`;
/// numbers must be whole tokens (`--steps 12abc` and `--lr nan` are errors, not 12 and nan).
/// Never throws, never exits.
ParseResult parse_args(const std::vector<std::string>& arguments);

/// The `--help` text.
std::string usage(const std::string& program);

/// How a training run ended, judged on the clean held-out loss before and after training.
enum class Verdict {
  kConverged,      ///< final loss below kConvergedFraction of the initial loss
  kStillTraining,  ///< finite, neither converged nor diverged: more steps may get there
  kDiverged,       ///< finite, but above kDivergedFactor times the initial loss
  kNonFinite,      ///< the final loss is inf or nan: the weights are ruined
};

constexpr double kConvergedFraction = 0.2;
constexpr double kDivergedFactor = 10.0;

/// The verdict of a run whose held-out loss went from `initial_loss` to `final_loss`. A run
/// whose initial loss is not a finite positive number is never called converged or diverged
/// (there is nothing to compare against) unless its final loss is non-finite.
Verdict judge(double initial_loss, double final_loss);

/// The verdict as the demo prints it: "converged", "still training", "DIVERGED",
/// "DIVERGED (weights are nan)" or "DIVERGED (loss is inf)" (`final_loss` picks the last two).
std::string verdict_text(Verdict verdict, double final_loss);

}  // namespace steadystep::demo
