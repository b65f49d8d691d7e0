// steadystep::get_total_norm against torch::linalg_vector_norm (linalg.vector_norm) of all tensors
// as one vector.

#include <steadystep/clip_grad.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Odd sizes (0, 1, primes, > one chunk), one transposed and one sliced (non-dense) view.
std::vector<torch::Tensor> make_tensors(torch::ScalarType dtype, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(dtype).device(device);
  std::vector<torch::Tensor> ts;
  for (int64_t n : {0, 1, 3, 17, 1000, 4099, 70001}) {
    ts.push_back(torch::randn({n}, opts));
  }
  ts.push_back(torch::randn({33, 65}, opts).t());
  ts.push_back(torch::randn({40, 50}, opts).slice(1, 3, 47, 2));
  return ts;
}

torch::Tensor reference(const std::vector<torch::Tensor>& ts, double p) {
  std::vector<torch::Tensor> flat;
  for (const auto& t : ts) {
    flat.push_back(t.to(torch::kDouble).reshape(-1));
  }
  return torch::linalg_vector_norm(torch::cat(flat), p, c10::nullopt, false, c10::nullopt);
}

void check_against_torch(const torch::Device& device) {
  torch::manual_seed(0);
  // Relative tolerance by input dtype: the inputs are exact in fp64, so the only error is our
  // accumulation (fp32: ~1e-7 per chunk, partials combined in fp64) and the final rounding to
  // the output dtype (fp16/bf16 results carry 2^-11 / 2^-8 relative rounding).
  const std::pair<torch::ScalarType, double> cases[] = {{torch::kFloat, 2e-6},
                                                        {torch::kDouble, 1e-12},
                                                        {torch::kHalf, 1e-3},
                                                        {torch::kBFloat16, 8e-3}};
  for (const auto& [dtype, rtol] : cases) {
    const auto ts = make_tensors(dtype, device);
    for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
      const auto got = steadystep::get_total_norm(ts, p);
      EXPECT_EQ(got.dim(), 0);
      EXPECT_EQ(got.scalar_type(), dtype);
      EXPECT_EQ(got.device(), device);
      // Rounded to the output dtype, as torch's result is: the p=0.5 norm of these inputs
      // overflows fp16 to inf.
      const double want = reference(ts, p).to(dtype).item<double>();
      if (std::isinf(want)) {
        EXPECT_EQ(got.item<double>(), want) << dtype << " p=" << p;
      } else {
        EXPECT_NEAR(got.item<double>(), want, rtol * want) << dtype << " p=" << p;
      }
    }
  }
}

TEST(GetTotalNorm, MatchesVectorNormOnCpu) {
  check_against_torch(torch::kCPU);
}

TEST(GetTotalNorm, MatchesVectorNormOnCuda) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device on this machine";
  }
  check_against_torch(torch::Device(torch::kCUDA, 0));
}

TEST(GetTotalNorm, MixedDtypesPromote) {
  torch::manual_seed(1);
  std::vector<torch::Tensor> ts{torch::randn({100}, torch::kHalf), torch::randn({50}),
                                torch::randn({7}, torch::kBFloat16)};
  const auto got = steadystep::get_total_norm(ts, 2.0);
  EXPECT_EQ(got.scalar_type(), torch::kFloat);
  EXPECT_NEAR(got.item<double>(), reference(ts, 2.0).item<double>(), 1e-5);
}

TEST(GetTotalNorm, EmptyListIsZero) {
  const auto got = steadystep::get_total_norm(std::vector<torch::Tensor>{});
  EXPECT_EQ(got.item<double>(), 0.0);
}

TEST(GetTotalNorm, NanAndInfPropagate) {
  auto t = torch::randn({1000});
  t[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(steadystep::get_total_norm({t}, 2.0).item<double>()));
  EXPECT_TRUE(std::isnan(steadystep::get_total_norm({t}, kInf).item<double>()));
  auto u = torch::randn({1000});
  u[3] = kInf;
  EXPECT_TRUE(std::isinf(steadystep::get_total_norm({u}, 2.0).item<double>()));
  EXPECT_THROW(steadystep::get_total_norm({u}, 2.0, /*error_if_nonfinite=*/true), c10::Error);
}

TEST(GetTotalNorm, SparseIsRejected) {
  const auto sparse = torch::eye(3).to_sparse();
  EXPECT_THROW(steadystep::get_total_norm({sparse}), c10::Error);
}

}  // namespace

