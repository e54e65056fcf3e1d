// CPU kernels of adam_step_, sgd_step_ and schedule_step_: one parallel pass over the
// elements of all tensors of a call (NOTE: [CPU work split], NOTE: [CPU instruction
// sets] in cpu_loops.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"
#include "cpu_loops.h"

namespace lrsched_fused {
namespace {

using namespace cpu;  // NOLINT: the loop machinery of cpu_loops.h

// n consecutive elements of one tensor: the loop each instruction set compiles.
// scalar_t: the param's and grad's storage; state_t: the states' (and the
// master's), float with master weights (kMaster, NOTE: [master weights]), else
// scalar_t. With kMaster, `master` holds the value the update runs on and the
// param receives it rounded to nearest.
template <typename scalar_t, typename state_t, bool kMaster, bool kAmsgrad, bool kDecoupled, bool kWeightDecay,
          bool kUnscale, bool kClip>
struct AdamElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static_assert(kMaster == !std::is_same_v<scalar_t, state_t>, "master weights: float states, else the param's");
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      state_t* __restrict__ exp_avg_sq, state_t* __restrict__ max_exp_avg_sq, state_t* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& coefficients) {
    // A local copy (the stores cannot alias it) whose lerp form is a constant
    // in each loop, so the loops carry no select on it.
    AdamCoefficients<opmath_t> c = coefficients;
    if (c.lerp_weight_is_small) {
      c.lerp_weight_is_small = true;
      loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master, n, c);
    } else {
      c.lerp_weight_is_small = false;
      loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master, n, c);
    }
  }

  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ exp_avg,
      state_t* __restrict__ exp_avg_sq, state_t* __restrict__ max_exp_avg_sq, state_t* __restrict__ master,
      int64_t n, const AdamCoefficients<opmath_t>& c) {
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t m = exp_avg[i];
      opmath_t v = exp_avg_sq[i];
      opmath_t v_max = kAmsgrad ? opmath_t(max_exp_avg_sq[i]) : opmath_t(0);
      adam_update<opmath_t, kAmsgrad, kDecoupled, kWeightDecay, kUnscale, kClip, scalar_t>(p, g, m, v, v_max, c);
      if constexpr (kMaster) {
        master[i] = to_storage<state_t>(p);
      }
      param[i] = to_storage<scalar_t>(p);
      exp_avg[i] = to_storage<state_t>(m);
      exp_avg_sq[i] = to_storage<state_t>(v);
      if constexpr (kAmsgrad) {
        max_exp_avg_sq[i] = to_storage<state_t>(v_max);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

template <typename scalar_t, typename state_t, bool kMaster, bool kMomentum, bool kWeightDecay, bool kUnscale,
          bool kClip>
struct SgdElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static_assert(kMaster == !std::is_same_v<scalar_t, state_t>, "master weights: float states, else the param's");
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, state_t* __restrict__ momentum_buffer,
      state_t* __restrict__ master, int64_t n, bool first_step, const SgdCoefficients<opmath_t>& coefficients) {
    const SgdCoefficients<opmath_t> c = coefficients;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = kMaster ? opmath_t(master[i]) : opmath_t(param[i]);
      opmath_t g = grad[i];
      opmath_t b = kMomentum ? opmath_t(momentum_buffer[i]) : opmath_t(0);
      sgd_update<opmath_t, kMomentum, kWeightDecay, kUnscale, kClip, scalar_t>(p, g, b, first_step, c);
      if constexpr (kMaster) {
        master[i] = to_storage<state_t>(p);
      }
      param[i] = to_storage<scalar_t>(p);
      if constexpr (kMomentum) {
        momentum_buffer[i] = to_storage<state_t>(b);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

// Calls f(scalar_t{}, state_t{}, kMaster) for the params' dtype: with master
// weights (bfloat16/float16 params only, checked before) the states are float.
template <typename F>
void dispatch_update_types(at::ScalarType dtype, bool master, const F& f) {
  if (master) {
    AT_DISPATCH_SWITCH(dtype, "update_step_cpu",
                       AT_DISPATCH_CASE(at::kHalf, [&] { f(scalar_t{}, float{}, std::true_type{}); })
                           AT_DISPATCH_CASE(at::kBFloat16, [&] { f(scalar_t{}, float{}, std::true_type{}); }));
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "update_step_cpu",
                                    [&] { f(scalar_t{}, scalar_t{}, std::false_type{}); });
  }
}

void adam_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
    at::TensorList max_exp_avg_sqs, at::TensorList steps, const at::Tensor& schedule_state,
    int64_t group_index, double beta1, double beta2, double weight_decay, double eps, bool amsgrad,
    bool maximize, bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule,
    const std::optional<at::Tensor>& clip_coef, std::optional<at::TensorList> master_list) {
  const at::TensorList master_params = master_list.value_or(at::TensorList());
  check_adam_step_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state, group_index,
                       amsgrad, master_params);
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  check_scalar_tensor(clip_coef, "clip_coef");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double* schedule = schedule_state.const_data_ptr<double>();
  const double lr = schedule[layout::lr_offset(group_index)];
  if (momentum_from_schedule) {
    beta1 = schedule[layout::momentum_offset(group_index)];
  }
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const double clip = clip_coef.has_value() ? read_double(*clip_coef) : 1.0;
  const ElementSpace space(params);
  const bool avx2 = use_avx2();

  dispatch_update_types(params[0].scalar_type(), !master_params.empty(), [&](auto scalar, auto state,
                                                                            auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    using opmath_t = at::opmath_type<scalar_t>;
    std::vector<AdamCoefficients<opmath_t>> coefficients;
    coefficients.reserve(params.size());
    for (const at::Tensor& step : steps) {
      double& count = *step.mutable_data_ptr<double>();
      count += 1;
      coefficients.push_back(make_adam_coefficients<opmath_t>(lr, beta1, beta2, weight_decay, eps, maximize, scale,
                                                              adam_step_terms(lr, beta1, beta2, count), clip));
    }
    const auto param_data = data_pointers<scalar_t>(params);
    const auto grad_data = data_pointers<scalar_t>(grads);
    const auto exp_avg_data = data_pointers<state_t>(exp_avgs);
    const auto exp_avg_sq_data = data_pointers<state_t>(exp_avg_sqs);
    const auto max_exp_avg_sq_data = data_pointers<state_t>(amsgrad ? max_exp_avg_sqs : at::TensorList());
    const auto master_data = data_pointers<state_t>(master_params);
    with_bool(amsgrad, [&](auto amsgrad_flag) {
    with_bool(decoupled_weight_decay, [&](auto decoupled_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
    with_bool(clip_coef.has_value(), [&](auto clip_flag) {
      using Elements = AdamElements<scalar_t, state_t, decltype(master_flag)::value, decltype(amsgrad_flag)::value,
                                    decltype(decoupled_flag)::value, decltype(weight_decay_flag)::value,
                                    decltype(unscale_flag)::value, decltype(clip_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin, exp_avg_data[t] + begin,
                               exp_avg_sq_data[t] + begin, offset_or_null(max_exp_avg_sq_data, t, begin),
                               offset_or_null(master_data, t, begin), end - begin, coefficients[t]);
      });
    });
    });
    });
    });
    });
  });
}

