// CPU kernels of adam_step_, sgd_step_ and lion_step_ with 8-bit states
// (NOTE: [8-bit states] in csrc/states_8bit.h): per block of 256 elements,
// the codes are read into float32 (an L1-resident buffer), the update of
// update_math.h runs over the block (the loop GCC vectorizes, as the
// float states' loops), the block's new absmax is the buffer's largest
// magnitude, and the buffer is coded back against it. The work is split over
// threads in whole blocks (NOTE: [CPU work split]); reading and writing codes
// go through AVX2 gathers where the AVX2 loops run, through byte permutes and
// one gather per 16 values where the AVX-512 ones do (NOTE: [8-bit search
// table], use_avx512_vbmi in csrc/cpu/cpu_loops.h), and there the blocks
// are pipelined: a block's update runs beside the coding of the block before
// it (NOTE: [8-bit pipelined blocks]).
#include "states_8bit_cpu.h"

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(LRSCHED_FUSED_AVX2_CLONE)
#include <immintrin.h>
#endif

#include "../dispatch.h"
#include "cpu_loops.h"
#include "update_elements.h"

namespace lrsched_fused {
namespace cpu {

using states_8bit::kBlock;
using states_8bit::MapKind;

SearchTable::SearchTable(const float* map) {
  for (int b = 0; b < kBuckets; ++b) {
    const bool negative = b >= kKeys;
    const uint32_t key = kLowKey + static_cast<uint32_t>(b % kKeys);
    // The bucket's magnitudes, as bit patterns, and its k-th float in value order.
    const uint32_t low = key == kLowKey ? 0u : key << 16;
    const uint32_t high = key == kHighKey ? 0x7F800000u : key << 16 | 0xFFFFu;  // the highest up to inf
    const auto value = [&](uint32_t k) {
      return negative ? -states_8bit::from_bits(high - k) : states_8bit::from_bits(low + k);
    };
    const uint32_t last = high - low;
    const int first = states_8bit::nearest_code(map, value(0));
    const int top = states_8bit::nearest_code(map, value(last));
    TORCH_INTERNAL_ASSERT(top <= first + 1, "8-bit search table: bucket ", b, " holds more than one crossing");
    first_[b] = static_cast<uint8_t>(first);
    threshold_[b] = NAN;  // x >= NaN is false for every x
    if (top == first + 1) {  // the smallest k whose value is coded first + 1
      TORCH_INTERNAL_ASSERT(key != kLowKey && key != kHighKey, "8-bit search table: a crossing in bucket ", b);
      uint32_t lo = 0;
      uint32_t hi = last;
      while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (states_8bit::nearest_code(map, value(mid)) > first) {
          hi = mid;
        } else {
          lo = mid + 1;
        }
      }
      threshold_[b] = value(lo);
    }
  }
  // The AVX-512 loop's entries, by top 16 bits: a clamped key's is its
  // bucket's, which holds no crossing.
  for (uint32_t top = 0; top < static_cast<uint32_t>(kTopBits); ++top) {
    const bool negative = (top >> 15) != 0;
    const uint32_t b = bucket(states_8bit::from_bits(top << 16));
    const uint32_t first = first_[b];
    const float threshold = threshold_[b];
    uint32_t bound = 0xFFFFu;
    uint32_t code = negative ? (first - 1) & 0xFFFFu : first;
    if (threshold == threshold) {
      const uint32_t t = states_8bit::magnitude_bits(threshold) & 0xFFFFu;
      bound = negative ? t : t - 1;  // t >= 1: the bucket's first float is coded first
      code = first;
    }
    entry_[top] = bound << 16 | code;
  }
}

const SearchTable& search_table(MapKind kind) {
  static const SearchTable signed_table(states_8bit::kSignedMap);
  static const SearchTable unsigned_table(states_8bit::kUnsignedMap);
  return kind == MapKind::Signed ? signed_table : unsigned_table;
}

namespace {

// n values of a block from their codes: map[code] * absmax.
void dequantize_scalar(const uint8_t* codes, const float* map, float absmax, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = map[codes[i]] * absmax;
  }
}

// n values' codes against the block's absmax.
void quantize_scalar(const float* values, float absmax, const SearchTable& table, uint8_t* codes, int64_t n) {
  const float inverse = states_8bit::inverse_scale(absmax);
  for (int64_t i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(table.code(states_8bit::normalized(values[i], inverse)));
  }
}

#if defined(LRSCHED_FUSED_AVX2_CLONE)
// The same, 8 values at a time with gathers; the rest as above.
__attribute__((target("avx2"), noinline)) void dequantize_avx2(const uint8_t* codes, const float* map,
                                                                float absmax, float* out, int64_t n) {
  const __m256 scale = _mm256_set1_ps(absmax);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(map, index, 4), scale));
  }
  dequantize_scalar(codes + i, map, absmax, out + i, n - i);
}

