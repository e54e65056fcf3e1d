#pragma once
// The compile-time choices of the update kernels, shared by the CPU and CUDA
// paths: the dtype dispatch (with or without master weights) and turning a
// structural flag into a template argument.
//
// NOTE: [kernel instantiations]
// An update kernel is a template over what changes its memory traffic or the
// shape of its math: the parameter dtype, the states' dtype, master weights,
// and the op's structural flags (Adam: amsgrad, decoupled weight decay; SGD:
// momentum).
// Everything else is a runtime value that is the same for the whole call
// (weight decay on or off, a GradScaler's unscale, clipping, maximize,
// nesterov, stochastic rounding): a GPU warp takes the same branch on every
// lane. The (param, state, master) dtype combinations are 19: float64 params
// with float64/float32/bfloat16/float16 states, float32 params with
// float32/bfloat16/float16 states, and bfloat16/float16 params with
// float32/bfloat16/float16 states, with or without master weights. So Adam
// has 19 x 4 kernel instantiations per device and instruction set, SGD 19 x 2
// (torch templates its fused kernels on dtype, mode and amsgrad). The CPU
// kernels still compile their element loop per combination of a few runtime
// options inside (NOTE: [CPU loop specialization] in csrc/cpu/cpu_loops.h).
#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

namespace lrsched_fused {

// Calls f(std::bool_constant<value>{}) so that `value` becomes a template argument.
template <typename F>
void with_bool(bool value, const F& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// The state dtypes of a call whose params are scalar_t: float32, bfloat16,
// float16, and the params' own (float64) without master weights (NOTE:
// [update op declaration]). Calls f(state_t{}) for `dtype`.
template <typename scalar_t, bool kMaster, typename F>
void dispatch_state_type(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kFloat:
      f(float{});
      return;
    case at::kBFloat16:
      f(c10::BFloat16{});
      return;
    case at::kHalf:
      f(c10::Half{});
      return;
    default:
      if constexpr (std::is_same_v<scalar_t, double> && !kMaster) {
        if (dtype == at::kDouble) {
          f(double{});
          return;
        }
      }
      TORCH_CHECK(false, "update_step: no kernel for states of dtype ", dtype);
  }
}

// Calls f(scalar_t{}, state_t{}, std::bool_constant<master>{}) for the
// params' and the states' dtypes; master weights (NOTE: [master weights])
// are taken for bfloat16/float16 params only (checked before).
template <typename F>
void dispatch_update_types(at::ScalarType dtype, at::ScalarType state_dtype, bool master, const F& f) {
  const auto with_states = [&](auto scalar, auto master_flag) {
    using scalar_t = decltype(scalar);
    dispatch_state_type<scalar_t, decltype(master_flag)::value>(
        state_dtype, [&](auto state) { f(scalar, state, master_flag); });
  };
  if (master) {
    AT_DISPATCH_SWITCH(dtype, "update_step",
                       AT_DISPATCH_CASE(at::kHalf, [&] { with_states(scalar_t{}, std::true_type{}); })
                           AT_DISPATCH_CASE(at::kBFloat16, [&] { with_states(scalar_t{}, std::true_type{}); }));
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "update_step",
                                    [&] { with_states(scalar_t{}, std::false_type{}); });
  }
}

// NOTE: [float16 second moments]
// float16 spans 6e-8 to 65504: the square of a grad under 2.4e-4 flushes to
// 0 in it (and Adam's step then divides by eps alone), the square of one over
// 256 overflows. So with float16 states asked for (state_dtype=float16),
// Adam's second moments (exp_avg_sq, max_exp_avg_sq) are kept in bfloat16,
// two bytes as well, with float32's range; exp_avg and momentum_buffer are
// float16. float16 params without master weights keep all their states in
// float16 unless asked otherwise, as torch's optimizers do (state_dtype None
// or float16 are the same for them).
template <typename scalar_t, typename state_t, bool kMaster>
using second_moment_type =
    std::conditional_t<std::is_same_v<state_t, c10::Half> && !(std::is_same_v<scalar_t, c10::Half> && !kMaster),
                       c10::BFloat16, state_t>;

inline at::ScalarType second_moment_dtype(at::ScalarType param_dtype, at::ScalarType state_dtype, bool master) {
  const bool own_half = param_dtype == at::kHalf && !master;
  return state_dtype == at::kHalf && !own_half ? at::kBFloat16 : state_dtype;
}

// The storage type of a parameter's values as the update reads and writes
// them: the float32 master with master weights, else the param's own.
template <typename scalar_t, bool kMaster>
using param_value_type = std::conditional_t<kMaster, float, scalar_t>;

}  // namespace lrsched_fused
