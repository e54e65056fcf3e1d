// CPU kernels of adam_step_, sgd_step_ and lion_step_ with 8-bit states
// (NOTE: [8-bit states] in csrc/states_8bit.h): per block of 256 elements,
// the codes are read into float32 (an L1-resident buffer), the update of
// update_math.h runs over the block (the loop GCC vectorizes, as the
// float states' loops), the block's new absmax is the buffer's largest
// magnitude, and the buffer is coded back against it. The work is split over
// threads in whole blocks (NOTE: [CPU work split]); reading and writing codes
// go through AVX2 gathers where the AVX2 loops run, through byte permutes and
// one gather per 16 values where the AVX-512 ones do (NOTE: [8-bit search
// table], use_avx512_vbmi in csrc/cpu/cpu_loops.h).
#include "states_8bit_cpu.h"

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
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

#define LRSCHED_FUSED_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"), noinline))

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

// 64 values at a time: each plane's bytes by the codes (bit 7 picks the
// half), then the planes interleaved into floats. The interleave works in
// 128-bit lanes, so the codes are first put in the order it undoes.
LRSCHED_FUSED_TARGET_AVX512 void dequantize_avx512(const uint8_t* codes, MapKind kind, float absmax, float* out,
                                                   int64_t n) {
  const MapPlanes& planes = map_planes(kind);
  __m512i quarter[4][4];  // [plane][codes 64 * q ...]
  for (int k = 0; k < 4; ++k) {
    for (int q = 0; q < 4; ++q) {
      quarter[k][q] = _mm512_load_si512(planes.plane[k] + 64 * q);
    }
  }
  const __m512i reorder = _mm512_load_si512(kInterleaveOrder.data());
  const __m512 scale = _mm512_set1_ps(absmax);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i code = _mm512_permutexvar_epi8(reorder, _mm512_loadu_si512(codes + i));
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
      _mm512_storeu_ps(out + i + 16 * r, _mm512_mul_ps(_mm512_castsi512_ps(words[r]), scale));
    }
  }
  dequantize_avx2(codes + i, states_8bit::host_map(kind), absmax, out + i, n - i);
}

// SearchTable::code with one gather of 16 entries, by the values' top 16
// bits (NOTE: [8-bit search table]).
LRSCHED_FUSED_TARGET_AVX512 void quantize_avx512(const float* values, float absmax, const SearchTable& table,
                                                 uint8_t* codes, int64_t n) {
  const __m512 inverse = _mm512_set1_ps(states_8bit::inverse_scale(absmax));
  // fixupimm's token per class of its input: QNaN and SNaN (the low two
  // nibbles) become +0 (token 8), the rest keeps x (token 0).
  const __m512i nan_to_zero = _mm512_set1_epi32(0x88);
  const __m512i one = _mm512_set1_epi32(1);
  const int* entry = reinterpret_cast<const int*>(table.entry());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // normalized(): value * (1 / absmax), 0 for a NaN
    __m512 x = _mm512_mul_ps(_mm512_loadu_ps(values + i), inverse);
    x = _mm512_fixupimm_ps(x, x, nan_to_zero, 0);
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i found = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), entry, 4);
    // one more where x's low bits pass the bound, read the other way for a negative x
    const __mmask16 past = _mm512_cmpgt_epu32_mask(_mm512_slli_epi32(bits, 16), found);
    const __mmask16 up = _kxor_mask16(past, _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512()));
    const __m512i code = _mm512_mask_add_epi32(found, up, found, one);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(code));  // the low bytes
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

  static LRSCHED_FUSED_ALWAYS_INLINE void run(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                              float* __restrict__ master, const CodedPiece<kStates>& coded,
                                              int64_t n, const Values& values, const PieceRounding& rounding,
                                              CodingIsa isa) {
    const std::array<bool, 2> flags{Rule::grad(values).unscale, Rule::grad(values).clip};
    run_pinned<CodedElements>(flags, param, grad, master, coded, n, values, rounding, isa);
  }

  template <bool kUnscale, bool kClip>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                               float* __restrict__ master, const CodedPiece<kStates>& coded,
                                               int64_t n, const Values& values, const PieceRounding& rounding,
                                               CodingIsa isa) {
    Values c = values;  // a local copy: the stores cannot alias it
    Rule::grad(c).clip = kClip;
    const RoundingStream stream = rounding.stream;
    const uint64_t first_index = rounding.first_index;
    alignas(64) float block[kStates][kBlock];
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t count = std::min<int64_t>(kBlock, n - start);
      const int64_t b = start / kBlock;
      for (int k = 0; k < kStates; ++k) {
        dequantize(isa, coded.codes[k] + start, Rule::map(k), coded.absmax[k][b], block[k], count);
      }
      scalar_t* __restrict__ block_param = param + start;
      scalar_t* __restrict__ block_grad = grad + start;
      float* __restrict__ block_master = kMaster ? master + start : nullptr;
      for (int64_t i = 0; i < count; ++i) {
        float p = kMaster ? block_master[i] : static_cast<float>(block_param[i]);
        float g = static_cast<float>(block_grad[i]);
        float s[kStates];
        for (int k = 0; k < kStates; ++k) {
          s[k] = block[k][i];
        }
        Rule::template update<scalar_t>(p, g, s, c);
        const PhiloxWords bits = element_words<kRound>(stream, first_index, start + i);
        store_param<scalar_t, kMaster, kRound>(block_param, block_master, i, p, bits.w[0]);
        for (int k = 0; k < kStates; ++k) {
          block[k][i] = s[k];
        }
        if constexpr (kUnscale) {
          block_grad[i] = to_storage<scalar_t>(g);
        }
      }
      for (int k = 0; k < kStates; ++k) {
        uint32_t peak = 0;
        for (int64_t i = 0; i < count; ++i) {
          peak = std::max(peak, states_8bit::magnitude_bits(block[k][i]));
        }
        const float absmax = states_8bit::from_bits(peak);
        coded.absmax[k][b] = absmax;
        quantize(isa, block[k], absmax, Rule::map(k), coded.codes[k] + start, count);
      }
    }
  }
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
