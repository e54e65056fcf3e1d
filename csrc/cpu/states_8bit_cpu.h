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
// search over the bucket's floats; +inf if none): two reads that do not
// wait on each other, two gathers per 8 values in the AVX2 loop. The
// constructor checks the one-crossing property for every bucket, so the
// table gives nearest_code's code for every float (a test compares them on
// every map value, every midpoint and their neighbours).
//
// The AVX-512 loop reads both in one 32-bit entry per bucket, one gather per
// 16 values: entry[b] = the threshold's key << 8 | first[b]. A bucket with a
// crossing is a whole 16-bit group (not the lowest or highest), so its
// threshold is told apart by its low 16 bits: x >= threshold exactly when
// x's low 16 bits are at least the threshold's (for a negative bucket, whose
// floats grow as their bits shrink, both sides are flipped, 0xFFFF - bits).
// The key is 0x10000, which no 16-bit value reaches, where the bucket has no
// crossing; the code is the entry's low byte, plus one past the key (a test
// compares the three loops' codes with the table's on a sweep of the floats
// of magnitude under 2: one bit pattern in 4093, 4M random ones, the probes).
class SearchTable {
 public:
  static constexpr uint32_t kLowKey = (102u << 7) - 1;     // the key of [2^-25 - 2^-33, 2^-25), and all below
  static constexpr uint32_t kHighKey = (127u << 7) | 127u;  // the key of [2 - 2^-7, 2), and all above
  static constexpr int kKeys = kHighKey - kLowKey + 1;      // buckets per sign
  static constexpr int kBuckets = 2 * kKeys;
  static constexpr uint32_t kNoCrossing = 0x10000;

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
  const uint32_t* entry() const { return entry_.data(); }

 private:
  alignas(64) std::array<uint8_t, kBuckets + 4> first_{};  // + 4: a 4-byte gather of the last bucket stays inside
  alignas(64) std::array<float, kBuckets> threshold_{};
  alignas(64) std::array<uint32_t, kBuckets> entry_{};
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
