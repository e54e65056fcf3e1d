#pragma once
// The per-element updates (SGD, Adam/AdamW, Lion, Muon's two passes), written
// once for the CPU and the CUDA path. Everything is computed in `opmath_t` (float for fp16/bf16/fp32,
// double for fp64); what is the same for a whole tensor (lr, bias corrections,
// the AdamW decay factor) is computed once per tensor in float64, as torch's
// fused optimizers do, and passed in a coefficient struct.
//
// The order of operations follows torch's fused CPU kernels
// (aten/src/ATen/native/cpu/FusedAdamKernel.cpp, FusedSGDKernel.cpp), and for
// Lion and Muon their references' ops (lion-pytorch, torch.optim.Muon), so the
// two agree to rounding.

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

#include "state_layout.h"

namespace lrsched_fused {

template <typename T>
C10_HOST_DEVICE inline T math_sqrt(T x) {
  return ::sqrt(x);
}
template <>
C10_HOST_DEVICE inline float math_sqrt<float>(float x) {
  return ::sqrtf(x);
}

// A group's hyperparameters, read from its block of the device state
// (NOTE: [hyperparameters on the device]).
struct AdamGroupValues {
  double lr, beta1, beta2, eps, weight_decay;
};

C10_HOST_DEVICE inline AdamGroupValues adam_group_values(const double* state, int64_t group) {
  const double* block = state + layout::group_offset(group);
  return {block[layout::kGroupLr], block[layout::kGroupMomentum], block[layout::kGroupBeta2],
          block[layout::kGroupEps], block[layout::kGroupWeightDecay]};
}

struct SgdGroupValues {
  double lr, momentum, dampening, weight_decay;
};

C10_HOST_DEVICE inline SgdGroupValues sgd_group_values(const double* state, int64_t group) {
  const double* block = state + layout::group_offset(group);
  return {block[layout::kGroupLr], block[layout::kGroupMomentum], block[layout::kGroupDampening],
          block[layout::kGroupWeightDecay]};
}

struct LionGroupValues {
  double lr, beta1, beta2, weight_decay;
};

C10_HOST_DEVICE inline LionGroupValues lion_group_values(const double* state, int64_t group) {
  const double* block = state + layout::group_offset(group);
  return {block[layout::kGroupLr], block[layout::kGroupMomentum], block[layout::kGroupBeta2],
          block[layout::kGroupWeightDecay]};
}

struct MuonGroupValues {
  double lr, momentum, weight_decay;
};

C10_HOST_DEVICE inline MuonGroupValues muon_group_values(const double* state, int64_t group) {
  const double* block = state + layout::group_offset(group);
  return {block[layout::kGroupLr], block[layout::kGroupMomentum], block[layout::kGroupWeightDecay]};
}

// What a call's runtime options make of a grad (NOTE: [kernel instantiations]):
// the sign (maximize), a GradScaler's unscale, clipping's coefficient.
template <typename opmath_t>
struct GradOptions {
  opmath_t sign;        // -1 with maximize
  opmath_t grad_scale;  // the GradScaler scale the grad is divided by (1 without)
  opmath_t clip_coef;   // gradient clipping's coefficient (NOTE: [grad norm])
  bool unscale;         // a GradScaler's grad_scale was given: the unscaled grad is stored
  bool clip;            // a clip_coef was given
};

template <typename opmath_t>
C10_HOST_DEVICE inline GradOptions<opmath_t> make_grad_options(bool maximize, bool unscale, double grad_scale,
                                                               bool clip, double clip_coef) {
  return {maximize ? opmath_t(-1) : opmath_t(1), opmath_t(grad_scale), opmath_t(clip_coef), unscale, clip};
}

// NOTE: [switches as numbers]
// A yes/no that is the same for a whole call and tested per element (weight
// decay on, the lerp form, nesterov) is kept as an opmath_t, 1 or 0, and
// tested with on(): the CPU loops then select with a floating-point condition,
// which GCC vectorizes in a loop whose vector width is set by 16-bit slots;
// with a bool condition it does not (GCC 12: "relevant stmt not supported"
// for `bool ? float : float` at 8 lanes; bf16 Adam measured 5x slower).
template <typename T>
C10_HOST_DEVICE inline bool on(T switch_value) {
  return switch_value != T(0);
}

// torch's lerp (aten/src/ATen/native/Lerp.h): start + w * (end - start)
// for |w| < 0.5, else end - (end - start) * (1 - w), the weight in opmath_t.
template <typename T>
struct LerpWeight {
  T weight;
  T complement;  // 1 - weight, in T as torch computes it
  T is_small;    // 1 or 0 (NOTE: [switches as numbers])
};

template <typename T>
C10_HOST_DEVICE inline LerpWeight<T> make_lerp_weight(double weight) {
  const T w = T(weight);
  return {w, T(1) - w, T((w < T(0.5)) && (w > T(-0.5)))};
}

template <typename T>
C10_HOST_DEVICE inline T torch_lerp(T start, T end, const LerpWeight<T>& w) {
  return on(w.is_small) ? start + w.weight * (end - start) : end - (end - start) * w.complement;
}

template <typename opmath_t>
struct AdamCoefficients {
  GradOptions<opmath_t> grad;
  opmath_t has_weight_decay;        // 1 or 0: torch skips the decay when weight_decay == 0
  opmath_t weight_decay;            // L2: added to the gradient
  opmath_t decay_factor;            // decoupled: 1 - lr * weight_decay
  LerpWeight<opmath_t> toward_grad;  // exp_avg.lerp_(grad, 1 - beta1)
  opmath_t beta2;
  opmath_t one_minus_beta2;
  opmath_t step_size;               // lr / (1 - beta1**step)
  opmath_t bias_correction2_sqrt;   // sqrt(1 - beta2**step)
  opmath_t eps;
};

// What depends on a tensor's step count, in float64: the bias corrections.
struct AdamStepTerms {
  double step_size;              // lr / (1 - beta1**step)
  double bias_correction2_sqrt;  // sqrt(1 - beta2**step)
};

C10_HOST_DEVICE inline AdamStepTerms adam_step_terms(const AdamGroupValues& group, double step) {
  const double bias_correction1 = 1 - ::pow(group.beta1, step);
  const double bias_correction2 = 1 - ::pow(group.beta2, step);
  return {group.lr / bias_correction1, ::sqrt(bias_correction2)};
}

// Per-tensor coefficients from the group's float64 values and the tensor's step terms.
template <typename opmath_t>
C10_HOST_DEVICE inline AdamCoefficients<opmath_t> make_adam_coefficients(
    const AdamGroupValues& group, const GradOptions<opmath_t>& grad, const AdamStepTerms& terms) {
  AdamCoefficients<opmath_t> c;
  c.grad = grad;
  c.has_weight_decay = opmath_t(group.weight_decay != 0.0);
  c.weight_decay = opmath_t(group.weight_decay);
  c.decay_factor = opmath_t(1 - group.lr * group.weight_decay);
  c.toward_grad = make_lerp_weight<opmath_t>(1 - group.beta1);
  c.beta2 = opmath_t(group.beta2);
  c.one_minus_beta2 = opmath_t(1 - group.beta2);
  c.step_size = opmath_t(terms.step_size);
  c.bias_correction2_sqrt = opmath_t(terms.bias_correction2_sqrt);
  c.eps = opmath_t(group.eps);
  return c;
}

// NOTE: [folded bias correction]
// step_size * m / (sqrt(v) / bc2 + eps) is (step_size * bc2) * m / (sqrt(v)
// + eps * bc2), bc2 = sqrt(1 - beta2**step): the Adam paper's "efficient"
// form and bitsandbytes' 8-bit kernels', one division per element fewer. The
// two differ by rounding only. The 8-bit states use it (on the CPU their step
// waits on the divider); every other path keeps torch's form, bit for bit.
template <typename opmath_t>
C10_HOST_DEVICE inline AdamCoefficients<opmath_t> make_folded_adam_coefficients(
    const AdamGroupValues& group, const GradOptions<opmath_t>& grad, const AdamStepTerms& terms) {
  AdamCoefficients<opmath_t> c = make_adam_coefficients<opmath_t>(group, grad, terms);
  c.step_size = opmath_t(terms.step_size * terms.bias_correction2_sqrt);
  c.eps = opmath_t(group.eps * terms.bias_correction2_sqrt);
  c.bias_correction2_sqrt = opmath_t(1);  // not read
  return c;
}

// NOTE: [NaN in amsgrad's max]
// torch is not consistent here: its for-loop and foreach Adam use
// torch.maximum (NaN propagates), its fused CPU kernel propagates in the
// vectorized body but not in the scalar tail, and std::max(max, v) keeps the
// old max when v is NaN. We follow torch.maximum, the documented semantics,
// the same for every element on every device.

// The grad an update uses: unscaled in place when o.unscale (so the caller can
// store it back, as torch's fused kernels do), then, when o.clip, multiplied
// by the clip coefficient and rounded to the grad's storage type, as
// clip_grad_norm_ leaves it (NOTE: [grad norm]); `grad` itself is not clipped.
// Then signed for maximize.
template <typename T, typename GradStorage>
C10_HOST_DEVICE inline T grad_to_apply(T& grad, const GradOptions<T>& o) {
  if (o.unscale) {
    grad = grad / o.grad_scale;
  }
  const T g = o.clip ? static_cast<T>(static_cast<GradStorage>(grad * o.clip_coef)) : grad;
  return g * o.sign;
}

// One element of Adam (kDecoupled = false) or AdamW (kDecoupled = true); the
// grad as grad_to_apply gives it. `max_exp_avg_sq` is touched only when
// kAmsgrad; kFolded: the coefficients are make_folded_adam_coefficients'
// (NOTE: [folded bias correction]).
template <typename T, bool kAmsgrad, bool kDecoupled, typename GradStorage = T, bool kFolded = false>
C10_HOST_DEVICE inline void adam_update(
    T& param, T& grad, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq, const AdamCoefficients<T>& c) {
  T g = grad_to_apply<T, GradStorage>(grad, c.grad);
  if constexpr (kDecoupled) {
    param = param * c.decay_factor;  // 1 when weight_decay == 0: exact, as torch's skipped decay
  } else {  // param * 0 would turn an inf param's grad into NaN: no decay when weight_decay == 0
    g = on(c.has_weight_decay) ? g + param * c.weight_decay : g;
  }
  exp_avg = torch_lerp(exp_avg, g, c.toward_grad);
  exp_avg_sq = exp_avg_sq * c.beta2 + c.one_minus_beta2 * g * g;
  T second_moment = exp_avg_sq;
  if constexpr (kAmsgrad) {
    // torch.maximum: a NaN on either side wins (NOTE: [NaN in amsgrad's max]).
    max_exp_avg_sq = (max_exp_avg_sq < exp_avg_sq || exp_avg_sq != exp_avg_sq) ? exp_avg_sq : max_exp_avg_sq;
    second_moment = max_exp_avg_sq;
  }
  T denom;
  if constexpr (kFolded) {
    denom = math_sqrt(second_moment) + c.eps;
  } else {
    denom = math_sqrt(second_moment) / c.bias_correction2_sqrt + c.eps;
  }
  param = param - c.step_size * exp_avg / denom;
}

template <typename opmath_t>
struct SgdCoefficients {
  GradOptions<opmath_t> grad;
  opmath_t has_weight_decay;  // 1 or 0 (NOTE: [switches as numbers])
  opmath_t weight_decay;
  opmath_t momentum;
  opmath_t dampening_complement;  // 1 - dampening
  opmath_t nesterov;              // 1 or 0
  opmath_t lr;
};

template <typename opmath_t>
C10_HOST_DEVICE inline SgdCoefficients<opmath_t> make_sgd_coefficients(
    const SgdGroupValues& group, bool nesterov, const GradOptions<opmath_t>& grad) {
  SgdCoefficients<opmath_t> c;
  c.grad = grad;
  c.has_weight_decay = opmath_t(group.weight_decay != 0.0);
  c.weight_decay = opmath_t(group.weight_decay);
  c.momentum = opmath_t(group.momentum);
  c.dampening_complement = opmath_t(1 - group.dampening);
  c.nesterov = opmath_t(nesterov);
  c.lr = opmath_t(group.lr);
  return c;
}

// One element of SGD. With kMomentum, `first_step` (1 or 0, NOTE: [switches
// as numbers]) says the tensor's momentum_buffer has no history yet: it
// becomes the gradient (torch's "first-step momentum buffer = grad"). The
// grad as grad_to_apply gives it.
template <typename T, bool kMomentum, typename GradStorage = T>
C10_HOST_DEVICE inline void sgd_update(
    T& param, T& grad, T& momentum_buffer, T first_step, const SgdCoefficients<T>& c) {
  T g = grad_to_apply<T, GradStorage>(grad, c.grad);
  g = on(c.has_weight_decay) ? g + param * c.weight_decay : g;
  if constexpr (kMomentum) {
    momentum_buffer = on(first_step) ? g : momentum_buffer * c.momentum + c.dampening_complement * g;
    g = on(c.nesterov) ? g + momentum_buffer * c.momentum : momentum_buffer;
  }
  param = param - c.lr * g;
}

template <typename opmath_t>
struct LionCoefficients {
  GradOptions<opmath_t> grad;
  opmath_t decay_factor;     // 1 - lr * weight_decay (1 without decay: exact)
  opmath_t beta1;
  opmath_t one_minus_beta1;  // 1 - beta1 in float64, then rounded, as the reference computes it
  opmath_t beta2;
  opmath_t one_minus_beta2;
  opmath_t lr;
};

template <typename opmath_t>
C10_HOST_DEVICE inline LionCoefficients<opmath_t> make_lion_coefficients(const LionGroupValues& group,
                                                                         const GradOptions<opmath_t>& grad) {
  LionCoefficients<opmath_t> c;
  c.grad = grad;
  c.decay_factor = opmath_t(1 - group.lr * group.weight_decay);
  c.beta1 = opmath_t(group.beta1);
  c.one_minus_beta1 = opmath_t(1 - group.beta1);
  c.beta2 = opmath_t(group.beta2);
  c.one_minus_beta2 = opmath_t(1 - group.beta2);
  c.lr = opmath_t(group.lr);
  return c;
}

// One element of Lion (Chen et al. 2023), in lion-pytorch's order: decoupled
// decay, then the sign of the interpolation c = beta1 * m + (1 - beta1) * g
// steps the param by lr, then m moves toward g with beta2. sign(0) = 0, and
// as torch.sgn a NaN c gives 0 (the NaN stays in exp_avg). The grad as
// grad_to_apply gives it.
template <typename T, typename GradStorage = T>
C10_HOST_DEVICE inline void lion_update(T& param, T& grad, T& exp_avg, const LionCoefficients<T>& c) {
  const T g = grad_to_apply<T, GradStorage>(grad, c.grad);
  param = param * c.decay_factor;
  const T interpolated = exp_avg * c.beta1 + c.one_minus_beta1 * g;
  const T sign = T(interpolated > T(0)) - T(interpolated < T(0));
  param = param - c.lr * sign;
  exp_avg = exp_avg * c.beta2 + c.one_minus_beta2 * g;
}

// Muon's elementwise passes around its Newton-Schulz iteration (the
// orthogonalization runs as batched matmuls: lrsched_fused/muon.py), in
// torch.optim.Muon's order.
template <typename opmath_t>
struct MuonMomentumCoefficients {
  GradOptions<opmath_t> grad;
  LerpWeight<opmath_t> toward_grad;    // buf.lerp_(grad, 1 - momentum)
  LerpWeight<opmath_t> toward_buffer;  // nesterov: grad.lerp(buf, momentum)
  opmath_t nesterov;                   // 1 or 0
};

template <typename opmath_t>
C10_HOST_DEVICE inline MuonMomentumCoefficients<opmath_t> make_muon_momentum_coefficients(
    const MuonGroupValues& group, bool nesterov, const GradOptions<opmath_t>& grad) {
  return {grad, make_lerp_weight<opmath_t>(1 - group.momentum), make_lerp_weight<opmath_t>(group.momentum),
          opmath_t(nesterov)};
}

// The momentum pass: buffer moves toward the grad; `update` (what the
// Newton-Schulz iteration orthogonalizes) is the buffer, or with nesterov the
// grad moved toward it. The buffer is stored in BufferStorage and nesterov
// reads it back from there, as torch's two ops do. The grad as grad_to_apply
// gives it (no maximize: torch's Muon has none).
template <typename T, typename BufferStorage, typename GradStorage = BufferStorage>
C10_HOST_DEVICE inline void muon_momentum(T& grad, T& buffer, T& update, const MuonMomentumCoefficients<T>& c) {
  const T g = grad_to_apply<T, GradStorage>(grad, c.grad);
  buffer = static_cast<T>(static_cast<BufferStorage>(torch_lerp(buffer, g, c.toward_grad)));
  update = on(c.nesterov) ? torch_lerp(g, buffer, c.toward_buffer) : buffer;
}

template <typename opmath_t>
struct MuonApplyCoefficients {
  opmath_t decay_factor;  // 1 - lr * weight_decay
  opmath_t step;          // -(lr * the shape's lr ratio): torch's add_(update, alpha=-adjusted_lr)
};

C10_HOST_DEVICE inline double muon_step_size(const MuonGroupValues& group, double lr_ratio) {
  return -(group.lr * lr_ratio);
}

template <typename opmath_t>
C10_HOST_DEVICE inline MuonApplyCoefficients<opmath_t> make_muon_apply_coefficients(const MuonGroupValues& group,
                                                                                   double lr_ratio) {
  return {opmath_t(1 - group.lr * group.weight_decay), opmath_t(muon_step_size(group, lr_ratio))};
}

// The final pass: decoupled decay, then the orthogonalized update times the
// adjusted lr; the decayed param is rounded to ParamStorage between the two,
// as torch's two in-place ops round it.
template <typename T, typename ParamStorage>
C10_HOST_DEVICE inline void muon_apply(T& param, T orthogonalized, const MuonApplyCoefficients<T>& c) {
  const T decayed = static_cast<T>(static_cast<ParamStorage>(param * c.decay_factor));
  param = decayed + c.step * orthogonalized;
}

}  // namespace lrsched_fused
