// CPU kernels of adam_step_, sgd_step_ and schedule_step_: one parallel pass over the
// elements of all tensors of a call (NOTE: [CPU work split], NOTE: [CPU instruction
// sets] in cpu_loops.h).
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "../dispatch.h"
#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"
#include "../update_ops.h"
#include "cpu_loops.h"

namespace lrsched_fused {
namespace {

using namespace cpu;  // NOLINT: the loop machinery of cpu_loops.h

// n consecutive elements of one tensor: the loop each instruction set compiles.
// scalar_t: the param's and grad's storage; state_t: the states' (and the
// master's), float with master weights (kMaster, NOTE: [master weights]), else
// scalar_t. With kMaster, `master` holds the value the update runs on and the
// param receives it rounded to nearest.
template <typename scalar_t, bool kMaster, bool kAmsgrad, bool kDecoupled>
struct AdamElements {
  using opmath_t = at::opmath_type<scalar_t>;
  using state_t = state_type<scalar_t, kMaster>;
  // The loop for each combination of the call's options and lerp form
  // (NOTE: [CPU loop specialization]).
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      state_t* __restrict__ exp_avg_sq, state_t* __restrict__ max_exp_avg_sq, state_t* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& c) {
    const std::array<bool, 4> flags{c.grad.unscale, c.grad.clip, c.has_weight_decay, c.lerp_weight_is_small};
    run_pinned<AdamElements>(flags, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master, n, c);
  }