__attribute__((target("avx2"), noinline)) void quantize_avx2(const float* values, float absmax,
                                                              const SearchTable& table, uint8_t* codes, int64_t n) {
  using T = SearchTable;
  const __m256 inverse = _mm256_set1_ps(states_8bit::inverse_scale(absmax));
  const __m256i magnitude_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i low_key = _mm256_set1_epi32(static_cast<int>(T::kLowKey));
  const __m256i high_key = _mm256_set1_epi32(static_cast<int>(T::kHighKey));
  const __m256i keys = _mm256_set1_epi32(T::kKeys);
  const __m256i byte = _mm256_set1_epi32(0xFF);
  const int* first = reinterpret_cast<const int*>(table.first());
  const float* threshold = table.threshold();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // normalized(): value * (1 / absmax), 0 for a NaN
    __m256 x = _mm256_mul_ps(_mm256_loadu_ps(values + i), inverse);
    x = _mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
    // SearchTable::bucket
    const __m256i bits = _mm256_castps_si256(x);
    __m256i key = _mm256_srli_epi32(_mm256_and_si256(bits, magnitude_mask), 16);
    key = _mm256_min_epu32(_mm256_max_epu32(key, low_key), high_key);
    const __m256i sign_row = _mm256_and_si256(_mm256_srai_epi32(bits, 31), keys);
    const __m256i bucket = _mm256_add_epi32(_mm256_sub_epi32(key, low_key), sign_row);
    // SearchTable::code: first[bucket] (a byte), one more from threshold[bucket] on
    const __m256i j = _mm256_and_si256(_mm256_i32gather_epi32(first, bucket, 1), byte);
    const __m256 up = _mm256_cmp_ps(x, _mm256_i32gather_ps(threshold, bucket, 4), _CMP_GE_OQ);
    const __m256i code = _mm256_sub_epi32(j, _mm256_castps_si256(up));  // a true mask is -1
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm_packus_epi16(words, words));
  }
  quantize_scalar(values + i, absmax, table, codes + i, n - i);
}

#define LRSCHED_FUSED_AVX512_ISA target("avx512f,avx512bw,avx512vl,avx512vbmi")
#define LRSCHED_FUSED_TARGET_AVX512 __attribute__((LRSCHED_FUSED_AVX512_ISA, noinline))
#define LRSCHED_FUSED_INLINE_AVX512 __attribute__((LRSCHED_FUSED_AVX512_ISA, always_inline)) inline

// GCC 12 warns that its own AVX-512 headers read an uninitialized value (the
// "undefined" source of a masked intrinsic): not ours, silenced here only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// A map as four planes of bytes (byte k of every value), for the AVX-512
// dequantize: two 128-entry byte permutes per plane read 64 values' bytes.
struct MapPlanes {
  alignas(64) uint8_t plane[4][states_8bit::kCodes];

  explicit MapPlanes(const float* map) {
    for (int code = 0; code < states_8bit::kCodes; ++code) {
      uint32_t bits;
      std::memcpy(&bits, &map[code], sizeof(bits));
      for (int k = 0; k < 4; ++k) {
        plane[k][code] = static_cast<uint8_t>(bits >> (8 * k));
      }
    }
  }
};

