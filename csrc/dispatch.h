#pragma once
// The compile-time choices of the update kernels, shared by the CPU and CUDA
// paths: the dtype dispatch (with or without master weights) and turning a
// structural flag into a template argument.
//
// NOTE: [kernel instantiations]
// An update kernel is a template over what changes its memory traffic or the
// shape of its math: the parameter dtype, master weights, and the op's
// structural flags (Adam: amsgrad, decoupled weight decay; SGD: momentum).
// Everything else is a runtime value that is the same for the whole call
// (weight decay on or off, a GradScaler's unscale, clipping, maximize,
// nesterov): a GPU warp takes the same branch on every lane. So Adam has
// 6 x 4 kernel instantiations per device and instruction set, SGD 6 x 2
// (torch templates its fused kernels on the same things: dtype, mode,
// amsgrad). The CPU kernels still compile their element loop once per
// combination of unscale, clip and weight decay inside (NOTE: [CPU loop
// specialization] in csrc/cpu/cpu_loops.h, with the figures that ask for it).
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

// Calls f(scalar_t{}, std::bool_constant<master>{}) for the params' dtype;
// master weights (NOTE: [master weights]) are taken for bfloat16/float16
// params only (checked before).
template <typename F>
void dispatch_update_types(at::ScalarType dtype, bool master, const F& f) {
  if (master) {
    AT_DISPATCH_SWITCH(dtype, "update_step",
                       AT_DISPATCH_CASE(at::kHalf, [&] { f(scalar_t{}, std::true_type{}); })
                           AT_DISPATCH_CASE(at::kBFloat16, [&] { f(scalar_t{}, std::true_type{}); }));
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "update_step",
                                    [&] { f(scalar_t{}, std::false_type{}); });
  }
}

// The storage type of the states (and the master) of a call: float with master weights, else the param's.
template <typename scalar_t, bool kMaster>
using state_type = std::conditional_t<kMaster, float, scalar_t>;

}  // namespace lrsched_fused
