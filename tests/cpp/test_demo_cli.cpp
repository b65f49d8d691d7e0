// The demo's command line and verdict (examples/cpp/demo_cli.h): bad values are refused with a
// message instead of an abort, and the verdict says DIVERGED only for a run that did.
// tests/python/test_demo.py runs the binary itself with the same bad arguments.

#include "demo_cli.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

using steadystep::demo::Args;
using steadystep::demo::judge;
using steadystep::demo::parse_args;
using steadystep::demo::ParseResult;
using steadystep::demo::Verdict;
using steadystep::demo::verdict_text;

TEST(DemoCli, DefaultsWithoutArguments) {
  const ParseResult r = parse_args({});
  ASSERT_EQ(r.action, ParseResult::Action::kRun);
  const Args defaults;
  EXPECT_EQ(r.args.steps, defaults.steps);
  EXPECT_EQ(r.args.lr, defaults.lr);
  EXPECT_EQ(r.args.max_grad_norm, defaults.max_grad_norm);
  EXPECT_EQ(r.args.device, "cpu");
  EXPECT_EQ(r.args.out, "demo_out");
}

TEST(DemoCli, ReadsEveryFlagBothSpellings) {
  const ParseResult r = parse_args({"--steps", "20", "--lr=0.5", "--max-grad-norm", "1e-3",
                                    "--device=cuda", "--out", "somewhere"});
  ASSERT_EQ(r.action, ParseResult::Action::kRun) << r.error;
  EXPECT_EQ(r.args.steps, 20);
  EXPECT_EQ(r.args.lr, 0.5);
  EXPECT_EQ(r.args.max_grad_norm, 1e-3);
  EXPECT_EQ(r.args.device, "cuda");
  EXPECT_EQ(r.args.out, "somewhere");
}

TEST(DemoCli, HelpWinsOverEverythingBeforeIt) {
  EXPECT_EQ(parse_args({"--steps", "30", "--help"}).action, ParseResult::Action::kHelp);
  EXPECT_EQ(parse_args({"-h"}).action, ParseResult::Action::kHelp);
  const std::string text = steadystep::demo::usage("demo");
  EXPECT_NE(text.find("--steps"), std::string::npos);
  EXPECT_NE(text.find("--device"), std::string::npos);
  // Both scenarios and the guards of the finite one are named.
  EXPECT_NE(text.find("x1000"), std::string::npos);
  EXPECT_NE(text.find("ZScoreClip"), std::string::npos);
  EXPECT_NE(text.find("SpikeSkip"), std::string::npos);
}

TEST(DemoCli, BadValuesAreErrorsNamingFlagAndValue) {
  const std::vector<std::vector<std::string>> bad = {
      {"--lr", "nan"},
      {"--lr", "inf"},
      {"--lr", "-0.1"},
      {"--lr", "0"},
      {"--lr", "0.1x"},
      {"--lr", ""},
      {"--max-grad-norm", "nan"},
      {"--max-grad-norm", "0"},
      {"--max-grad-norm", "-inf"},
      {"--steps", "abc"},
      {"--steps", "12abc"},
      {"--steps", "2.5"},
      {"--steps", "19"},
      {"--steps", "99999999999999999999999"},
      {"--steps", "-40"},
      {"--device", "tpu"},
  };
  for (const auto& args : bad) {
    const ParseResult r = parse_args(args);
    EXPECT_EQ(r.action, ParseResult::Action::kError) << args[0] << " " << args[1];
    EXPECT_NE(r.error.find(args[0]), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("'" + args[1] + "'"), std::string::npos) << r.error;
  }
}

TEST(DemoCli, MissingValueAndUnknownFlag) {
  ParseResult r = parse_args({"--steps"});
  EXPECT_EQ(r.action, ParseResult::Action::kError);
  EXPECT_EQ(r.error, "--steps needs a value");
  r = parse_args({"--stpes", "30"});
  EXPECT_EQ(r.action, ParseResult::Action::kError);
  EXPECT_NE(r.error.find("'--stpes'"), std::string::npos) << r.error;
  r = parse_args({"30"});
  EXPECT_EQ(r.action, ParseResult::Action::kError);
  r = parse_args({"--out="});
  EXPECT_EQ(r.action, ParseResult::Action::kError);
}

TEST(DemoCliVerdict, FiniteFallingLossIsNotDiverged) {
  // The --steps 20 runs: the loss has fallen but not yet to a fifth of its start.
  EXPECT_EQ(judge(1.0, 0.8), Verdict::kStillTraining);
  EXPECT_EQ(judge(1.0, 0.6), Verdict::kStillTraining);
  EXPECT_EQ(verdict_text(judge(1.0, 0.6), 0.6), "still training");
  // Rising a little is not divergence either.
  EXPECT_EQ(judge(1.0, 1.5), Verdict::kStillTraining);
}

TEST(DemoCliVerdict, ConvergedBelowAFifth) {
  EXPECT_EQ(judge(1.0, 0.19), Verdict::kConverged);
  EXPECT_EQ(judge(1.0, 0.0), Verdict::kConverged);
  EXPECT_EQ(judge(2.0, 0.41), Verdict::kStillTraining);
  EXPECT_EQ(verdict_text(Verdict::kConverged, 0.1), "converged");
}

TEST(DemoCliVerdict, DivergedWhenNonFiniteOrFarAboveTheStart) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(judge(1.0, nan), Verdict::kNonFinite);
  EXPECT_EQ(judge(1.0, inf), Verdict::kNonFinite);
  EXPECT_EQ(verdict_text(judge(1.0, nan), nan), "DIVERGED (weights are nan)");
  EXPECT_EQ(verdict_text(judge(1.0, inf), inf), "DIVERGED (loss is inf)");
  EXPECT_EQ(judge(1.0, 10.5), Verdict::kDiverged);
  EXPECT_EQ(verdict_text(Verdict::kDiverged, 10.5), "DIVERGED");
}

TEST(DemoCliVerdict, NoBaselineNoRelativeVerdict) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(judge(nan, 0.1), Verdict::kStillTraining);
  EXPECT_EQ(judge(0.0, 5.0), Verdict::kStillTraining);
  EXPECT_EQ(judge(nan, nan), Verdict::kNonFinite);
}

}  // namespace