const MapPlanes& map_planes(MapKind kind) {
  static const MapPlanes signed_planes(states_8bit::kSignedMap);
  static const MapPlanes unsigned_planes(states_8bit::kUnsignedMap);
  return kind == MapKind::Signed ? signed_planes : unsigned_planes;
}

// After the byte then word interleaves below, output r (0..3) holds in
// 128-bit lane l, position p, the value the reordered codes have at
// l * 16 + 4 * r + p: that must be element 16 * r + 4 * l + p.
constexpr std::array<uint8_t, 64> interleave_order() {
  std::array<uint8_t, 64> order{};
  for (int l = 0; l < 4; ++l) {
    for (int r = 0; r < 4; ++r) {
      for (int p = 0; p < 4; ++p) {
        order[l * 16 + 4 * r + p] = static_cast<uint8_t>(16 * r + 4 * l + p);
      }
    }
  }
  return order;
}
alignas(64) constexpr std::array<uint8_t, 64> kInterleaveOrder = interleave_order();

// The AVX-512 decoding: a map's planes in registers, and the reorder.
struct Avx512Decoder {
  __m512i quarter[4][4];  // [plane][codes 64 * q ...]
  __m512i reorder;

  LRSCHED_FUSED_INLINE_AVX512 void load(MapKind kind) {
    const MapPlanes& planes = map_planes(kind);
    for (int k = 0; k < 4; ++k) {
      for (int q = 0; q < 4; ++q) {
        quarter[k][q] = _mm512_load_si512(planes.plane[k] + 64 * q);
      }
    }
    reorder = _mm512_load_si512(kInterleaveOrder.data());
  }

  // 64 values: each plane's bytes by the codes (bit 7 picks the half), then
  // the planes interleaved into floats. The interleave works in 128-bit
  // lanes, so the codes are first put in the order it undoes.
  LRSCHED_FUSED_INLINE_AVX512 void decode64(const uint8_t* codes, __m512 scale, float* out) const {
    const __m512i code = _mm512_permutexvar_epi8(reorder, _mm512_loadu_si512(codes));
    const __mmask64 top = _mm512_movepi8_mask(code);
    __m512i byte[4];
    for (int k = 0; k < 4; ++k) {
      byte[k] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(quarter[k][0], code, quarter[k][1]),
                                       _mm512_permutex2var_epi8(quarter[k][2], code, quarter[k][3]));
    }
    const __m512i low01 = _mm512_unpacklo_epi8(byte[0], byte[1]);
    const __m512i high01 = _mm512_unpackhi_epi8(byte[0], byte[1]);
    const __m512i low23 = _mm512_unpacklo_epi8(byte[2], byte[3]);
    const __m512i high23 = _mm512_unpackhi_epi8(byte[2], byte[3]);
    const __m512i words[4] = {_mm512_unpacklo_epi16(low01, low23), _mm512_unpackhi_epi16(low01, low23),
                              _mm512_unpacklo_epi16(high01, high23), _mm512_unpackhi_epi16(high01, high23)};
    for (int r = 0; r < 4; ++r) {
      _mm512_storeu_ps(out + 16 * r, _mm512_mul_ps(_mm512_castsi512_ps(words[r]), scale));
    }
  }
};

LRSCHED_FUSED_TARGET_AVX512 void dequantize_avx512(const uint8_t* codes, MapKind kind, float absmax, float* out,
                                                   int64_t n) {
  Avx512Decoder decoder;
  decoder.load(kind);
  const __m512 scale = _mm512_set1_ps(absmax);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    decoder.decode64(codes + i, scale, out + i);
  }
  dequantize_avx2(codes + i, states_8bit::host_map(kind), absmax, out + i, n - i);
}

