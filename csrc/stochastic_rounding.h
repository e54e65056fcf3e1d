#pragma once
// Stochastic rounding to bfloat16 / float16 and its random bits, written once
// for the CPU and the CUDA kernels.
//
// NOTE: [stochastic rounding]
// With the stochastic_rounding flag every bfloat16/float16 value an update
// op writes (the parameter without master weights, the states with a 16-bit
// state_dtype) is rounded up with probability equal to the fraction of the
// ulp its opmath value lies above the lower neighbour, so the expected stored
// value is the opmath value. float32/float64 values are written as before.
//
// The random bits are a counter-based generator's, Philox4x32-10 (Salmon et
// al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the generator
// of cuRAND's and torch's CUDA Philox engines, and of JAX): a pure function of
// (key, counter), so any element's bits are computed where the element is,
// with no generator state, the same on the CPU and CUDA for any thread count,
// chunking or launch split, and a run resumed from a state_dict draws what the
// uninterrupted run would have drawn. Philox4x32-10 passes TestU01's BigCrush
// for every key; ten rounds is the published default (seven already pass).
// A cheaper hash (a SplitMix64 finalizer of a counter) would make the streams
// of two (step, element) pairs shifted copies of one Weyl sequence.
//
//   key     = the optimizer's seed (53 bits, drawn from torch's default CPU
//             generator at construction, kept in schedule_state and saved in
//             the state_dict)
//   counter = (element index low 32 bits, high 32 bits, the tensor's step
//             count after this step, 0)
//
// The element index is global: the tensor's first element's position in the
// optimizer's parameters laid end to end in param-group order
// (`element_offsets`, from Python), plus the element's position in the tensor
// (in storage order). So no two elements of one optimizer share a counter in
// one step, and a shard of a parameter (FSDP2) draws what the unsharded
// parameter draws at the same elements. One Philox call gives the element
// four 32-bit words: word 0 rounds the parameter, word 1 + s the s-th state
// slot (exp_avg, exp_avg_sq, max_exp_avg_sq; momentum_buffer).
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace lrsched_fused {

struct PhiloxWords {
  uint32_t w[4];
};

C10_HOST_DEVICE inline void mul_hi_lo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
#endif
}

// Philox4x32 with 10 rounds (the key is bumped between rounds), as Random123
// defines it; checked against its published known-answer vectors
// (tests/test_stochastic_rounding.py).
C10_HOST_DEVICE inline PhiloxWords philox4x32_10(PhiloxWords counter, uint32_t key0, uint32_t key1) {
  uint32_t c0 = counter.w[0], c1 = counter.w[1], c2 = counter.w[2], c3 = counter.w[3];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += UINT32_C(0x9E3779B9);
      key1 += UINT32_C(0xBB67AE85);
    }
    uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(UINT32_C(0xD2511F53), c0, hi0, lo0);
    mul_hi_lo(UINT32_C(0xCD9E8D57), c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ key0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ key1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// What a tensor's elements draw their bits from in one step.
struct RoundingStream {
  uint64_t seed;
  uint32_t step;  // the tensor's step count after this step (mod 2**32)
};

// The four words of element `index` (global, NOTE: [stochastic rounding]).
C10_HOST_DEVICE inline PhiloxWords rounding_words(const RoundingStream& stream, uint64_t index) {
  return philox4x32_10({{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), stream.step, 0u}},
                       static_cast<uint32_t>(stream.seed), static_cast<uint32_t>(stream.seed >> 32));
}

// float -> bfloat16, rounded up with probability (the 16 dropped bits) / 2**16:
// exact, as bfloat16 drops the same 16 bits of every float (subnormals too).
// inf stays inf, a finite value may round up to inf past the largest
// bfloat16 (as its expectation asks), NaN becomes c10's NaN (0x7FC0).
C10_HOST_DEVICE inline c10::BFloat16 bfloat16_stochastic(float value, uint32_t random) {
  const uint32_t bits = c10::bit_cast<uint32_t>(value);
  const uint32_t rounded = (bits + (random >> 16)) >> 16;
  const uint16_t stored = value != value ? UINT16_C(0x7FC0) : static_cast<uint16_t>(rounded);
  return c10::BFloat16(stored, c10::BFloat16::from_bits());
}

// float -> float16, stochastically: with ulp the float16 spacing at |value|
// (2**(e - 10) for |value| in [2**e, 2**(e+1)), at least 2**-24, the
// subnormal spacing), |value| / ulp = n + f exactly (power-of-two scaling),
// and the result is (n + 1) * ulp with probability f, else n * ulp; n * ulp
// and (n + 1) * ulp are float16 values (or 65536: inf). The probability is f
// rounded down to a multiple of 2**-24 (24 random bits), which is f itself for
// |value| >= 2**-25; below, the bias is under 2**-48 in absolute value.
// inf and NaN convert as by nearest rounding.
C10_HOST_DEVICE inline c10::Half half_stochastic(float value, uint32_t random) {
  const float magnitude = ::fabsf(value);
  if (!(magnitude < INFINITY)) {
    return c10::Half(value);
  }
  const int32_t exponent = static_cast<int32_t>((c10::bit_cast<uint32_t>(magnitude) >> 23) & 0xFFu) - 127;
  const int32_t ulp_exponent = exponent - 10 < -24 ? -24 : exponent - 10;
  const float ulp = c10::bit_cast<float>(static_cast<uint32_t>(ulp_exponent + 127) << 23);
  const float inverse_ulp = c10::bit_cast<float>(static_cast<uint32_t>(127 - ulp_exponent) << 23);
  const float scaled = magnitude * inverse_ulp;
  const float whole = ::floorf(scaled);
  // Up when f >= 1 - r / 2**24 (exact: r < 2**24), so that the word 0
  // rounds toward zero, as for bfloat16.
  const float complement = 1.0f - static_cast<float>(random >> 8) * 0x1p-24f;
  const float chosen = (whole + (scaled - whole >= complement ? 1.0f : 0.0f)) * ulp;
  return c10::Half(value < 0 ? -chosen : chosen);
}

template <typename T>
constexpr bool is_16_bit_float_v = std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

// Whether a kernel over these types stores a value that stochastic rounding
// rounds: a 16-bit param without master weights, or 16-bit states (when it
// has states; Adam's second moments are 16-bit when the states are). Without
// one, the stochastic_rounding flag changes nothing and no bits are drawn.
template <typename scalar_t, typename state_t, bool kMaster, bool kHasStates = true>
constexpr bool kHasRoundedStores =
    (is_16_bit_float_v<scalar_t> && !kMaster) || (kHasStates && is_16_bit_float_v<state_t>);

// A 16-bit value rounded stochastically with `random` (a Philox word).
template <typename T>
C10_HOST_DEVICE inline T round_stochastic(float value, uint32_t random) {
  static_assert(is_16_bit_float_v<T>, "stochastic rounding is to bfloat16 or float16");
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return bfloat16_stochastic(value, random);
  } else {
    return half_stochastic(value, random);
  }
}

}  // namespace lrsched_fused
