// CPU kernels of adam_step_, sgd_step_, lion_step_ and schedule_step_: one parallel pass over the
// elements of all tensors of a call (NOTE: [CPU work split], NOTE: [CPU instruction
// sets] in cpu_loops.h); with 8-bit states, csrc/cpu/states_8bit_cpu.cpp's loops.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "../dispatch.h"
#include "../op_checks.h"
#include "../schedule_math.h"
#include "../stochastic_rounding.h"
#include "../update_math.h"
#include "../update_ops.h"
#include "cpu_loops.h"
#include "states_8bit_cpu.h"
#include "update_elements.h"

namespace lrsched_fused {
namespace {

using namespace cpu;  // NOLINT: the loop machinery of cpu_loops.h

// n consecutive elements of one tensor: the loop each instruction set compiles.
// scalar_t: the param's and grad's storage; state_t: the states'; with
// kMaster (NOTE: [master weights]) `master` (float) holds the value the update
// runs on and the param receives it rounded to nearest.
template <typename scalar_t, typename state_t, bool kMaster, bool kAmsgrad, bool kDecoupled, bool kRound>
struct AdamElements {
  using opmath_t = at::opmath_type<scalar_t>;
  using second_t = second_moment_type<scalar_t, state_t, kMaster>;  // NOTE: [float16 second moments]
  // The loop for each combination of a GradScaler's unscale (a conditional
  // store) and clipping (NOTE: [CPU loop specialization]).
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      second_t* __restrict__ exp_avg_sq, second_t* __restrict__ max_exp_avg_sq, float* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& c, const PieceRounding& rounding) {
    const std::array<bool, 2> flags{c.grad.unscale, c.grad.clip};
    run_pinned<AdamElements>(flags, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master, n, c, rounding);
  }

