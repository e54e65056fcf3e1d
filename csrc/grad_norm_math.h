#pragma once
// The global grad norm that gradient clipping needs, written once for the CPU
// and the CUDA path (csrc/cpu/grad_norm_cpu.cpp, csrc/cuda/grad_norm_cuda.cu).
//
// NOTE: [grad norm]
// torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type) computes each
// grad's norm in the grad's dtype (torch._foreach_norm), stacks them (the
// stack has the promoted dtype of all grads) and takes the norm of the stack:
//
//   total = ||(||g_1||_p, ..., ||g_n||_p)||_p
//   coef  = clamp(max_norm * reciprocal(total + 1e-6), max=1)  (in total's dtype)
//   g_i  *= coef                                               (in g_i's dtype)
//
// The op grad_norm_partial_ does the part that reads the grads: for each grad
// it sums |g|^p (max |g| for p = inf) in float64, in a fixed order (no
// atomics, the same bits on every run and for every thread count), takes the
// p-th root, rounds that norm to the grad's dtype as torch's per-grad norm is
// rounded, and adds its p-th power to `partial` (max for p = inf). What is
// left is a function of the 0-dim `partial` alone, done with torch's own ops
// in lrsched_fused/grad_clipping.py (so the coefficient rounds as torch's
// does), after an all-reduce of `partial` when the grads are shards.
// The update kernels then read the grad, unscale it (GradScaler), multiply it
// by coef and round it to the grad's dtype, as clip_grad_norm_ leaves it, and
// never write it back clipped.
#include <c10/macros/Macros.h>

#include <cmath>

namespace lrsched_fused {

enum class NormKind { One, Two, Inf, Other };

struct NormOrder {
  NormKind kind;
  double p;
};

C10_HOST_DEVICE inline NormOrder norm_order(double p) {
  if (p == 1.0) {
    return {NormKind::One, p};
  }
  if (p == 2.0) {
    return {NormKind::Two, p};
  }
  if (p == INFINITY) {
    return {NormKind::Inf, p};
  }
  return {NormKind::Other, p};
}

// |x|^p, the term one element (or one grad's norm) contributes.
C10_HOST_DEVICE inline double norm_term(NormOrder order, double x) {
  switch (order.kind) {
    case NormKind::One:
    case NormKind::Inf:
      return ::fabs(x);
    case NormKind::Two:
      return x * x;
    default:
      return ::pow(::fabs(x), order.p);
  }
}

// Adds `term` to `sum` (the maximum for p = inf; a NaN on either side wins,
// as torch's max reduction propagates NaN).
C10_HOST_DEVICE inline double norm_combine(NormOrder order, double sum, double term) {
  if (order.kind == NormKind::Inf) {
    return (term > sum || term != term) ? term : sum;
  }
  return sum + term;
}

// The p-th root of a sum of terms: the norm.
C10_HOST_DEVICE inline double norm_root(NormOrder order, double sum) {
  switch (order.kind) {
    case NormKind::One:
    case NormKind::Inf:
      return sum;
    case NormKind::Two:
      return ::sqrt(sum);
    default:
      return ::pow(sum, 1.0 / order.p);
  }
}

// clip_grad_norm_'s total norm and coefficient from `partial` (the sum of the
// grads' norm terms, NOTE: [grad norm]), in the norm's dtype S whose compute
// type is opmath_t, rounded after each step as torch's tensor ops round them:
//   total = norm of the stacked per-grad norms               (rounded to S)
//   coef  = clamp(reciprocal(total + 1e-6) * max_norm, max=1) (each op rounded to S)
// (clip_grad_norm_ writes `max_norm / (total + 1e-6)`, which Tensor.__rtruediv__
// computes as a reciprocal and a multiplication). A NaN total gives a NaN
// coefficient, as torch's clamp propagates it.
template <typename S, typename opmath_t>
struct ClipResult {
  S total_norm;
  S clip_coef;
};

template <typename S, typename opmath_t>
C10_HOST_DEVICE inline ClipResult<S, opmath_t> clip_coefficient(NormOrder order, double partial, double max_norm) {
  const S total = static_cast<S>(static_cast<opmath_t>(norm_root(order, partial)));
  const S shifted = static_cast<S>(static_cast<opmath_t>(total) + static_cast<opmath_t>(1e-6));
  const S reciprocal = static_cast<S>(opmath_t(1) / static_cast<opmath_t>(shifted));
  const S scaled = static_cast<S>(static_cast<opmath_t>(reciprocal) * static_cast<opmath_t>(max_norm));
  const opmath_t c = static_cast<opmath_t>(scaled);
  return {total, (c != c || c <= opmath_t(1)) ? scaled : static_cast<S>(opmath_t(1))};
}

}  // namespace lrsched_fused