namespace {

// Parameters whose grads are `grads` (cloned), as LibTorch users hold them.
std::vector<torch::Tensor> with_grads(const std::vector<torch::Tensor>& grads) {
  std::vector<torch::Tensor> params;
  for (const auto& g : grads) {
    auto p = torch::zeros(g.sizes(), g.options()).requires_grad_(true);
    p.mutable_grad() = g.clone();
    params.push_back(p);
  }
  return params;
}

void check_clip_against_torch(const torch::Device& device) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
    auto grads = make_tensors(dtype, device);
    for (auto& g : grads) {
      g.mul_(dtype == torch::kHalf ? 0.1 : 5.0);  // keep fp16's L1 norm below its 65504 limit
    }
    const double rtol = dtype == torch::kFloat    ? 2e-6
                        : dtype == torch::kDouble ? 1e-12
                        : dtype == torch::kHalf   ? 2e-3
                                                  : 1.6e-2;
    for (double p : {1.0, 2.0, kInf}) {
      auto params = with_grads(grads);
      const double norm = reference(grads, p).item<double>();
      const double max_norm = norm / 4;
      const auto got = steadystep::clip_grad_norm_(params, max_norm, p);
      EXPECT_NEAR(got.item<double>(), norm, rtol * norm) << dtype << " p=" << p;
      // Each gradient scaled by max_norm / (norm + 1e-6): compare with that, in fp64.
      const double coef = max_norm / (norm + 1e-6);
      for (size_t i = 0; i < params.size(); ++i) {
        const auto want = grads[i].to(torch::kDouble) * coef;
        // atol: fp16's subnormal spacing (6e-8), where relative precision runs out.
        const double atol = dtype == torch::kHalf ? 1.2e-7 : 1e-30;
        EXPECT_TRUE(torch::allclose(params[i].grad().to(torch::kDouble), want, 2 * rtol, atol))
            << dtype << " p=" << p << " tensor " << i;
      }
      // Under the limit: gradients untouched, bit for bit.
      auto untouched = with_grads(grads);
      steadystep::clip_grad_norm_(untouched, norm * 4, p);
      for (size_t i = 0; i < grads.size(); ++i) {
        EXPECT_TRUE(torch::equal(untouched[i].grad(), grads[i]));
      }
    }
    auto clamped = with_grads(grads);
    steadystep::clip_grad_value_(clamped, 0.5);
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_TRUE(torch::equal(clamped[i].grad(), grads[i].clamp(-0.5, 0.5)));
    }
  }
}

TEST(ClipGradNorm, MatchesReferenceOnCpu) {
  check_clip_against_torch(torch::kCPU);
}

TEST(ClipGradNorm, MatchesReferenceOnCuda) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device on this machine";
  }
  check_clip_against_torch(torch::Device(torch::kCUDA, 0));
}

TEST(ClipGradNorm, ReturnsTensorAndSkipsParamsWithoutGrad) {
  auto p = torch::zeros({4}, torch::requires_grad());
  auto q = torch::zeros({2}, torch::requires_grad());  // no grad
  p.mutable_grad() = torch::full({4}, 3.0);
  const auto norm = steadystep::clip_grad_norm_({p, q}, 1.0);
  EXPECT_EQ(norm.dim(), 0);
  EXPECT_NEAR(norm.item<double>(), 6.0, 1e-6);
  EXPECT_NEAR(p.grad().norm().item<double>(), 1.0, 1e-5);
  EXPECT_FALSE(q.grad().defined());
  EXPECT_THROW(steadystep::clip_grad_norm_({p}, -1.0), c10::Error);
  EXPECT_THROW(steadystep::clip_grad_value_({p}, -1.0), c10::Error);
}

TEST(ClipGradsWithNorm, UsesTheGivenNorm) {
  auto p = torch::zeros({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1.0f, -2.0f, 4.0f});
  steadystep::clip_grads_with_norm_({p}, 1.0, torch::tensor(8.0f));
  const float coef = std::min(1.0f, 1.0f * (1.0f / (8.0f + 1e-6f)));
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0f, -2.0f, 4.0f}) * coef));
}

}  // namespace