  template <bool kUnscale, bool kClip>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      second_t* __restrict__ exp_avg_sq, second_t* __restrict__ max_exp_avg_sq, float* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& coefficients, const PieceRounding& rounding) {
    AdamCoefficients<opmath_t> c = coefficients;  // a local copy: the stores cannot alias it
    c.grad.clip = kClip;
    const RoundingStream stream = rounding.stream;
    const uint64_t first_index = rounding.first_index;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t m = exp_avg[i];
      opmath_t v = exp_avg_sq[i];
      opmath_t v_max = kAmsgrad ? opmath_t(max_exp_avg_sq[i]) : opmath_t(0);
      adam_update<opmath_t, kAmsgrad, kDecoupled, scalar_t>(p, g, m, v, v_max, c);
      const PhiloxWords bits = element_words<kRound>(stream, first_index, i);
      store_param<scalar_t, kMaster, kRound>(param, master, i, p, bits.w[0]);
      exp_avg[i] = store_as<state_t, kRound>(m, bits.w[1]);
      exp_avg_sq[i] = store_as<second_t, kRound>(v, bits.w[2]);
      if constexpr (kAmsgrad) {
        max_exp_avg_sq[i] = store_as<second_t, kRound>(v_max, bits.w[3]);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

template <typename scalar_t, typename state_t, bool kMaster, bool kMomentum, bool kRound>
struct SgdElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ momentum_buffer,
      float* __restrict__ master, int64_t n, bool first_step, const SgdCoefficients<opmath_t>& c,
      const PieceRounding& rounding) {
    const std::array<bool, 2> flags{c.grad.unscale, c.grad.clip};
    run_pinned<SgdElements>(flags, param, grad, momentum_buffer, master, n, first_step, c, rounding);
  }

  template <bool kUnscale, bool kClip>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ momentum_buffer,
      float* __restrict__ master, int64_t n, bool first_step, const SgdCoefficients<opmath_t>& coefficients,
      const PieceRounding& rounding) {
    SgdCoefficients<opmath_t> c = coefficients;  // a local copy: the stores cannot alias it
    c.grad.clip = kClip;
    const RoundingStream stream = rounding.stream;
    const uint64_t first_index = rounding.first_index;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t b = kMomentum ? opmath_t(momentum_buffer[i]) : opmath_t(0);
      sgd_update<opmath_t, kMomentum, scalar_t>(p, g, b, opmath_t(first_step), c);
      const PhiloxWords bits = element_words<kRound>(stream, first_index, i);
      store_param<scalar_t, kMaster, kRound>(param, master, i, p, bits.w[0]);
      if constexpr (kMomentum) {
        momentum_buffer[i] = store_as<state_t, kRound>(b, bits.w[1]);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

template <typename scalar_t, typename state_t, bool kMaster, bool kRound>
struct LionElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      float* __restrict__ master, int64_t n, const LionCoefficients<opmath_t>& c, const PieceRounding& rounding) {
    const std::array<bool, 2> flags{c.grad.unscale, c.grad.clip};
    run_pinned<LionElements>(flags, param, grad, exp_avg, master, n, c, rounding);
  }

  template <bool kUnscale, bool kClip>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      float* __restrict__ master, int64_t n, const LionCoefficients<opmath_t>& coefficients,
      const PieceRounding& rounding) {
    LionCoefficients<opmath_t> c = coefficients;  // a local copy: the stores cannot alias it
    c.grad.clip = kClip;
    const RoundingStream stream = rounding.stream;
    const uint64_t first_index = rounding.first_index;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t m = exp_avg[i];
      lion_update<opmath_t, scalar_t>(p, g, m, c);
      const PhiloxWords bits = element_words<kRound>(stream, first_index, i);
      store_param<scalar_t, kMaster, kRound>(param, master, i, p, bits.w[0]);
      exp_avg[i] = store_as<state_t, kRound>(m, bits.w[1]);
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

void run_step(const UpdateCall<AdamStepOp>& call) {
  using Op = AdamStepOp;
  const AdamGroupValues group = adam_group_values(call.schedule_state.const_data_ptr<double>(), call.group_index);
  const ElementSpace space(call.params);
  const bool avx2 = use_avx2();
  const bool round = call.has(Op::kStochasticRounding);
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    constexpr bool kMaster = decltype(master_flag)::value;
    using opmath_t = at::opmath_type<scalar_t>;
    const GradOptions<opmath_t> grad = grad_options<opmath_t>(call);
    std::vector<AdamCoefficients<opmath_t>> coefficients;
    coefficients.reserve(call.params.size());
    for (const at::Tensor& step : call.slots[Op::kStep]) {
      double& count = *step.mutable_data_ptr<double>();
      count += 1;
      coefficients.push_back(make_adam_coefficients<opmath_t>(group, grad, adam_step_terms(group, count)));
    }
    const std::vector<RoundingStream> streams = rounding_streams(call);
    const auto param_data = data_pointers<scalar_t>(call.params);
    const auto grad_data = data_pointers<scalar_t>(call.grads);
    const auto exp_avg_data = data_pointers<state_t>(call.slots[Op::kExpAvg]);
    using second_t = second_moment_type<scalar_t, state_t, kMaster>;
    const auto exp_avg_sq_data = data_pointers<second_t>(call.slots[Op::kExpAvgSq]);
    const auto max_exp_avg_sq_data = data_pointers<second_t>(call.slots[Op::kMaxExpAvgSq]);
    const auto master_data = data_pointers<float>(call.slots[Op::kMasterParam]);
    with_rounding<scalar_t, state_t, kMaster>(round, [&](auto round_flag) {
      with_bool(call.has(Op::kAmsgrad), [&](auto amsgrad_flag) {
        with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
          using Elements = AdamElements<scalar_t, state_t, kMaster, decltype(amsgrad_flag)::value,
                                        decltype(decoupled_flag)::value, decltype(round_flag)::value>;
          for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
            run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin, exp_avg_data[t] + begin,
                                   exp_avg_sq_data[t] + begin, offset_or_null(max_exp_avg_sq_data, t, begin),
                                   offset_or_null(master_data, t, begin), end - begin, coefficients[t],
                                   piece_rounding(streams, call.element_offsets, t, begin));
          });
        });
      });
    });
  });
}

