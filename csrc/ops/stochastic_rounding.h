#pragma once

// NOTE [Stochastic rounding]: a bf16 param without an fp32 master loses every update smaller
// than half its ulp when rounded to nearest. Rounded stochastically, x goes to the bf16 value
// above with probability (x - below) / ulp, so the rounded value equals x in expectation and
// small updates add up over steps. The random bits come from a counter-based hash, not a
// generator with state: bits = f(param key, step count, element index). A run is then
// reproducible from its seed, a resumed run draws what the uninterrupted one would have drawn
// (the key and the step count are in the optimizer's state), a skipped step (step count not
// advanced) draws the same bits again at the next one, and the CPU and CUDA kernels, which
// share these functions, round every element the same way.
//
// - param key: rounding_key(seed, i), i = the param's position in the fused op's params;
// - per tensor and step: step_stream(key, step), one 32-bit stream value;
// - per element: element_bits(stream, index), a bijective 32-bit hash (lowbias32, by Chris
//   Wellons' hash-prospector) of the index's low 32 bits, with the high 32 bits folded into
//   the stream (stream_at), so a tensor of more than 2^32 elements draws no value twice.
//
// Torch-free and usable from CUDA device code (nvcc includes it).

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define STEADYSTEP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define STEADYSTEP_HOST_DEVICE inline
#endif

namespace steadystep::rounding {

/// splitmix64's finaliser: every input bit reaches every output bit.
STEADYSTEP_HOST_DEVICE uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// A bijective 32-bit hash with low bias (lowbias32).
STEADYSTEP_HOST_DEVICE uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

/// The key of the param at position `index` of a fused step seeded with `seed`.
STEADYSTEP_HOST_DEVICE int64_t rounding_key(int64_t seed, int64_t index) {
  return static_cast<int64_t>(
      mix64(static_cast<uint64_t>(seed) ^ mix64(static_cast<uint64_t>(index) + 1)));
}

/// The stream of one param at one step (`step`: the step count the update uses, >= 1).
STEADYSTEP_HOST_DEVICE uint32_t step_stream(int64_t key, double step) {
  return static_cast<uint32_t>(
      mix64(static_cast<uint64_t>(key) ^ mix64(static_cast<uint64_t>(step))) >> 32);
}

/// The stream for elements [2^32 * k, 2^32 * (k + 1)) of the tensor, k = index >> 32: computed
/// once per chunk (a chunk never crosses a multiple of 2^32).
STEADYSTEP_HOST_DEVICE uint32_t stream_at(uint32_t stream, int64_t index) {
  const uint32_t high = static_cast<uint32_t>(static_cast<uint64_t>(index) >> 32);
  return high == 0 ? stream : hash32(stream ^ hash32(high));
}

/// 32 random bits of element `index` (only its low 32 bits are read; see stream_at).
STEADYSTEP_HOST_DEVICE uint32_t element_bits(uint32_t stream, int64_t index) {
  return hash32(static_cast<uint32_t>(index) ^ stream);
}

/// The bf16 bit pattern of fp32 `x` rounded stochastically with the random `bits` (their low
/// 16 are used): adding them below bf16's last mantissa bit carries into it with probability
/// equal to the fraction cut off, then the low half is dropped. Sign-magnitude makes this
/// symmetric for negative values. inf stays inf; nan stays a quiet nan. A finite value above
/// bf16's largest one may round to inf, as it is nearer to it than to that value by the
/// expected amount.
STEADYSTEP_HOST_DEVICE uint16_t bf16_bits_stochastic(float x, uint32_t bits) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  // Both outcomes, then a select: no branch, so the CPU loops around this vectorise.
  // inf: the high half is exact; nan: keep the sign and make the payload quiet.
  const bool special = (u & 0x7f800000U) == 0x7f800000U;
  const uint32_t kept = (u >> 16) | ((u & 0x007fffffU) != 0 ? 0x0040U : 0U);
  const uint32_t rounded = (u + (bits & 0xffffU)) >> 16;
  return static_cast<uint16_t>(special ? kept : rounded);
}

}  // namespace steadystep::rounding