namespace {

// torch takes the norm of the per-tensor norms with the same order: for p = 0 that counts the
// tensors with a nonzero element, also when there is just one tensor.
TEST(GetTotalNorm, OrderZeroCountsNonzeroTensors) {
  const auto t = torch::tensor({0.0f, 1.0f, 2.0f, 0.0f});
  EXPECT_EQ(steadystep::get_total_norm({t}, 0.0).item<double>(), 1.0);
  EXPECT_EQ(steadystep::get_total_norm({torch::zeros({3})}, 0.0).item<double>(), 0.0);
  EXPECT_EQ(steadystep::get_total_norm({t, t * 2, torch::zeros({2})}, 0.0).item<double>(), 2.0);
}

TEST(GetTotalNorm, ComplexGivesRealNorm) {
  const auto c = torch::randn({50}, torch::kComplexFloat);
  const auto norm = steadystep::get_total_norm({c});
  EXPECT_EQ(norm.scalar_type(), torch::kFloat);
  EXPECT_NEAR(norm.item<double>(), torch::view_as_real(c).norm().item<double>(), 1e-5);
  auto p =
      torch::zeros({50}, torch::TensorOptions().dtype(torch::kComplexFloat)).requires_grad_(true);
  p.mutable_grad() = c * 10;
  const auto clipped = steadystep::clip_grad_norm_({p}, 1.0);
  EXPECT_EQ(clipped.scalar_type(), torch::kFloat);
  EXPECT_NEAR(p.grad().abs().pow(2).sum().sqrt().item<double>(), 1.0, 1e-5);
}

// The norm is never part of an autograd graph, as torch's (computed under no_grad).
TEST(GetTotalNorm, NoAutogradHistory) {
  const auto x = torch::randn({10}, torch::requires_grad());
  for (double p : {0.0, 2.0, 3.5}) {
    const auto norm = steadystep::get_total_norm({x * 2}, p);
    EXPECT_FALSE(norm.requires_grad()) << "p=" << p;
    EXPECT_FALSE(norm.grad_fn()) << "p=" << p;
  }
}

// Meta tensors: shapes and dtypes only, no "no Meta kernel" error on the way.
TEST(GetTotalNorm, MetaTensorsGiveMetaResults) {
  const auto opts = torch::TensorOptions().device(torch::kMeta);
  const std::vector<torch::Tensor> ts = {torch::empty({3, 4}, opts),
                                         torch::empty({5}, opts.dtype(torch::kHalf)),
                                         torch::empty({7, 2}, opts).t()};
  for (double p : {0.0, 1.0, 2.0, 3.5, kInf, -kInf}) {
    const auto norm = steadystep::get_total_norm(ts, p);
    EXPECT_TRUE(norm.is_meta()) << "p=" << p;
    EXPECT_EQ(norm.dim(), 0);
    EXPECT_EQ(norm.scalar_type(), torch::kFloat);
  }
  std::vector<torch::Tensor> params;
  for (const auto& t : ts) {
    auto p = torch::empty(t.sizes(), t.options()).requires_grad_(true);
    p.mutable_grad() = torch::empty_like(t);
    params.push_back(p);
  }
  const auto norm = steadystep::clip_grad_norm_(params, 1.0);
  EXPECT_TRUE(norm.is_meta());
  steadystep::clip_grad_value_(params, 1.0);
  // A meta norm has no value to check.
  EXPECT_THROW(steadystep::get_total_norm(ts, 2.0, /*error_if_nonfinite=*/true), c10::Error);
}

// A device whose grads are all strided views hands the kernel nothing; that used to fail after
// the other grads had already been clamped.
TEST(ClipGradValue, OnlyNonDenseGrads) {
  const auto base = torch::randn({6, 4}) * 5;
  auto p = torch::zeros({6, 2}, torch::requires_grad());
  p.mutable_grad() = base.clone().slice(1, 0, 4, 2);
  steadystep::clip_grad_value_({p}, 1.0);
  EXPECT_TRUE(torch::equal(p.grad(), base.slice(1, 0, 4, 2).clamp(-1.0, 1.0)));
}

}  // namespace

#include <steadystep/optim.h>

