// Low precision inside steadystep::FusedAdam / FusedSGD (issue 14): fp32 master weights on
// bf16/fp16 params equal the fp32 run bitwise (and LibTorch's own AdamW/SGD on fp32 copies to
// fp32 rounding); bf16 optimizer state (state_dtype) against an fp32 oracle of one step, archive
// round trips and LibTorch's optimizers loading the archives; stochastic rounding (unbiased, same
// seed same run, resume equals uninterrupted); the refusals. The problem is built from
// arange/sin (no RNG) unless a test says otherwise. tests/python/test_optim_precision_cpp.py
// holds these optimizers against the Python ones (precision_driver).

#include <steadystep/optim.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

using steadystep::FusedAdam;
using steadystep::FusedAdamOptions;
using steadystep::FusedAdamParamState;
using steadystep::FusedSGD;
using steadystep::FusedSGDOptions;
using steadystep::FusedSGDParamState;

const std::vector<std::vector<int64_t>> kShapes = {{31, 17}, {64}, {5, 3, 7}};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// fp32 values that `dtype` holds exactly, so that the fp32 copies start where the low-precision
// params do.
std::vector<torch::Tensor> initial_params(torch::ScalarType dtype) {
  std::vector<torch::Tensor> out;
  for (size_t k = 0; k < kShapes.size(); ++k) {
    out.push_back((torch::sin(torch::arange(numel(kShapes[k]), torch::kDouble) * 0.37 +
                              static_cast<double>(k)) *
                   0.5)
                      .to(dtype)
                      .reshape(kShapes[k])
                      .requires_grad_());
  }
  return out;
}

std::vector<torch::Tensor> as(const std::vector<torch::Tensor>& params, torch::ScalarType dtype) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().to(dtype).requires_grad_());
  return out;
}

// Step t's gradients in `dtype`: smooth, a norm around 1.5 that wanders, so that a clip at 1.0
// bites on some steps and not on others.
std::vector<torch::Tensor> grads_at(int64_t t, torch::ScalarType dtype) {
  std::vector<torch::Tensor> out;
  const double scale = 0.05 * (1.0 + 0.5 * std::sin(0.3 * static_cast<double>(t)));
  for (size_t k = 0; k < kShapes.size(); ++k) {
    out.push_back((torch::sin(torch::arange(numel(kShapes[k]), torch::kDouble) * 0.1 *
                                  static_cast<double>(k + 1) +
                              0.37 * static_cast<double>(t)) *
                   scale)
                      .to(dtype)
                      .reshape(kShapes[k]));
  }
  return out;
}

// The gradients in the params' dtype, and the same values (exactly) in each param's dtype.
void set_grads(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads) {
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = grads[i].to(params[i].scalar_type()).clone();
  }
}

std::vector<torch::Tensor> values(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().clone());
  return out;
}

template <typename State>
const State& state_of(const torch::optim::Optimizer& opt, const torch::Tensor& p) {
  return static_cast<const State&>(*opt.state().at(p.unsafeGetTensorImpl()));
}

// exp_avg, exp_avg_sq (max_exp_avg_sq when defined), copies.
std::vector<torch::Tensor> adam_state(const torch::optim::Optimizer& opt,
                                      const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    const auto& s = state_of<FusedAdamParamState>(opt, p);
    out.push_back(s.exp_avg().clone());
    out.push_back(s.exp_avg_sq().clone());
    if (s.max_exp_avg_sq().defined()) out.push_back(s.max_exp_avg_sq().clone());
  }
  return out;
}

std::vector<torch::Tensor> masters(const torch::optim::Optimizer& opt,
                                   const std::vector<torch::Tensor>& params, bool adam) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    out.push_back(adam ? state_of<FusedAdamParamState>(opt, p).master_param().clone()
                       : state_of<FusedSGDParamState>(opt, p).master_param().clone());
  }
  return out;
}

void expect_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].defined() && b[i].defined()) << what << ", tensor " << i;
    EXPECT_EQ(a[i].scalar_type(), b[i].scalar_type()) << what << ", tensor " << i;
    EXPECT_TRUE(torch::equal(a[i], b[i]))
        << what << ", tensor " << i << ": max diff "
        << (a[i].to(torch::kDouble) - b[i].to(torch::kDouble)).abs().max().item<double>();
  }
}