void run_step(const UpdateCall<SgdStepOp>& call) {
  using Op = SgdStepOp;
  const bool has_momentum = call.has(Op::kMomentum);
  const SgdGroupValues group = sgd_group_values(call.schedule_state.const_data_ptr<double>(), call.group_index);
  const ElementSpace space(call.params);
  const bool avx2 = use_avx2();
  const bool round = call.has(Op::kStochasticRounding);
  // A momentum buffer has no history while its step counter is 0 (every
  // earlier step was skipped, or none ran): it then becomes the gradient.
  std::vector<char> is_first(call.params.size(), 0);
  for (size_t i = 0; i < call.slots[Op::kStep].size(); ++i) {
    double& count = *call.slots[Op::kStep][i].mutable_data_ptr<double>();
    is_first[i] = has_momentum && count == 0.0;
    count += 1;
  }
  const std::vector<RoundingStream> streams = rounding_streams(call);
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    constexpr bool kMaster = decltype(master_flag)::value;
    using opmath_t = at::opmath_type<scalar_t>;
    const SgdCoefficients<opmath_t> c =
        make_sgd_coefficients<opmath_t>(group, call.has(Op::kNesterov), grad_options<opmath_t>(call));
    const auto param_data = data_pointers<scalar_t>(call.params);
    const auto grad_data = data_pointers<scalar_t>(call.grads);
    const auto buffer_data = data_pointers<state_t>(call.slots[Op::kMomentumBuffer]);
    const auto master_data = data_pointers<float>(call.slots[Op::kMasterParam]);
    with_rounding<scalar_t, state_t, kMaster>(round, [&](auto round_flag) {
      with_bool(has_momentum, [&](auto momentum_flag) {
        using Elements = SgdElements<scalar_t, state_t, kMaster, decltype(momentum_flag)::value,
                                     decltype(round_flag)::value>;
        for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
          run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin,
                                 offset_or_null(buffer_data, t, begin), offset_or_null(master_data, t, begin),
                                 end - begin, is_first[t] != 0, c,
                                 piece_rounding(streams, call.element_offsets, t, begin));
        });
      });
    });
  });
}

void run_step(const UpdateCall<LionStepOp>& call) {
  using Op = LionStepOp;
  const LionGroupValues group = lion_group_values(call.schedule_state.const_data_ptr<double>(), call.group_index);
  const ElementSpace space(call.params);
  const bool avx2 = use_avx2();
  const bool round = call.has(Op::kStochasticRounding);
  for (const at::Tensor& step : call.slots[Op::kStep]) {  // with stochastic rounding: the bits' counter
    *step.mutable_data_ptr<double>() += 1;
  }
  const std::vector<RoundingStream> streams = rounding_streams(call);
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    constexpr bool kMaster = decltype(master_flag)::value;
    using opmath_t = at::opmath_type<scalar_t>;
    const LionCoefficients<opmath_t> c = make_lion_coefficients<opmath_t>(group, grad_options<opmath_t>(call));
    const auto param_data = data_pointers<scalar_t>(call.params);
    const auto grad_data = data_pointers<scalar_t>(call.grads);
    const auto exp_avg_data = data_pointers<state_t>(call.slots[Op::kExpAvg]);
    const auto master_data = data_pointers<float>(call.slots[Op::kMasterParam]);
    with_rounding<scalar_t, state_t, kMaster>(round, [&](auto round_flag) {
      using Elements = LionElements<scalar_t, state_t, kMaster, decltype(round_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin, exp_avg_data[t] + begin,
                               offset_or_null(master_data, t, begin), end - begin, c,
                               piece_rounding(streams, call.element_offsets, t, begin));
      });
    });
  });
}

// The CPU kernel of update op Op (UpdateStepSignature): the shared checks,
// then nothing changes on a step GradScaler skips (found_inf != 0).
template <typename Op>
void update_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList states,
                     const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                     const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                     const std::optional<at::Tensor>& clip_coef, c10::ArrayRef<int64_t> element_offsets) {
  const UpdateCall<Op> call = check_update_call<Op>(params, grads, states, schedule_state, group_index, flags,
                                                    grad_scale, found_inf, clip_coef, element_offsets);
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  if (call.has(Op::kStates8Bit)) {
    run_step_8bit(call);  // csrc/cpu/states_8bit_cpu.cpp
  } else {
    run_step(call);
  }
}

void schedule_step_cpu(
    const at::Tensor& schedule_state, c10::ArrayRef<double> program, const std::optional<at::Tensor>& metric,
    const std::optional<at::Tensor>& skip_if, bool initial) {
  const int64_t groups = num_schedule_groups(schedule_state);
  const Program checked = check_schedule_program(program, metric.has_value() || initial);
  check_scalar_tensor(metric, "metric");
  check_scalar_tensor(skip_if, "skip_if");
  for (const auto* t : {&metric, &skip_if}) {
    TORCH_CHECK(!t->has_value() || (*t)->device().is_cpu(), "metric and skip_if must be on the CPU, like ",
                "schedule_state");
  }
  if (step_is_skipped(skip_if)) {
    return;
  }
  double* state = schedule_state.mutable_data_ptr<double>();
  if (initial) {
    initialize_schedule(state, groups, checked);
    return;
  }
  advance_schedule(state, groups, checked, metric.has_value() ? read_double(*metric) : 0.0);
}

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, CPU, m) {
  for_each_update_op([&](auto op) { m.impl(decltype(op)::kName, &update_step_cpu<decltype(op)>); });
  m.impl("schedule_step_", &schedule_step_cpu);
}

}  // namespace lrsched_fused