  template <bool kUnscale, bool kClip, bool kWeightDecay, bool kLerpSmall>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      state_t* __restrict__ exp_avg_sq, state_t* __restrict__ max_exp_avg_sq, state_t* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& coefficients) {
    AdamCoefficients<opmath_t> c = coefficients;  // a local copy: the stores cannot alias it
    c.grad.unscale = kUnscale;
    c.grad.clip = kClip;
    c.has_weight_decay = kWeightDecay;
    c.lerp_weight_is_small = kLerpSmall;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t m = exp_avg[i];
      opmath_t v = exp_avg_sq[i];
      opmath_t v_max = kAmsgrad ? opmath_t(max_exp_avg_sq[i]) : opmath_t(0);
      adam_update<opmath_t, kAmsgrad, kDecoupled, scalar_t>(p, g, m, v, v_max, c);
      if constexpr (kMaster) {
        master[i] = to_storage<state_t>(p);
      }
      param[i] = to_storage<scalar_t>(p);
      exp_avg[i] = to_storage<state_t>(m);
      exp_avg_sq[i] = to_storage<state_t>(v);
      if constexpr (kAmsgrad) {
        max_exp_avg_sq[i] = to_storage<state_t>(v_max);
      }
      if (c.grad.unscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

template <typename scalar_t, bool kMaster, bool kMomentum>
struct SgdElements {
  using opmath_t = at::opmath_type<scalar_t>;
  using state_t = state_type<scalar_t, kMaster>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ momentum_buffer,
      state_t* __restrict__ master, int64_t n, bool first_step, const SgdCoefficients<opmath_t>& coefficients) {
    const std::array<bool, 3> flags{coefficients.grad.unscale, coefficients.grad.clip,
                                    coefficients.has_weight_decay};
    run_pinned<SgdElements>(flags, param, grad, momentum_buffer, master, n, first_step, coefficients);
  }

  template <bool kUnscale, bool kClip, bool kWeightDecay>
  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ momentum_buffer,
      state_t* __restrict__ master, int64_t n, bool first_step, const SgdCoefficients<opmath_t>& coefficients) {
    SgdCoefficients<opmath_t> c = coefficients;  // a local copy: the stores cannot alias it
    c.grad.unscale = kUnscale;
    c.grad.clip = kClip;
    c.has_weight_decay = kWeightDecay;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t b = kMomentum ? opmath_t(momentum_buffer[i]) : opmath_t(0);
      sgd_update<opmath_t, kMomentum, scalar_t>(p, g, b, first_step, c);
      if constexpr (kMaster) {
        master[i] = to_storage<state_t>(p);
      }
      param[i] = to_storage<scalar_t>(p);
      if constexpr (kMomentum) {
        momentum_buffer[i] = to_storage<state_t>(b);
      }
      if (c.grad.unscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

// The GradScaler's scale and clipping's coefficient of a call, read once.
template <typename opmath_t, typename Op>
GradOptions<opmath_t> grad_options(const UpdateCall<Op>& call) {
  return make_grad_options<opmath_t>(call.has(Op::kMaximize), call.grad_scale.has_value(),
                                     call.grad_scale.has_value() ? read_double(*call.grad_scale) : 1.0,
                                     call.clip_coef.has_value(),
                                     call.clip_coef.has_value() ? read_double(*call.clip_coef) : 1.0);
}

void run_step(const UpdateCall<AdamStepOp>& call) {
  using Op = AdamStepOp;
  const AdamGroupValues group = adam_group_values(call.schedule_state.const_data_ptr<double>(), call.group_index);
  const ElementSpace space(call.params);
  const bool avx2 = use_avx2();
  dispatch_update_types(call.params[0].scalar_type(), call.has(Op::kMasterWeights), [&](auto scalar,
                                                                                       auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = state_type<scalar_t, decltype(master_flag)::value>;
    using opmath_t = at::opmath_type<scalar_t>;
    const GradOptions<opmath_t> grad = grad_options<opmath_t>(call);
    std::vector<AdamCoefficients<opmath_t>> coefficients;
    coefficients.reserve(call.params.size());
    for (const at::Tensor& step : call.slots[Op::kStep]) {
      double& count = *step.mutable_data_ptr<double>();
      count += 1;
      coefficients.push_back(make_adam_coefficients<opmath_t>(group, grad, adam_step_terms(group, count)));
    }
    const auto param_data = data_pointers<scalar_t>(call.params);
    const auto grad_data = data_pointers<scalar_t>(call.grads);
    const auto exp_avg_data = data_pointers<state_t>(call.slots[Op::kExpAvg]);
    const auto exp_avg_sq_data = data_pointers<state_t>(call.slots[Op::kExpAvgSq]);
    const auto max_exp_avg_sq_data = data_pointers<state_t>(call.slots[Op::kMaxExpAvgSq]);
    const auto master_data = data_pointers<state_t>(call.slots[Op::kMasterParam]);
    with_bool(call.has(Op::kAmsgrad), [&](auto amsgrad_flag) {
      with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
        using Elements = AdamElements<scalar_t, decltype(master_flag)::value, decltype(amsgrad_flag)::value,
                                      decltype(decoupled_flag)::value>;
        for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
          run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin, exp_avg_data[t] + begin,
                                 exp_avg_sq_data[t] + begin, offset_or_null(max_exp_avg_sq_data, t, begin),
                                 offset_or_null(master_data, t, begin), end - begin, coefficients[t]);
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
  // A momentum buffer has no history while its step counter is 0 (every
  // earlier step was skipped, or none ran): it then becomes the gradient.
  std::vector<char> is_first(call.params.size(), 0);
  for (size_t i = 0; has_momentum && i < call.params.size(); ++i) {
    double& count = *call.slots[Op::kStep][i].mutable_data_ptr<double>();
    is_first[i] = count == 0.0;
    count += 1;
  }
  dispatch_update_types(call.params[0].scalar_type(), call.has(Op::kMasterWeights), [&](auto scalar,
                                                                                       auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = state_type<scalar_t, decltype(master_flag)::value>;
    using opmath_t = at::opmath_type<scalar_t>;
    const SgdCoefficients<opmath_t> c =
        make_sgd_coefficients<opmath_t>(group, call.has(Op::kNesterov), grad_options<opmath_t>(call));
    const auto param_data = data_pointers<scalar_t>(call.params);
    const auto grad_data = data_pointers<scalar_t>(call.grads);
    const auto buffer_data = data_pointers<state_t>(call.slots[Op::kMomentumBuffer]);
    const auto master_data = data_pointers<state_t>(call.slots[Op::kMasterParam]);
    with_bool(has_momentum, [&](auto momentum_flag) {
      using Elements = SgdElements<scalar_t, decltype(master_flag)::value, decltype(momentum_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin,
                               offset_or_null(buffer_data, t, begin), offset_or_null(master_data, t, begin),
                               end - begin, is_first[t] != 0, c);
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
                     const std::optional<at::Tensor>& clip_coef) {
  const UpdateCall<Op> call = check_update_call<Op>(params, grads, states, schedule_state, group_index, flags,
                                                    grad_scale, found_inf, clip_coef);
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  run_step(call);
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