// SearchTable::code of 16 values with one gather of their entries, by the
// values' top 16 bits (NOTE: [8-bit search table]).
LRSCHED_FUSED_INLINE_AVX512 void code16_avx512(const float* values, __m512 inverse, const int* entry,
                                               uint8_t* codes) {
  // normalized(): value * (1 / absmax), 0 for a NaN (fixupimm's token per
  // class of its input: QNaN and SNaN, the low two nibbles, become +0, token
  // 8; the rest keeps x, token 0)
  __m512 x = _mm512_mul_ps(_mm512_loadu_ps(values), inverse);
  x = _mm512_fixupimm_ps(x, x, _mm512_set1_epi32(0x88), 0);
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i found = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), entry, 4);
  // one more where x's low bits pass the bound, read the other way for a negative x
  const __mmask16 past = _mm512_cmpgt_epu32_mask(_mm512_slli_epi32(bits, 16), found);
  const __mmask16 up = _kxor_mask16(past, _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512()));
  const __m512i code = _mm512_mask_add_epi32(found, up, found, _mm512_set1_epi32(1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(code));  // the low bytes
}

LRSCHED_FUSED_TARGET_AVX512 void quantize_avx512(const float* values, float absmax, const SearchTable& table,
                                                 uint8_t* codes, int64_t n) {
  const __m512 inverse = _mm512_set1_ps(states_8bit::inverse_scale(absmax));
  const int* entry = reinterpret_cast<const int*>(table.entry());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    code16_avx512(values + i, inverse, entry, codes + i);
  }
  quantize_avx2(values + i, absmax, table, codes + i, n - i);
}
#pragma GCC diagnostic pop
#endif

void dequantize(CodingIsa isa, const uint8_t* codes, MapKind kind, float absmax, float* out, int64_t n) {
#if defined(LRSCHED_FUSED_AVX2_CLONE)
  if (isa == CodingIsa::Avx512) {
    dequantize_avx512(codes, kind, absmax, out, n);
    return;
  }
  if (isa == CodingIsa::Avx2) {
    dequantize_avx2(codes, states_8bit::host_map(kind), absmax, out, n);
    return;
  }
#endif
  dequantize_scalar(codes, states_8bit::host_map(kind), absmax, out, n);
}

void quantize(CodingIsa isa, const float* values, float absmax, MapKind kind, uint8_t* codes, int64_t n) {
  const SearchTable& table = search_table(kind);
#if defined(LRSCHED_FUSED_AVX2_CLONE)
  if (isa == CodingIsa::Avx512) {
    quantize_avx512(values, absmax, table, codes, n);
    return;
  }
  if (isa == CodingIsa::Avx2) {
    quantize_avx2(values, absmax, table, codes, n);
    return;
  }
#endif
  quantize_scalar(values, absmax, table, codes, n);
}

// A piece's coded states: codes and absmax from its first block on.
template <int kStates>
struct CodedPiece {
  std::array<uint8_t*, kStates> codes;
  std::array<float*, kStates> absmax;
};

// The blocks of a piece of n elements (the first at a block's start).
template <typename scalar_t, bool kMaster, bool kRound, typename Rule>
struct CodedElements {
  static constexpr int kStates = Rule::kStates;
  using Values = typename Rule::Values;
  using Block = float[kStates][kBlock];  // a block's state values, as float32
  // NOTE: [8-bit pipelined blocks]. Not SGD's: GCC 12 leaves its update
  // (selects on nesterov and the first step) scalar in the AVX-512 target,
  // measured 2x slower than the block-by-block loop, whose AVX2 update it
  // vectorizes.
  static constexpr bool kPipelined = !std::is_same_v<Rule, states_8bit::SgdRule>;

  static LRSCHED_FUSED_ALWAYS_INLINE void run(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                              float* __restrict__ master, const CodedPiece<kStates>& coded,
                                              int64_t n, const Values& values, const PieceRounding& rounding,
                                              CodingIsa isa) {
    const std::array<bool, 2> flags{Rule::grad(values).unscale, Rule::grad(values).clip};
    run_pinned<CodedElements>(flags, param, grad, master, coded, n, values, rounding, isa);
  }