// Within fp32 rounding of another implementation's values: relative 1e-5 of the tensor's scale
// (FMA contraction, operation order), as tests/cpp/test_optim.cpp holds the fp32 step to
// torch's.
void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what,
                  double rtol = 1e-5) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  EXPECT_TRUE(torch::allclose(got.to(torch::kDouble), want.to(torch::kDouble), rtol, rtol * scale))
      << what << ": max diff "
      << (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>()
      << " at scale " << scale;
}

constexpr double kLr = 1e-2;
constexpr double kMaxNorm = 1.0;
constexpr int64_t kSteps = 200;

FusedAdamOptions adamw() {
  return FusedAdamOptions(kLr).weight_decay(1e-2).decoupled_weight_decay(true);
}

FusedSGDOptions sgd() {
  return FusedSGDOptions(kLr).momentum(0.9).nesterov(true).weight_decay(1e-3);
}

// ---------------------------------------------------------------------------------------------
// master_weights

// The masters of `low` (bf16/fp16 params, master_weights) against `fp32` (the same optimizer on
// fp32 copies) and `libtorch` (LibTorch's own optimizer on fp32 copies, clip_grad_norm_ first),
// all with a StepLR, for kSteps steps of the same gradients (exact in every dtype).
void expect_masters_follow_fp32(torch::ScalarType dtype, bool adam) {
  const auto low = initial_params(dtype);
  const auto fp32 = as(low, torch::kFloat);
  const auto ref = as(low, torch::kFloat);
  std::unique_ptr<torch::optim::Optimizer> opt_low, opt_fp32, opt_ref;
  if (adam) {
    opt_low =
        std::make_unique<FusedAdam>(low, adamw().max_grad_norm(kMaxNorm).master_weights(true));
    opt_fp32 = std::make_unique<FusedAdam>(fp32, adamw().max_grad_norm(kMaxNorm));
    opt_ref = std::make_unique<torch::optim::AdamW>(
        ref, torch::optim::AdamWOptions(kLr).weight_decay(1e-2));
  } else {
    opt_low = std::make_unique<FusedSGD>(low, sgd().max_grad_norm(kMaxNorm).master_weights(true));
    opt_fp32 = std::make_unique<FusedSGD>(fp32, sgd().max_grad_norm(kMaxNorm));
    opt_ref = std::make_unique<torch::optim::SGD>(
        ref, torch::optim::SGDOptions(kLr).momentum(0.9).nesterov(true).weight_decay(1e-3));
  }
  torch::optim::StepLR sched_low(*opt_low, 50, 0.5), sched_fp32(*opt_fp32, 50, 0.5),
      sched_ref(*opt_ref, 50, 0.5);
  int64_t clipped = 0;
  for (int64_t t = 0; t < kSteps; ++t) {
    const auto grads = grads_at(t, dtype);
    set_grads(low, grads);
    set_grads(fp32, grads);
    set_grads(ref, grads);
    opt_low->step();
    opt_fp32->step();
    const double norm = torch::nn::utils::clip_grad_norm_(ref, kMaxNorm);
    clipped += norm > kMaxNorm;
    opt_ref->step();
    sched_low.step();
    sched_fp32.step();
    sched_ref.step();
    const auto m = masters(*opt_low, low, adam);
    for (const auto& master : m) {
      ASSERT_EQ(master.scalar_type(), torch::kFloat);
    }
    expect_equal(m, values(fp32), "masters vs the fp32 run, step " + std::to_string(t));
    expect_equal(values(low), as(m, dtype), "params vs their masters, step " + std::to_string(t));
    if (::testing::Test::HasFailure()) return;
  }
  // The clip bit on some steps and not on others.
  EXPECT_GT(clipped, 10);
  EXPECT_LT(clipped, kSteps - 10);
  if (adam) {
    // The state is fp32 (state_dtype unset), bitwise the fp32 run's.
    expect_equal(adam_state(*opt_low, low), adam_state(*opt_fp32, fp32), "state");
  } else {
    for (size_t i = 0; i < low.size(); ++i) {
      const auto& b = state_of<FusedSGDParamState>(*opt_low, low[i]).momentum_buffer();
      EXPECT_EQ(b.scalar_type(), torch::kFloat);
      EXPECT_TRUE(
          torch::equal(b, state_of<FusedSGDParamState>(*opt_fp32, fp32[i]).momentum_buffer()));
    }
  }
  // 200 steps of fp32 arithmetic in two implementations: within 1e-5 of the params' scale.
  const auto m = masters(*opt_low, low, adam);
  for (size_t i = 0; i < ref.size(); ++i) {
    expect_close(m[i], ref[i].detach(), "master " + std::to_string(i) + " vs LibTorch");
  }
}

