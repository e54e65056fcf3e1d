#pragma once
// The CPU side of 8-bit states (NOTE: [8-bit states] in csrc/states_8bit.h):
// the update ops' coded loops (csrc/cpu/states_8bit_cpu.cpp) and the table
// the CPU finds codes with.
#include <array>
#include <cstdint>

#include "../op_checks.h"
#include "../states_8bit.h"
#include "../update_ops.h"

namespace lrsched_fused {
namespace cpu {

// NOTE: [8-bit search table]
// A value's code (nearest_code) is a binary search of 8 dependent steps;
// the CPU loops look it up instead, indexed by the value's float bits: its
// sign, its exponent (one bin for everything under 2^-25, where no two codes
// are, then one per exponent up to 2^0) and the top kMantissaBits of its
// mantissa. No bucket holds more than one crossing between neighbouring
// codes (in [0.5, 1) a bucket is 2^-8 wide and the crossings are at least
// 0.0053 apart; below, the buckets narrow with the exponent and the codes
// crowd only by decade), and nearest_code is monotone, so for any x in bucket b the
// code is first[b] (the code of the bucket's smallest value), plus one from
// threshold[b] on (the bucket's smallest float that nearest_code codes one
// higher, found by a binary search over the bucket's floats; +inf if none):
// two reads that do not wait on each other, two gathers per 8 values in
// the AVX2 loop. The constructor checks the one-crossing property for every
// bucket, so the table gives nearest_code's code for every float (a test
// compares them on every map value, every midpoint and their neighbours).
//
// The AVX-512 loop reads both in one 32-bit entry per bucket, one gather per
// 16 values: entry[b] = first[b] << 24 | the threshold's key. A bucket with
// a crossing (bins 1 to kBins - 2) holds the floats that share their top 16
// bits, so its threshold is told apart by its low 16 bits: x >= threshold
// exactly when x's low 16 bits are at least the threshold's (for a negative
// bucket, whose floats grow as their bits shrink, both sides are flipped,
// 0xFFFF - bits). The key is 0x10000, which no 16-bit value reaches, where
// the bucket has no crossing (a test compares the three coders on every
// float of magnitude under 2).
class SearchTable {
 public:
  static constexpr int kMantissaBits = 7;
  static constexpr int kBins = 27;                  // under 2^-25, then one per exponent 2^-25 ... 2^0
  static constexpr uint32_t kFirstExponent = 102;   // 2^-25's biased exponent: bin 1
  static constexpr int kBuckets = 2 * kBins << kMantissaBits;

  explicit SearchTable(const float* map);

  static uint32_t bucket(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xFFu);
    int32_t bin = exponent - static_cast<int32_t>(kFirstExponent) + 1;
    bin = bin < 0 ? 0 : (bin > kBins - 1 ? kBins - 1 : bin);
    const uint32_t mantissa = bin == 0 ? 0u : (bits >> (23 - kMantissaBits)) & ((1u << kMantissaBits) - 1);
    return (((bits >> 31) * kBins + static_cast<uint32_t>(bin)) << kMantissaBits) | mantissa;
  }

  int code(float x) const {
    const uint32_t b = bucket(x);
    return first_[b] + static_cast<int>(x >= threshold_[b]);
  }

  const uint8_t* first() const { return first_.data(); }
  const float* threshold() const { return threshold_.data(); }
  const uint32_t* entry() const { return entry_.data(); }

  static constexpr uint32_t kNoCrossing = 0x10000;
  static constexpr uint32_t kKeyMask = 0x1FFFF;

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