  // Rule's update of elements [begin, end) of the piece, whose block starts
  // at `start` and has its state values in `block` (read, then written back).
  template <bool kUnscale>
  static LRSCHED_FUSED_ALWAYS_INLINE void update(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                                 float* __restrict__ master, Block& __restrict__ block,
                                                 int64_t start, int64_t begin, int64_t end, const Values& c,
                                                 const PieceRounding& rounding) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t i = e - start;
      float p = kMaster ? master[e] : static_cast<float>(param[e]);
      float g = static_cast<float>(grad[e]);
      float s[kStates];
      for (int k = 0; k < kStates; ++k) {
        s[k] = block[k][i];
      }
      Rule::template update<scalar_t>(p, g, s, c);
      const PhiloxWords bits = element_words<kRound>(rounding.stream, rounding.first_index, e);
      store_param<scalar_t, kMaster, kRound>(param, master, e, p, bits.w[0]);
      for (int k = 0; k < kStates; ++k) {
        block[k][i] = s[k];
      }
      if constexpr (kUnscale) {
        grad[e] = to_storage<scalar_t>(g);
      }
    }
  }

  // The largest magnitude of count state values (a block's new absmax).
  static LRSCHED_FUSED_ALWAYS_INLINE float block_absmax(const float* values, int64_t count) {
    uint32_t peak = 0;
    for (int64_t i = 0; i < count; ++i) {
      peak = std::max(peak, states_8bit::magnitude_bits(values[i]));
    }
    return states_8bit::from_bits(peak);
  }

  template <bool kUnscale, bool kClip>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                               float* __restrict__ master, const CodedPiece<kStates>& coded,
                                               int64_t n, const Values& values, const PieceRounding& rounding,
                                               CodingIsa isa) {
    Values c = values;  // a local copy: the stores cannot alias it
    Rule::grad(c).clip = kClip;
    int64_t start = 0;
#if defined(LRSCHED_FUSED_AVX2_CLONE)
    if (isa == CodingIsa::Avx512 && kPipelined) {
      start = pipelined_avx512<kUnscale>(param, grad, master, coded, n, c, rounding);
    }
#endif
    alignas(64) Block block;
    for (; start < n; start += kBlock) {
      const int64_t count = std::min<int64_t>(kBlock, n - start);
      const int64_t b = start / kBlock;
      for (int k = 0; k < kStates; ++k) {
        dequantize(isa, coded.codes[k] + start, Rule::map(k), coded.absmax[k][b], block[k], count);
      }
      update<kUnscale>(param, grad, master, block, start, start, start + count, c, rounding);
      for (int k = 0; k < kStates; ++k) {
        const float absmax = block_absmax(block[k], count);
        coded.absmax[k][b] = absmax;
        quantize(isa, block[k], absmax, Rule::map(k), coded.codes[k] + start, count);
      }
    }
  }