TEST(OptimPrecision, AdamWMastersOnBf16EqualTheFp32Run) {
  expect_masters_follow_fp32(torch::kBFloat16, true);
}

TEST(OptimPrecision, AdamWMastersOnFp16EqualTheFp32Run) {
  expect_masters_follow_fp32(torch::kHalf, true);
}

TEST(OptimPrecision, SGDMastersOnBf16EqualTheFp32Run) {
  expect_masters_follow_fp32(torch::kBFloat16, false);
}

TEST(OptimPrecision, SGDMastersOnFp16EqualTheFp32Run) {
  expect_masters_follow_fp32(torch::kHalf, false);
}

TEST(OptimPrecision, MastersOnlyForLowPrecisionParams) {
  // fp32 and fp64 params keep no master; a bf16 one beside them does, and the fp32 one steps as
  // it would without the option.
  auto params = std::vector<torch::Tensor>{initial_params(torch::kFloat)[0],
                                           initial_params(torch::kDouble)[1],
                                           initial_params(torch::kBFloat16)[2]};
  auto plain = std::vector<torch::Tensor>{params[0].detach().clone().requires_grad_()};
  FusedAdam opt(params, adamw().master_weights(true));
  FusedAdam opt_plain(plain, adamw());
  for (int64_t t = 0; t < 5; ++t) {
    const auto g = grads_at(t, torch::kDouble);
    set_grads(params, g);
    set_grads(plain, {g[0]});
    opt.step();
    opt_plain.step();
  }
  EXPECT_FALSE(state_of<FusedAdamParamState>(opt, params[0]).master_param().defined());
  EXPECT_FALSE(state_of<FusedAdamParamState>(opt, params[1]).master_param().defined());
  EXPECT_EQ(state_of<FusedAdamParamState>(opt, params[1]).exp_avg().scalar_type(), torch::kDouble);
  const auto& m = state_of<FusedAdamParamState>(opt, params[2]).master_param();
  ASSERT_TRUE(m.defined());
  EXPECT_EQ(m.scalar_type(), torch::kFloat);
  EXPECT_EQ(state_of<FusedAdamParamState>(opt, params[2]).exp_avg().scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(params[2], m.to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(params[0], plain[0]));
}

TEST(OptimPrecision, ASkippedStepLeavesParamsMastersAndStateBitIdentical) {
  auto params = initial_params(torch::kBFloat16);
  FusedAdam opt(params, adamw().max_grad_norm(kMaxNorm).master_weights(true));
  set_grads(params, grads_at(0, torch::kBFloat16));
  opt.step();
  const auto before = values(params);
  const auto masters_before = masters(opt, params, true);
  const auto state_before = adam_state(opt, params);
  auto grads = grads_at(1, torch::kBFloat16);
  grads[1][3] = std::numeric_limits<float>::infinity();
  set_grads(params, grads);
  opt.step();
  EXPECT_TRUE(opt.last_skipped().item<bool>());
  expect_equal(values(params), before, "params");
  expect_equal(masters(opt, params, true), masters_before, "masters");
  expect_equal(adam_state(opt, params), state_before, "state");
  EXPECT_EQ(opt.skipped_steps().item<int64_t>(), 1);
}

TEST(OptimPrecision, AnArchiveWithoutMastersGetsThemFromTheParams) {
  // A LibTorch AdamW run on bf16 params (its archive has no masters and no settings), loaded
  // into a FusedAdam with master_weights: the state becomes fp32, the masters are made from the
  // params at the next step, and the run goes on bitwise as an fp32 FusedAdam loading the same
  // archive on fp32 copies. (A steadystep archive brings its own settings, as it does the
  // clipping settings: one saved without masters loads with master_weights off.)
  auto params = initial_params(torch::kBFloat16);
  torch::optim::AdamW before(params, torch::optim::AdamWOptions(kLr).weight_decay(1e-2));
  for (int64_t t = 0; t < 10; ++t) {
    set_grads(params, grads_at(t, torch::kBFloat16));
    before.step();
  }
  std::stringstream stream;
  torch::save(before, stream);
  const std::string archive = stream.str();
  auto low = as(params, torch::kBFloat16);
  auto fp32 = as(params, torch::kFloat);
  FusedAdam opt_low(low, adamw().master_weights(true));
  FusedAdam opt_fp32(fp32, adamw());
  std::istringstream in_low(archive), in_fp32(archive);
  torch::load(opt_low, in_low);
  torch::load(opt_fp32, in_fp32);
  for (const auto& p : low) {
    EXPECT_EQ(state_of<FusedAdamParamState>(opt_low, p).exp_avg().scalar_type(), torch::kFloat);
    EXPECT_FALSE(state_of<FusedAdamParamState>(opt_low, p).master_param().defined());
  }
  for (int64_t t = 10; t < 30; ++t) {
    const auto grads = grads_at(t, torch::kBFloat16);
    set_grads(low, grads);
    set_grads(fp32, grads);
    opt_low.step();
    opt_fp32.step();
    expect_equal(masters(opt_low, low, true), values(fp32), "step " + std::to_string(t));
  }
}

TEST(OptimPrecision, SGDMastersWithoutMomentumSurviveAnArchive) {
  // Without momentum an SGD state has no buffer; its master still goes into the archive (made
  // again from the rounded param it would lose its low bits), so a resumed run equals the
  // uninterrupted one.
  const auto options = FusedSGDOptions(kLr).master_weights(true);
  auto whole_params = initial_params(torch::kBFloat16);
  FusedSGD whole(whole_params, options);
  auto params = initial_params(torch::kBFloat16);
  auto opt = std::make_unique<FusedSGD>(params, options);
  for (int64_t t = 0; t < 30; ++t) {
    if (t == 15) {
      std::stringstream stream;
      torch::save(*opt, stream);
      const auto saved = values(params);
      params.clear();
      for (const auto& p : saved) params.push_back(p.clone().requires_grad_());
      opt = std::make_unique<FusedSGD>(params, options);
      torch::load(*opt, stream);
      expect_equal(masters(*opt, params, false), masters(whole, whole_params, false), "loaded");
    }
    const auto grads = grads_at(t, torch::kBFloat16);
    set_grads(whole_params, grads);
    set_grads(params, grads);
    whole.step();
    opt->step();
  }
  expect_equal(values(params), values(whole_params), "params");
  expect_equal(masters(*opt, params, false), masters(whole, whole_params, false), "masters");
}

// ---------------------------------------------------------------------------------------------
// state_dtype

TEST(OptimPrecision, Bf16AdamStateAgainstAnFp32OracleOfEachStep) {
  // Each step reads the bf16 state upcast, does the math in fp32 and writes the state rounded
  // to nearest: the new state is the oracle's fp32 value rounded to bf16 (within one bf16 ulp:
  // the kernel's fp32 value may differ from the oracle's in its last bits, which can move a
  // value across a rounding boundary), and the param moves by the oracle's update computed from
  // the unrounded state (to fp32 rounding).
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, lr = 1e-2;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto params = initial_params(dtype);
    FusedAdam opt(params, FusedAdamOptions(lr).state_dtype(torch::kBFloat16));
    for (int64_t t = 0; t < 30; ++t) {
      const auto grads = grads_at(t, dtype);
      set_grads(params, grads);
      std::vector<torch::Tensor> m0, v0;
      for (const auto& p : params) {
        if (t == 0) {
          m0.push_back(torch::zeros(p.sizes(), torch::kFloat));
          v0.push_back(torch::zeros(p.sizes(), torch::kFloat));
        } else {
          const auto& s = state_of<FusedAdamParamState>(opt, p);
          m0.push_back(s.exp_avg().to(torch::kFloat));
          v0.push_back(s.exp_avg_sq().to(torch::kFloat));
        }
      }
      const auto before = values(params);
      opt.step();
      const double step = static_cast<double>(t + 1);
      const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
      for (size_t i = 0; i < params.size(); ++i) {
        const auto g = grads[i].to(torch::kFloat);
        const auto m = m0[i] * beta1 + g * (1 - beta1);
        const auto v = v0[i] * beta2 + g * g * (1 - beta2);
        const auto& s = state_of<FusedAdamParamState>(opt, params[i]);
        ASSERT_EQ(s.exp_avg().scalar_type(), torch::kBFloat16);
        ASSERT_EQ(s.exp_avg_sq().scalar_type(), torch::kBFloat16);
        const std::string what = "step " + std::to_string(t) + ", param " + std::to_string(i);
        // One bf16 ulp (2^-7 of the value), and 1e-6 of the operands' scale where the two
        // terms cancel (the fp32 values differ in their last bits, relative to the operands).
        EXPECT_TRUE(torch::allclose(s.exp_avg().to(torch::kFloat), m, 1.0 / 128,
                                    1e-6 * (m0[i].abs().max() + g.abs().max()).item<double>()))
            << what;
        EXPECT_TRUE(torch::allclose(s.exp_avg_sq().to(torch::kFloat), v, 1.0 / 128,
                                    1e-6 * (v0[i].abs().max() + (g * g).max()).item<double>()))
            << what;
        const auto update = -lr * (m / bc1) / ((v / bc2).sqrt() + eps);
        if (dtype == torch::kFloat) {
          expect_close(params[i].detach() - before[i], update, what, 1e-4);
        } else {
          // The param is the fp32 result rounded to bf16.
          const auto want = (before[i].to(torch::kFloat) + update).to(torch::kBFloat16);
          const auto off = (params[i].detach().to(torch::kFloat) - want.to(torch::kFloat)).abs();
          EXPECT_TRUE(off.le(want.to(torch::kFloat).abs() / 128).all().item<bool>()) << what;
        }
      }
    }
  }
}

