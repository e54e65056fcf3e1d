#pragma once
// What the CPU update loops share (csrc/cpu/fused_step_cpu.cpp, and with
// 8-bit states csrc/cpu/states_8bit_cpu.cpp): the stores of the new values
// (stochastic rounding, master weights) and what a call reads once (the
// GradScaler's scale, clipping's coefficient, the rounding streams).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "../schedule_math.h"
#include "../stochastic_rounding.h"
#include "../update_math.h"
#include "cpu_loops.h"

namespace lrsched_fused {
namespace cpu {

// Where the random bits of a piece's elements come from (NOTE: [stochastic
// rounding]): the tensor's stream and the piece's first element's global index.
struct PieceRounding {
  RoundingStream stream;
  uint64_t first_index;
};

// opmath_t -> T for a store: stochastically with the word `random` when kRound
// and T is 16-bit (NOTE: [stochastic rounding]), else to nearest.
template <typename T, bool kRound, typename opmath_t>
LRSCHED_FUSED_ALWAYS_INLINE T store_as(opmath_t value, uint32_t random) {
  if constexpr (kRound && is_16_bit_float_v<T>) {
    return round_stochastic<T>(static_cast<float>(value), random);
  } else {
    return to_storage<T>(value);
  }
}

// Calls f(std::bool_constant<round>{}), with round false where the types
// store nothing that stochastic rounding rounds (no loop is compiled for it).
template <typename scalar_t, typename state_t, bool kMaster, typename F>
void with_rounding(bool round, const F& f) {
  if constexpr (kHasRoundedStores<scalar_t, state_t, kMaster>) {
    with_bool(round, f);
  } else {
    f(std::false_type{});
  }
}

// Element i's Philox words (NOTE: [stochastic rounding]); none without kRound.
template <bool kRound>
LRSCHED_FUSED_ALWAYS_INLINE PhiloxWords element_words(const RoundingStream& stream, uint64_t first_index,
                                                      int64_t i) {
  PhiloxWords bits{};
  if constexpr (kRound) {
    bits = rounding_words(stream, first_index + static_cast<uint64_t>(i));
  }
  return bits;
}

// Stores element i's new value p: with kMaster in the master, and the param
// rounded to nearest (NOTE: [master weights]); else the param, rounded with
// word `random` when kRound (store_as).
template <typename scalar_t, bool kMaster, bool kRound, typename opmath_t>
LRSCHED_FUSED_ALWAYS_INLINE void store_param(scalar_t* __restrict__ param, float* __restrict__ master, int64_t i,
                                             opmath_t p, uint32_t random) {
  if constexpr (kMaster) {
    master[i] = static_cast<float>(p);
    param[i] = to_storage<scalar_t>(p);
  } else {
    param[i] = store_as<scalar_t, kRound>(p, random);
  }
}

// The GradScaler's scale and clipping's coefficient of a call, read once.
template <typename opmath_t, typename Op>
GradOptions<opmath_t> grad_options(const UpdateCall<Op>& call) {
  return make_grad_options<opmath_t>(call.has(Op::kMaximize), call.grad_scale.has_value(),
                                     call.grad_scale.has_value() ? read_double(*call.grad_scale) : 1.0,
                                     call.clip_coef.has_value(),
                                     call.clip_coef.has_value() ? read_double(*call.clip_coef) : 1.0);
}

// Each tensor's stream of random bits this step (NOTE: [stochastic rounding]);
// `steps` are the counters after this step's increment. Empty without the flag.
template <typename Op>
std::vector<RoundingStream> rounding_streams(const UpdateCall<Op>& call) {
  std::vector<RoundingStream> streams;
  if (!call.has(Op::kStochasticRounding)) {
    return streams;
  }
  const uint64_t seed =
      static_cast<uint64_t>(call.schedule_state.template const_data_ptr<double>()[layout::kRoundingSeed]);
  for (const at::Tensor& step : call.slots[Op::kStep]) {
    streams.push_back({seed, static_cast<uint32_t>(static_cast<uint64_t>(*step.const_data_ptr<double>()))});
  }
  return streams;
}

// The piece's rounding: its tensor's stream and its first element's global index.
inline PieceRounding piece_rounding(const std::vector<RoundingStream>& streams, c10::ArrayRef<int64_t> offsets,
                                    size_t t, int64_t begin) {
  if (streams.empty()) {
    return {};
  }
  return {streams[t], static_cast<uint64_t>(offsets[t] + begin)};
}

}  // namespace cpu
}  // namespace lrsched_fused