#if defined(LRSCHED_FUSED_AVX2_CLONE)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  // NOTE: [8-bit pipelined blocks]
  // The update is bound by its divisions and square root (one unit, which
  // takes no new one for several cycles), the coding by its gathers and
  // byte permutes (other units): run one after the other per block, they
  // add. Here they run side by side: 16 elements of block b are updated,
  // then 16 values of block b - 1 (whose absmax is known) are coded, and
  // every 4th time 64 of block b + 1 decoded, so the processor finds both
  // kinds of work within its window. The same update (update()), the same
  // coding (SearchTable's entries) and the same decoding as the block-by-
  // block loop, so the same bits (a test compares the AVX-512 run with the
  // baseline one). The piece's whole blocks only; returns where they end.
  template <bool kUnscale>
  static __attribute__((LRSCHED_FUSED_AVX512_ISA, noinline)) int64_t pipelined_avx512(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, float* __restrict__ master,
      const CodedPiece<kStates>& coded, int64_t n, const Values& values, const PieceRounding& rounding) {
    constexpr int64_t kChunk = 16;
    const Values c = values;  // a local copy: the stores cannot alias it
    const int64_t blocks = n / kBlock;
    if (blocks < 2) {
      return 0;
    }
    std::array<const int*, kStates> entry;
    std::array<Avx512Decoder, kStates> decoder;
    for (int k = 0; k < kStates; ++k) {
      decoder[k].load(Rule::map(k));
      entry[k] = reinterpret_cast<const int*>(search_table(Rule::map(k)).entry());
    }
    alignas(64) Block ring[3];  // blocks b - 1, b, b + 1 in turn
    for (int k = 0; k < kStates; ++k) {
      const __m512 scale = _mm512_set1_ps(coded.absmax[k][0]);
      for (int64_t i = 0; i < kBlock; i += 64) {
        decoder[k].decode64(coded.codes[k] + i, scale, ring[0][k] + i);
      }
    }
    __m512 inverse[kStates] = {};  // block b - 1's
    for (int64_t b = 0; b <= blocks; ++b) {
      Block& current = ring[b % 3];
      Block& previous = ring[(b + 2) % 3];
      Block& next = ring[(b + 1) % 3];
      const int64_t start = b * kBlock;
      const bool coding = b > 0;
      const bool decoding = b + 1 < blocks;
      __m512 scale[kStates];  // block b + 1's
      for (int k = 0; k < kStates; ++k) {
        scale[k] = _mm512_set1_ps(decoding ? coded.absmax[k][b + 1] : 0.0f);
      }
      for (int64_t i = 0; i < kBlock; i += kChunk) {
        if (b < blocks) {
          update<kUnscale>(param, grad, master, current, start, start + i, start + i + kChunk, c, rounding);
        }
        if (coding) {
          for (int k = 0; k < kStates; ++k) {
            code16_avx512(previous[k] + i, inverse[k], entry[k], coded.codes[k] + start - kBlock + i);
          }
        }
        if (decoding && i % 64 == 0) {
          for (int k = 0; k < kStates; ++k) {
            decoder[k].decode64(coded.codes[k] + start + kBlock + i, scale[k], next[k] + i);
          }
        }
      }
      if (b < blocks) {
        for (int k = 0; k < kStates; ++k) {
          const float absmax = block_absmax(current[k], kBlock);
          coded.absmax[k][b] = absmax;
          inverse[k] = _mm512_set1_ps(states_8bit::inverse_scale(absmax));
        }
      }
    }
    return blocks * kBlock;
  }
#pragma GCC diagnostic pop
#endif
};

