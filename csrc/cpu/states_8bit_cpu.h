#pragma once
// The CPU side of 8-bit states (NOTE: [8-bit states] in csrc/states_8bit.h):
// the update ops' coded loops (csrc/cpu/states_8bit_cpu.cpp) and the table
// the CPU finds codes with.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "../op_checks.h"
#include "../states_8bit.h"
#include "../update_ops.h"

namespace lrsched_fused {
namespace cpu {

// NOTE: [8-bit search table]
// A value's code (nearest_code) is a binary search of 8 dependent steps;
// the CPU loops look it up instead, in a table of buckets: a bucket is the
// floats of one sign that share their top 16 bits past the sign (the
// exponent and the top 7 mantissa bits, a 16-bit key), with every magnitude
// under 2^-25 in the lowest bucket (where no two codes are) and every one
// from 2 - 2^-7 up (inf included) in the highest. No bucket holds more than one
// crossing between neighbouring codes (in [0.5, 1) a bucket is 2^-8 wide and
// the crossings are at least 0.0053 apart; below, the buckets narrow with
// the exponent and the codes crowd only by decade), and nearest_code is
// monotone, so for any x in bucket b the code is first[b] (the code of the
// bucket's smallest value), plus one from threshold[b] on (the bucket's
// smallest float that nearest_code codes one higher, found by a binary
// search over the bucket's floats; NaN, which no x reaches, if none): two
// reads that do not wait on each other, two gathers per 8 values in the AVX2
// loop. The constructor checks the one-crossing property for every bucket,
// so the table gives nearest_code's code for every float but NaN (a test
// compares them on every map value, every midpoint and their neighbours).
//
// The AVX-512 loop reads both in one 32-bit entry, one gather per 16
// values, and from a table indexed by the float's whole top 16 bits, its
// sign included (2^16 entries, 256 KB per map, of which a step touches the
// few KB its values' scales fall in), so the index is one shift: no
// clamping, no sign row. An entry is the code in its low 16 bits and, in
// its high 16 bits, the bucket's low-bits bound; with x_high = x's bits <<
// 16 (its low 16 bits, on top), the code is the entry's low byte, plus one
// where (x_high > entry) differs from x's sign. A bucket with a crossing is
// a whole 16-bit group (not one of the clamped ones), so its threshold is
// told apart by its low 16 bits t: positive x reaches it when its low bits
// exceed t - 1 (the bound; t >= 1, the bucket's first float being coded
// first), negative x when its low bits do not exceed t (its magnitude grows
// with its bits; the bound is t). Without a crossing, the bound is 0xFFFF,
// which x_high never exceeds: a positive x keeps the code, a negative one
// adds one to a stored code - 1 (mod 2^16: the stored byte is what counts).
// A test compares the three loops' codes with the table's on a sweep of the
// floats (one bit pattern in 4093 of those under 2 in magnitude, 4M random
// ones, the probes, values from 2 up to inf).
class SearchTable {
 public:
  static constexpr uint32_t kLowKey = (102u << 7) - 1;     // the key of [2^-25 - 2^-33, 2^-25), and all below
  static constexpr uint32_t kHighKey = (127u << 7) | 127u;  // the key of [2 - 2^-7, 2), and all above
  static constexpr int kKeys = kHighKey - kLowKey + 1;      // buckets per sign
  static constexpr int kBuckets = 2 * kKeys;
  static constexpr int kTopBits = 1 << 16;                  // a float's top 16 bits, its sign included

  explicit SearchTable(const float* map);

  static uint32_t bucket(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    const uint32_t key = std::min(std::max((bits & 0x7FFFFFFFu) >> 16, kLowKey), kHighKey);
    return key - kLowKey + (bits >> 31) * static_cast<uint32_t>(kKeys);
  }

  int code(float x) const {
    const uint32_t b = bucket(x);
    return first_[b] + static_cast<int>(x >= threshold_[b]);
  }

  const uint8_t* first() const { return first_.data(); }
  const float* threshold() const { return threshold_.data(); }
  const uint32_t* entry() const { return entry_.data(); }  // by top 16 bits: the AVX-512 loop's

 private:
  alignas(64) std::array<uint8_t, kBuckets + 4> first_{};  // + 4: a 4-byte gather of the last bucket stays inside
  alignas(64) std::array<float, kBuckets> threshold_{};
  alignas(64) std::array<uint32_t, kTopBits> entry_{};
};

const SearchTable& search_table(states_8bit::MapKind kind);

// Which version of the coding loops runs (NOTE: [CPU instruction sets]):
// AVX-512 (with VBMI's byte permutes) where torch reports that capability.
enum class CodingIsa { Baseline, Avx2, Avx512 };

CodingIsa coding_isa();

// n values' codes against absmax with the given version (for the tests: the
// kernels call it per block); false if this CPU or build cannot run it.
bool code_values(CodingIsa isa, const float* values, float absmax, states_8bit::MapKind kind, uint8_t* codes,
                 int64_t n);

// The coded loops of each update op (the flag states_8bit set).
void run_step_8bit(const UpdateCall<AdamStepOp>& call);
void run_step_8bit(const UpdateCall<SgdStepOp>& call);
void run_step_8bit(const UpdateCall<LionStepOp>& call);

}  // namespace cpu
}  // namespace lrsched_fused