TEST(OptimPrecision, Bf16SGDMomentumBufferAgainstAnFp32Oracle) {
  auto params = initial_params(torch::kFloat);
  const double momentum = 0.9, lr = 1e-2;
  FusedSGD opt(params, FusedSGDOptions(lr).momentum(momentum).state_dtype(torch::kBFloat16));
  for (int64_t t = 0; t < 30; ++t) {
    const auto grads = grads_at(t, torch::kFloat);
    set_grads(params, grads);
    std::vector<torch::Tensor> b0;
    for (const auto& p : params) {
      b0.push_back(t == 0
                       ? torch::Tensor()
                       : state_of<FusedSGDParamState>(opt, p).momentum_buffer().to(torch::kFloat));
    }
    const auto before = values(params);
    opt.step();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto b = t == 0 ? grads[i] : b0[i] * momentum + grads[i];
      const auto& buffer = state_of<FusedSGDParamState>(opt, params[i]).momentum_buffer();
      ASSERT_EQ(buffer.scalar_type(), torch::kBFloat16);
      const std::string what = "step " + std::to_string(t) + ", param " + std::to_string(i);
      EXPECT_TRUE(torch::allclose(buffer.to(torch::kFloat), b, 1.0 / 128,
                                  1e-6 * (t == 0 ? grads[i] : b0[i]).abs().max().item<double>() +
                                      1e-6 * grads[i].abs().max().item<double>()))
          << what;
      // The param moves by lr times the unrounded buffer: within fp32 rounding of the param
      // (its ulp, 6e-8 at 0.5, is 0.05% of this update of ~1e-4).
      expect_close(params[i].detach(), before[i] - lr * b, what, 1e-6);
    }
  }
}

