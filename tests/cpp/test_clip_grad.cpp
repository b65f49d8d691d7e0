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