// Runs Rule over every tensor of the call, in parallel over whole blocks:
// `coded` and `absmax` are its coded slots in Rule's order; each tensor's
// Values are made from its step count before this step (0 without counters),
// which advances first.
template <typename Rule, typename Op>
void run_coded(const UpdateCall<Op>& call, const std::array<at::TensorList, Rule::kStates>& coded,
               const std::array<at::TensorList, Rule::kStates>& absmax, bool nesterov) {
  const GradOptions<float> grad = grad_options<float>(call);
  const double* schedule_state = call.schedule_state.template const_data_ptr<double>();
  std::vector<typename Rule::Values> values;
  values.reserve(call.params.size());
  for (size_t t = 0; t < call.params.size(); ++t) {
    double step_before = 0.0;
    if (!call.slots[Op::kStep].empty()) {
      double& count = *call.slots[Op::kStep][t].template mutable_data_ptr<double>();
      step_before = count;
      count += 1;
    }
    values.push_back(Rule::make(schedule_state, call.group_index, grad, step_before, nesterov));
  }
  std::vector<int64_t> blocks;
  blocks.reserve(call.params.size());
  for (const at::Tensor& p : call.params) {
    blocks.push_back(states_8bit::num_blocks(p.numel()));
  }
  const ElementSpace space(blocks);
  const CodingIsa isa = coding_isa();
  const bool avx2 = isa != CodingIsa::Baseline;
  const std::vector<RoundingStream> streams = rounding_streams(call);
  std::array<std::vector<uint8_t*>, Rule::kStates> code_data;
  std::array<std::vector<float*>, Rule::kStates> absmax_data;
  for (int k = 0; k < Rule::kStates; ++k) {
    code_data[k] = data_pointers<uint8_t>(coded[k]);
    absmax_data[k] = data_pointers<float>(absmax[k]);
  }
  const auto master_data = data_pointers<float>(call.slots[Op::kMasterParam]);
  dispatch_update_types(call.params[0].scalar_type(), at::kFloat, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto, auto master_flag) {
    using scalar_t = decltype(scalar);
    if constexpr (!std::is_same_v<scalar_t, double>) {  // refused by the op's checks
      constexpr bool kMaster = decltype(master_flag)::value;
      const auto param_data = data_pointers<scalar_t>(call.params);
      const auto grad_data = data_pointers<scalar_t>(call.grads);
      with_rounding<scalar_t, float, kMaster>(call.has(Op::kStochasticRounding), [&](auto round_flag) {
        using Elements = CodedElements<scalar_t, kMaster, decltype(round_flag)::value, Rule>;
        for_each_piece_in_parallel(
            space,
            [&](size_t t, int64_t first_block, int64_t end_block) {
              const int64_t begin = first_block * kBlock;
              const int64_t end = std::min(end_block * kBlock, call.params[t].numel());
              CodedPiece<Rule::kStates> piece;
              for (int k = 0; k < Rule::kStates; ++k) {
                piece.codes[k] = code_data[k][t] + begin;
                piece.absmax[k] = absmax_data[k][t] + first_block;
              }
              run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin,
                                     offset_or_null(master_data, t, begin), piece, end - begin, values[t],
                                     piece_rounding(streams, call.element_offsets, t, begin), isa);
            },
            kBlockElements / kBlock, kSerialElements / kBlock);
      });
    }
  });
}

}  // namespace

CodingIsa coding_isa() {
  if (use_avx512_vbmi()) {
    return CodingIsa::Avx512;
  }
  return use_avx2() ? CodingIsa::Avx2 : CodingIsa::Baseline;
}

bool code_values(CodingIsa isa, const float* values, float absmax, MapKind kind, uint8_t* codes, int64_t n) {
#if defined(LRSCHED_FUSED_AVX2_CLONE)
  const bool avx2 = __builtin_cpu_supports("avx2");
#else
  const bool avx2 = false;
#endif
  const bool runs = isa == CodingIsa::Baseline || (isa == CodingIsa::Avx2 && avx2) ||
                    (isa == CodingIsa::Avx512 && cpu_has_avx512_vbmi());
  if (runs) {
    quantize(isa, values, absmax, kind, codes, n);
  }
  return runs;
}

void run_step_8bit(const UpdateCall<AdamStepOp>& call) {
  using Op = AdamStepOp;
  const std::array<at::TensorList, 2> coded{call.slots[Op::kExpAvg], call.slots[Op::kExpAvgSq]};
  const std::array<at::TensorList, 2> absmax{call.slots[Op::kExpAvgAbsmax], call.slots[Op::kExpAvgSqAbsmax]};
  with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
    run_coded<states_8bit::AdamRule<decltype(decoupled_flag)::value>>(call, coded, absmax, false);
  });
}

void run_step_8bit(const UpdateCall<SgdStepOp>& call) {
  using Op = SgdStepOp;  // 8-bit states need momentum: the step counters are there
  run_coded<states_8bit::SgdRule>(call, {call.slots[Op::kMomentumBuffer]}, {call.slots[Op::kMomentumBufferAbsmax]},
                                  call.has(Op::kNesterov));
}

void run_step_8bit(const UpdateCall<LionStepOp>& call) {
  using Op = LionStepOp;  // a step counter only with stochastic rounding (its bits' counter)
  run_coded<states_8bit::LionRule>(call, {call.slots[Op::kExpAvg]}, {call.slots[Op::kExpAvgAbsmax]}, false);
}

}  // namespace cpu
}  // namespace lrsched_fused