TEST(OptimPrecision, Bf16StateArchiveRoundTripIsBitwise) {
  for (const bool with_masters : {false, true}) {
    const auto dtype = with_masters ? torch::kBFloat16 : torch::kFloat;
    const auto options = adamw()
                             .amsgrad(true)
                             .max_grad_norm(kMaxNorm)
                             .state_dtype(torch::kBFloat16)
                             .master_weights(with_masters);
    auto whole_params = initial_params(dtype);
    FusedAdam whole(whole_params, options);
    auto params = initial_params(dtype);
    auto opt = std::make_unique<FusedAdam>(params, options);
    for (int64_t t = 0; t < 40; ++t) {
      if (t == 20) {
        std::stringstream stream;
        torch::save(*opt, stream);
        const auto saved = values(params);
        const auto state = adam_state(*opt, params);
        params.clear();
        for (const auto& p : saved) params.push_back(p.clone().requires_grad_());
        // Constructed without the settings: the archive brings them.
        opt = std::make_unique<FusedAdam>(params, adamw().amsgrad(true).max_grad_norm(kMaxNorm));
        torch::load(*opt, stream);
        const auto& o = static_cast<const FusedAdamOptions&>(opt->defaults());
        EXPECT_EQ(o.state_dtype(), std::optional<c10::ScalarType>(torch::kBFloat16));
        EXPECT_EQ(o.master_weights(), with_masters);
        expect_equal(adam_state(*opt, params), state, "loaded state");
        for (const auto& s : adam_state(*opt, params)) EXPECT_EQ(s.scalar_type(), torch::kBFloat16);
        if (with_masters) {
          expect_equal(masters(*opt, params, true), masters(whole, whole_params, true),
                       "loaded masters");
        }
      }
      const auto grads = grads_at(t, dtype);
      set_grads(whole_params, grads);
      set_grads(params, grads);
      whole.step();
      opt->step();
    }
    expect_equal(values(params), values(whole_params), "params");
    expect_equal(adam_state(*opt, params), adam_state(whole, whole_params), "state");
    if (with_masters) {
      expect_equal(masters(*opt, params, true), masters(whole, whole_params, true), "masters");
    }
  }
}