void sgd_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, at::TensorList steps,
    const at::Tensor& schedule_state, int64_t group_index, double momentum, double dampening,
    double weight_decay, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule,
    const std::optional<at::Tensor>& clip_coef, std::optional<at::TensorList> master_list) {
  const at::TensorList master_params = master_list.value_or(at::TensorList());
  const bool has_momentum = momentum != 0.0 || momentum_from_schedule;
  check_sgd_step_args(params, grads, momentum_buffers, steps, schedule_state, group_index, has_momentum,
                      master_params);
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  check_scalar_tensor(clip_coef, "clip_coef");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double* schedule = schedule_state.const_data_ptr<double>();
  const double lr = schedule[layout::lr_offset(group_index)];
  if (momentum_from_schedule) {
    momentum = schedule[layout::momentum_offset(group_index)];
  }
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const double clip = clip_coef.has_value() ? read_double(*clip_coef) : 1.0;
  const ElementSpace space(params);
  const bool avx2 = use_avx2();
  // A momentum buffer has no history while its step counter is 0 (every
  // earlier step was skipped, or none ran): it then becomes the gradient.
  std::vector<char> is_first(params.size(), 0);
  for (size_t i = 0; has_momentum && i < params.size(); ++i) {
    double& count = *steps[i].mutable_data_ptr<double>();
    is_first[i] = count == 0.0;
    count += 1;
  }

  dispatch_update_types(params[0].scalar_type(), !master_params.empty(), [&](auto scalar, auto state,
                                                                            auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    using opmath_t = at::opmath_type<scalar_t>;
    const SgdCoefficients<opmath_t> c =
        make_sgd_coefficients<opmath_t>(lr, momentum, dampening, weight_decay, nesterov, maximize, scale, clip);
    const auto param_data = data_pointers<scalar_t>(params);
    const auto grad_data = data_pointers<scalar_t>(grads);
    const auto buffer_data = data_pointers<state_t>(has_momentum ? momentum_buffers : at::TensorList());
    const auto master_data = data_pointers<state_t>(master_params);
    with_bool(has_momentum, [&](auto momentum_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
    with_bool(clip_coef.has_value(), [&](auto clip_flag) {
      using Elements = SgdElements<scalar_t, state_t, decltype(master_flag)::value, decltype(momentum_flag)::value,
                                   decltype(weight_decay_flag)::value, decltype(unscale_flag)::value,
                                   decltype(clip_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin,
                               offset_or_null(buffer_data, t, begin), offset_or_null(master_data, t, begin),
                               end - begin, is_first[t] != 0, c);
      });
    });
    });
    });
    });
  });
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
  m.impl("adam_step_", &adam_step_cpu);
  m.impl("sgd_step_", &sgd_step_cpu);
  m.impl("schedule_step_", &schedule_step_cpu);
}

}  // namespace lrsched_fused