namespace {

// The fused steps' non-finite guard on meta norms: the step runs (shapes only) instead of
// failing in at::isfinite, which goes through abs.out (no Meta kernel in LibTorch alone).
TEST(GetTotalNorm, MetaFusedStepGuard) {
  const auto opts = torch::TensorOptions().device(torch::kMeta);
  auto p = torch::empty({3, 4}, opts).requires_grad_(true);
  p.mutable_grad() = torch::empty({3, 4}, opts);
  steadystep::FusedAdam adam({p}, steadystep::FusedAdamOptions(1e-3).max_grad_norm(1.0));
  EXPECT_NO_THROW(adam.step());
  steadystep::FusedSGD sgd({p}, steadystep::FusedSGDOptions(1e-3).max_grad_norm(1.0));
  EXPECT_NO_THROW(sgd.step());
  EXPECT_TRUE(p.is_meta());
}

}  // namespace

namespace {

// AGC's formula in ATen ops (timm.utils.adaptive_clip_grad): unit norms over all dims but the
// first (the whole tensor for ndim <= 1), max_norm = clamp(|w|, eps) * clip_factor, grads whose
// unit norm is not below it scaled by max_norm / clamp(|g|, 1e-6).
torch::Tensor agc_reference(const torch::Tensor& w, const torch::Tensor& g, double clip_factor,
                            double eps, double p) {
  const auto unit_norm = [p](const torch::Tensor& x) {
    if (x.dim() <= 1) {
      return torch::linalg_vector_norm(x, p, c10::nullopt, false, c10::nullopt);
    }
    std::vector<int64_t> dims;
    for (int64_t d = 1; d < x.dim(); ++d) {
      dims.push_back(d);
    }
    return torch::linalg_vector_norm(x, p, dims, true, c10::nullopt);
  };
  const auto max_norm = unit_norm(w).clamp_min(eps).mul(clip_factor);
  const auto g_norm = unit_norm(g);
  return torch::where(g_norm < max_norm, g, g * (max_norm / g_norm.clamp_min(1e-6)));
}

TEST(AdaptiveClipGrad, MatchesAtenFormula) {
  torch::manual_seed(0);
  const std::vector<std::vector<int64_t>> shapes = {{},        {7},           {300},       {8, 5},
                                                    {64, 100}, {16, 3, 3, 3}, {4, 1000, 1}};
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const double p : {2.0, 1.0, kInf, 3.0}) {
      std::vector<torch::Tensor> params;
      std::vector<torch::Tensor> expected;
      for (const auto& shape : shapes) {
        auto w = torch::randn(shape, torch::TensorOptions().dtype(dtype)) * 0.1;
        // Units' grad/weight ratios spread over 1e-5..1e-1: some clipped, some kept.
        auto g = torch::randn(shape, torch::TensorOptions().dtype(dtype));
        const int64_t units = w.dim() > 1 ? w.size(0) : 1;
        std::vector<int64_t> scale_shape(std::max<int64_t>(w.dim(), 1), 1);
        scale_shape[0] = units;
        auto scale = torch::pow(10.0, torch::rand({units}, g.options()) * 4 - 5);
        g = g * (w.dim() > 1 ? scale.reshape(scale_shape) : scale.reshape({}));
        w.requires_grad_(true);
        w.mutable_grad() = g.clone();
        expected.push_back(agc_reference(w.detach(), g, 0.01, 1e-3, p));
        params.push_back(w);
      }
      steadystep::adaptive_clip_grad_(params, 0.01, 1e-3, p);
      // Same formula, same dtype; only the summation order of the norms differs (a few ulps).
      const double rtol = dtype == torch::kDouble ? 1e-12 : 1e-5;
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_TRUE(torch::allclose(params[i].grad(), expected[i], rtol, 0.0))
            << "dtype " << dtype << " p " << p << " tensor " << i;
      }
    }
  }
}

TEST(AdaptiveClipGrad, RejectsBadArgumentsBeforeChangingAnything) {
  auto w = torch::randn({4, 3}).requires_grad_(true);
  w.mutable_grad() = torch::randn({4, 3}) * 10;
  const auto before = w.grad().clone();
  EXPECT_THROW(steadystep::adaptive_clip_grad_({w}, 0.0), c10::ValueError);
  EXPECT_THROW(steadystep::adaptive_clip_grad_({w}, 0.01, -1.0), c10::ValueError);
  EXPECT_THROW(steadystep::adaptive_clip_grad_({w}, 0.01, 1e-3, 0.0), c10::ValueError);
  EXPECT_TRUE(torch::equal(w.grad(), before));
  steadystep::adaptive_clip_grad_({w});
  EXPECT_FALSE(torch::equal(w.grad(), before));  // ratio ~100 > 0.01: clipped
}

}  // namespace