TEST(OptimPrecision, LibTorchAdamWLoadsTheArchiveAndBack) {
  // LibTorch's AdamW reads our archive (it ignores master_param and the settings; it keeps the
  // state tensors as they are), steps on, and writes one that FusedAdam with state_dtype loads,
  // casting the state to bf16.
  auto params = initial_params(torch::kBFloat16);
  FusedAdam opt(params, adamw().master_weights(true).state_dtype(torch::kBFloat16));
  for (int64_t t = 0; t < 5; ++t) {
    set_grads(params, grads_at(t, torch::kBFloat16));
    opt.step();
  }
  std::stringstream stream;
  torch::save(opt, stream);
  auto theirs = as(params, torch::kFloat);
  torch::optim::AdamW libtorch(theirs, torch::optim::AdamWOptions(kLr).weight_decay(1e-2));
  torch::load(libtorch, stream);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(
        *libtorch.state().at(theirs[i].unsafeGetTensorImpl()));
    EXPECT_EQ(s.step(), 5);
    EXPECT_TRUE(torch::equal(s.exp_avg(), state_of<FusedAdamParamState>(opt, params[i]).exp_avg()));
  }
  set_grads(theirs, grads_at(5, torch::kFloat));
  libtorch.step();
  std::stringstream back;
  torch::save(libtorch, back);
  auto ours = as(theirs, torch::kFloat);
  FusedAdam loaded(ours, adamw().state_dtype(torch::kBFloat16));
  torch::load(loaded, back);
  for (size_t i = 0; i < ours.size(); ++i) {
    const auto& theirs_state = static_cast<const torch::optim::AdamWParamState&>(
        *libtorch.state().at(theirs[i].unsafeGetTensorImpl()));
    const auto& s = state_of<FusedAdamParamState>(loaded, ours[i]);
    EXPECT_EQ(s.exp_avg().scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(s.exp_avg(), theirs_state.exp_avg().to(torch::kBFloat16)));
    EXPECT_TRUE(torch::equal(s.exp_avg_sq(), theirs_state.exp_avg_sq().to(torch::kBFloat16)));
    EXPECT_EQ(s.step().item<double>(), 6.0);
  }
}

// ---------------------------------------------------------------------------------------------
// stochastic_rounding

TEST(OptimPrecision, StochasticRoundingIsUnbiasedAndKeepsSmallUpdates) {
  // 2^17 bf16 ones, each moved by +2^-10 per step (SGD, lr 1, grad -2^-10): an eighth of bf16's
  // ulp at 1 (2^-7), lost entirely by rounding to nearest. Rounded stochastically an element
  // goes up one ulp with probability 1/8: the mean after one step is 1 + 2^-10 within 5 standard
  // errors (2^-7 * sqrt(1/8 * 7/8) / sqrt(2^17) = 8.2e-6 each); after 64 steps (still below 2)
  // it is 1 + 2^-4, within 5 standard errors of a sum of 64 independent such steps.
  const int64_t n = int64_t(1) << 17;
  const double delta = std::ldexp(1.0, -10);
  const double se_one = std::ldexp(1.0, -7) * std::sqrt(7.0 / 64.0) / std::sqrt(double(n));
  for (const bool stochastic : {false, true}) {
    auto p = torch::ones({n}, torch::kBFloat16).requires_grad_();
    torch::manual_seed(3);
    FusedSGD opt({p}, FusedSGDOptions(1.0).stochastic_rounding(stochastic).skip_nonfinite(false));
    for (int64_t t = 1; t <= 64; ++t) {
      p.mutable_grad() = torch::full({n}, -delta, torch::kBFloat16);
      opt.step();
      const double mean = p.detach().to(torch::kDouble).mean().item<double>();
      if (!stochastic) {
        ASSERT_EQ(mean, 1.0) << t;  // every update lost
        continue;
      }
      const double want = 1.0 + static_cast<double>(t) * delta;
      EXPECT_NEAR(mean, want, 5 * se_one * std::sqrt(static_cast<double>(t))) << t;
      // Only the two neighbours of the fp32 value are ever drawn.
      if (t == 1) {
        const auto up = p.detach().eq(1.0 + std::ldexp(1.0, -7));
        EXPECT_TRUE(up.logical_or(p.detach().eq(1.0)).all().item<bool>());
      }
    }
  }
}

