#include "demo_cli.h"

#include <charconv>
#include <cmath>
#include <optional>
#include <sstream>
#include <system_error>

namespace steadystep::demo {

namespace {

// The whole token or nothing: from_chars stops at the first character it cannot use, and
// std::stoll/stod would accept "12abc" as 12 (and throw on "abc").
template <typename T>
std::optional<T> whole_number(const std::string& text) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || stop != end) {
    return std::nullopt;
  }
  return value;
}

std::string error_message(const std::string& flag, const std::string& value,
                          const std::string& want) {
  return flag + ": '" + value + "' is not " + want;
}

}  // namespace

ParseResult parse_args(const std::vector<std::string>& arguments) {
  ParseResult result;
  auto fail = [&result](std::string message) {
    result.action = ParseResult::Action::kError;
    result.error = std::move(message);
    return result;
  };
  for (size_t i = 0; i < arguments.size(); ++i) {
    std::string flag = arguments[i];
    std::optional<std::string> inline_value;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag.resize(eq);
    }
    if (flag == "--help" || flag == "-h") {
      result.action = ParseResult::Action::kHelp;
      return result;
    }
    const bool known = flag == "--device" || flag == "--steps" || flag == "--lr" ||
                       flag == "--max-grad-norm" || flag == "--out";
    if (!known) {
      return fail("unknown argument '" + arguments[i] + "' (see --help)");
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < arguments.size()) {
      value = arguments[++i];
    } else {
      return fail(flag + " needs a value");
    }
    Args& a = result.args;
    if (flag == "--device") {
      if (value != "cpu" && value != "cuda") {
        return fail(error_message(flag, value, "cpu or cuda"));
      }
      a.device = value;
    } else if (flag == "--steps") {
      const auto steps = whole_number<int64_t>(value);
      if (!steps || *steps < kMinSteps || *steps > kMaxSteps) {
        return fail(error_message(flag, value,
                                  "a whole number from " + std::to_string(kMinSteps) + " to " +
                                      std::to_string(kMaxSteps)));
      }
      a.steps = *steps;
    } else if (flag == "--lr" || flag == "--max-grad-norm") {
      const auto number = whole_number<double>(value);
      if (!number || !std::isfinite(*number) || *number <= 0) {
        return fail(error_message(flag, value, "a finite number > 0"));
      }
      (flag == "--lr" ? a.lr : a.max_grad_norm) = *number;
    } else {
      if (value.empty()) {
        return fail(flag + " needs a directory");
      }
      a.out = value;
    }
  }
  return result;
}

std::string usage(const std::string& program) {
  std::ostringstream out;
  out << "usage: " << program
      << " [--device cpu|cuda] [--steps N] [--lr LR] [--max-grad-norm X] [--out DIR]\n\n"
         "Trains one exploding model three ways (plain Adam; Adam + WarmupCosineLR; steadystep\n"
         "FusedAdam with clipping + WarmupCosineLR), then, with the corrupted targets finite\n"
         "(x1000) instead of inf, four ways (FusedAdam + WarmupCosineLR with no clipping,\n"
         "max_grad_norm, guard ZScoreClip, max_grad_norm + guard SpikeSkip), and writes\n"
         "DIR/metrics.csv (a scenario column: inf or finite).\n\n"
         "  --device         cpu (default) or cuda\n"
         "  --steps          training steps per configuration, "
      << kMinSteps << " to " << kMaxSteps
      << " (default 600)\n"
         "  --lr             peak learning rate, > 0 (default 0.02)\n"
         "  --max-grad-norm  FusedAdam's global-norm clip, > 0 (default 1.0)\n"
         "  --out            output directory (default demo_out)\n\n"
         "Verdicts, from the clean held-out loss: converged below "
      << kConvergedFraction << "x the initial loss, DIVERGED when it ends non-finite or above "
      << kDivergedFactor
      << "x it, still training otherwise.\n"
         "Exit status: 0 after a run, 1 on a runtime error, "
      << kUsageError << " on a bad command line.\n";
  return out.str();
}

Verdict judge(double initial_loss, double final_loss) {
  if (!std::isfinite(final_loss)) {
    return Verdict::kNonFinite;
  }
  if (!std::isfinite(initial_loss) || !(initial_loss > 0)) {
    return Verdict::kStillTraining;
  }
  if (final_loss < kConvergedFraction * initial_loss) {
    return Verdict::kConverged;
  }
  if (final_loss > kDivergedFactor * initial_loss) {
    return Verdict::kDiverged;
  }
  return Verdict::kStillTraining;
}

std::string verdict_text(Verdict verdict, double final_loss) {
  switch (verdict) {
    case Verdict::kConverged:
      return "converged";
    case Verdict::kStillTraining:
      return "still training";
    case Verdict::kDiverged:
      return "DIVERGED";
    case Verdict::kNonFinite:
      return std::isnan(final_loss) ? "DIVERGED (weights are nan)" : "DIVERGED (loss is inf)";
  }
  return "?";
}

}  // namespace steadystep::demo
