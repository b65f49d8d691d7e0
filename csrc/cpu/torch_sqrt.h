#pragma once

// NOTE [Torch's sqrt on CPU]: ATen computes a contiguous fp32/fp64 `sqrt` with MKL's VML in
// high-accuracy mode (at::vml::vsqrt), which is not always the correctly rounded root (1 ulp
// off for about 16% of fp32 values), so Adam's denominator matches torch's only through the
// same routine. Going through the dispatcher (`from_blob(...).sqrt_()`) costs microseconds a
// call, which dominates a step over thousands of small tensors; so the VML entry point that
// libtorch_cpu carries is called directly, with the mode ATen passes. It is used only after it
// gave the dispatcher's bits on a probe array; a torch without MKL (or a different sqrt) keeps
// the dispatcher path.

#include <ATen/ops/from_blob.h>

#include <dlfcn.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace steadystep::cpu {

namespace vml {

// LP64 VML signatures (MKL_INT = int, mode = MKL_INT64).
template <typename A>
using SqrtFn = void (*)(int, const A*, A*, long long);

// VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE (mkl_vml_defines.h), as ATen's vml.h passes.
constexpr long long kTorchMode = 0x00000002 | 0x00140000 | 0x00000100;

// x = sqrt(x) through the dispatcher: torch's CPU sqrt by definition.
template <typename A>
void dispatcher_sqrt(A* x, int64_t n) {
  at::from_blob(x, {n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value)).sqrt_();
}

// The VML routine if libtorch_cpu has it and it gives the dispatcher's bits on a probe that
// spans the exponents Adam meets (second moments from 1e-30 to 1e30, subnormals, zero).
template <typename A>
SqrtFn<A> find_sqrt(const char* symbol) {
  void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  if (torch_cpu == nullptr) {
    return nullptr;
  }
  auto fn = reinterpret_cast<SqrtFn<A>>(dlsym(torch_cpu, symbol));
  dlclose(torch_cpu);  // RTLD_NOLOAD took a reference; torch keeps the library loaded
  if (fn == nullptr) {
    return nullptr;
  }
  std::vector<A> ours, theirs;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 8192; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double mantissa = 1.0 + static_cast<double>(state >> 11) / 9007199254740992.0;
    const int exponent = static_cast<int>((state >> 3) % 200) - 100;
    ours.push_back(static_cast<A>(std::ldexp(mantissa, exponent)));
  }
  ours.push_back(A(0));
  ours.push_back(std::numeric_limits<A>::denorm_min());
  theirs = ours;
  fn(static_cast<int>(ours.size()), ours.data(), ours.data(), kTorchMode);
  dispatcher_sqrt(theirs.data(), static_cast<int64_t>(theirs.size()));
  for (size_t i = 0; i < ours.size(); ++i) {
    if (std::memcmp(&ours[i], &theirs[i], sizeof(A)) != 0) {
      return nullptr;
    }
  }
  return fn;
}

}  // namespace vml

/// x = sqrt(x) in place, bit for bit as torch's CPU `sqrt` (NOTE [Torch's sqrt on CPU]).
template <typename A>
void torch_sqrt(A* x, int64_t n) {
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>);
  static const vml::SqrtFn<A> fn =
      vml::find_sqrt<A>(std::is_same_v<A, float> ? "vmsSqrt" : "vmdSqrt");
  if (fn != nullptr && n <= INT_MAX) {
    fn(static_cast<int>(n), x, x, vml::kTorchMode);
  } else {
    vml::dispatcher_sqrt(x, n);
  }
}

}  // namespace steadystep::cpu