struct SRRun {
  std::vector<torch::Tensor> params;
  int64_t seed;
};

// `steps` AdamW steps with stochastic rounding on bf16 params, the optimizer made right after
// torch::manual_seed(`torch_seed`); at `resume_at` (< 0: never) saved, and loaded into an
// optimizer made under another torch seed on a copy of the params.
SRRun run_sr(uint64_t torch_seed, int64_t steps, int64_t resume_at, bool adam = true) {
  auto params = initial_params(torch::kBFloat16);
  const auto make = [&](uint64_t seed) -> std::unique_ptr<steadystep::FusedOptimizer> {
    torch::manual_seed(seed);
    if (adam) {
      return std::make_unique<FusedAdam>(
          params, FusedAdamOptions(1e-3).max_grad_norm(kMaxNorm).stochastic_rounding(true));
    }
    return std::make_unique<FusedSGD>(
        params, FusedSGDOptions(1e-3).momentum(0.9).stochastic_rounding(true));
  };
  auto opt = make(torch_seed);
  for (int64_t t = 0; t < steps; ++t) {
    if (t == resume_at) {
      std::stringstream stream;
      torch::save(*opt, stream);
      const auto saved = values(params);
      const int64_t seed = opt->rounding_seed();
      params.clear();
      for (const auto& p : saved) params.push_back(p.clone().requires_grad_());
      opt = make(torch_seed + 1000);
      EXPECT_NE(opt->rounding_seed(), seed);
      torch::load(*opt, stream);
      EXPECT_EQ(opt->rounding_seed(), seed);
    }
    set_grads(params, grads_at(t, torch::kBFloat16));
    opt->step();
  }
  return {values(params), opt->rounding_seed()};
}

TEST(OptimPrecision, StochasticRoundingSameSeedSameRun) {
  for (const bool adam : {true, false}) {
    const auto a = run_sr(11, 60, -1, adam);
    const auto b = run_sr(11, 60, -1, adam);
    const auto c = run_sr(12, 60, -1, adam);
    EXPECT_EQ(a.seed, b.seed);
    EXPECT_NE(a.seed, c.seed);
    expect_equal(a.params, b.params, "same seed");
    // Another seed rounds some element of the 696 otherwise.
    bool differs = false;
    for (size_t i = 0; i < a.params.size(); ++i) differs |= !torch::equal(a.params[i], c.params[i]);
    EXPECT_TRUE(differs);
    // Not to nearest either.
    auto nearest = initial_params(torch::kBFloat16);
    FusedAdam n_adam(nearest, FusedAdamOptions(1e-3).max_grad_norm(kMaxNorm));
    FusedSGD n_sgd(nearest, FusedSGDOptions(1e-3).momentum(0.9));
    for (int64_t t = 0; t < 60; ++t) {
      set_grads(nearest, grads_at(t, torch::kBFloat16));
      adam ? n_adam.step() : n_sgd.step();
    }
    differs = false;
    for (size_t i = 0; i < a.params.size(); ++i) differs |= !torch::equal(a.params[i], nearest[i]);
    EXPECT_TRUE(differs);
  }
}

TEST(OptimPrecision, StochasticRoundingResumeEqualsUninterrupted) {
  for (const bool adam : {true, false}) {
    const auto whole = run_sr(5, 60, -1, adam);
    const auto resumed = run_sr(5, 60, 25, adam);
    EXPECT_EQ(whole.seed, resumed.seed);
    expect_equal(resumed.params, whole.params, adam ? "adam" : "sgd");
  }
}

TEST(OptimPrecision, TheSeedIsDrawnFromTheDefaultGeneratorOnlyWhenNeeded) {
  auto params = initial_params(torch::kBFloat16);
  torch::manual_seed(42);
  const int64_t want = torch::randint(0, int64_t(1) << 62, {}, torch::kLong).item<int64_t>();
  const double next = torch::rand({}).item<double>();
  torch::manual_seed(42);
  FusedAdam on(params, FusedAdamOptions().stochastic_rounding(true));
  EXPECT_EQ(on.rounding_seed(), want);
  EXPECT_EQ(torch::rand({}).item<double>(), next);
  torch::manual_seed(42);
  FusedSGD sgd_on(params, FusedSGDOptions().stochastic_rounding(true));
  EXPECT_EQ(sgd_on.rounding_seed(), want);
  // Without stochastic rounding nothing is drawn.
  torch::manual_seed(42);
  FusedAdam off(params, FusedAdamOptions());
  FusedSGD sgd_off(params, FusedSGDOptions());
  EXPECT_EQ(torch::randint(0, int64_t(1) << 62, {}, torch::kLong).item<int64_t>(), want);
  EXPECT_EQ(off.rounding_seed(), 0);
  // Settable, and saved as set.
  off.rounding_seed(123);
  EXPECT_EQ(off.rounding_seed(), 123);
  std::stringstream stream;
  torch::save(off, stream);
  FusedAdam other(params, FusedAdamOptions());
  torch::load(other, stream);
  EXPECT_EQ(other.rounding_seed(), 123);
}

// ---------------------------------------------------------------------------------------------
// refusals

template <typename Body>
void expect_value_error(Body body, const std::string& needle) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(OptimPrecision, RefusedSettings) {
  auto params = initial_params(torch::kBFloat16);
  const std::string both = "stochastic_rounding rounds bf16 params that have no master";
  expect_value_error(
      [&] {
        (void)FusedAdam(params, FusedAdamOptions().master_weights(true).stochastic_rounding(true));
      },
      both);
  expect_value_error(
      [&] {
        (void)FusedSGD(params, FusedSGDOptions().master_weights(true).stochastic_rounding(true));
      },
      both);
  for (const auto dtype : {torch::kHalf, torch::kDouble, torch::kLong}) {
    expect_value_error([&] { (void)FusedAdam(params, FusedAdamOptions().state_dtype(dtype)); },
                       "state_dtype must be");
    expect_value_error([&] { (void)FusedSGD(params, FusedSGDOptions().state_dtype(dtype)); },
                       "state_dtype must be");
  }
  // Accepted: kFloat, kBFloat16, unset.
  (void)FusedAdam(params, FusedAdamOptions().state_dtype(torch::kFloat));
  (void)FusedSGD(params, FusedSGDOptions().state_dtype(torch::kBFloat16).master_weights(true));
}

TEST(OptimPrecision, AGroupWithOtherSettingsIsRefused) {
  auto params = initial_params(torch::kBFloat16);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{params[0]},
                      std::make_unique<FusedAdamOptions>(FusedAdamOptions().master_weights(true)));
  groups.emplace_back(std::vector<torch::Tensor>{params[1], params[2]});
  expect_value_error([&] { (void)FusedAdam(groups, FusedAdamOptions()); },
                     "param group 0 sets master_weights true where the optimizer's is false");
  std::vector<torch::optim::OptimizerParamGroup> sgd_groups;
  sgd_groups.emplace_back(
      std::vector<torch::Tensor>{params[0]},
      std::make_unique<FusedSGDOptions>(FusedSGDOptions().state_dtype(torch::kBFloat16)));
  expect_value_error([&] { (void)FusedSGD(sgd_groups, FusedSGDOptions()); },
                     "state_dtype BFloat16 where the optimizer's is unset");
}

TEST(OptimPrecision, SettingsChangedAfterConstructionAreCheckedBeforeTheStep) {
  auto params = initial_params(torch::kBFloat16);
  FusedAdam opt(params, FusedAdamOptions().master_weights(true));
  set_grads(params, grads_at(0, torch::kBFloat16));
  const auto before = values(params);
  auto& wide = static_cast<FusedAdamOptions&>(opt.defaults());
  wide.stochastic_rounding(true);
  expect_value_error([&] { opt.step(); }, "stochastic_rounding rounds bf16 params");
  expect_equal(values(params), before, "params");
  EXPECT_TRUE(opt.state().empty());
  wide.stochastic_rounding(false).state_dtype(torch::kHalf);
  expect_value_error([&] { opt.step(); }, "state_dtype must be");
  // The optimizer-wide settings changed, a group's copy not: refused as a differing group.
  wide.state_dtype(torch::kBFloat16);
  expect_value_error([&] { opt.step(); }, "per-group precision is not supported");
  EXPECT_TRUE(opt.state().empty());
}

}  // namespace
