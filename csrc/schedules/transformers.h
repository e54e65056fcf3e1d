#pragma once
// transformers' get_scheduler schedules (NOTE: [schedule kinds]).
//
// NOTE: [transformers schedules]
// transformers.get_scheduler's schedules are LambdaLR(optimizer, lr_lambda):
// lr = initial_lr * lr_lambda(last_epoch), absolute from the group's initial
// lr at every step. Each kind's `lr_lambda` is the lr_lambda of
// transformers/optimization.py (`_get_*_lr_lambda`), with its Python
// operations in the same order: int arithmetic on step counts is exact in
// float64, `float(a) / float(max(1, b))` is a / py_max(1.0, b), `max(0, f)`
// is py_max(0.0, f) (the product with the lr is the same), and `x ** p`,
// `math.cos`, `math.sqrt` are the C library's pow, cos, sqrt, as CPython's.
// A lambda that transformers builds from `optimizer.defaults["lr"]`
// (PolynomialDecayWithWarmup's lr_init, a min_lr given absolutely) takes the
// group's initial lr instead unless the field is given; the two are equal when
// the groups use the optimizer's lr.

#include "kind.h"

namespace lrsched_fused {

// A LambdaLR: a kind that derives from TransformersLambda<Kind> defines
// `double lr_lambda(double step, double initial_lr) const`, and its lrs are
// base_lr * lr_lambda(last_epoch) (AbsoluteSchedule's hooks).
template <typename Kind>
struct TransformersLambda : AbsoluteSchedule<Kind> {
  // LambdaLR.get_lr() at `epoch`.
  C10_HOST_DEVICE void set_lrs(const LeafState& leaf, double epoch) const {
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
      const double base_lr = slots[layout::kGroupBaseLr];
      slots[layout::kGroupLr] = base_lr * this->kind().lr_lambda(epoch, base_lr);
    }
  }
};

// WarmupStableDecay's warmup_type and decay_type, in the order of the Python choice list.
enum class WsdShape : int64_t { Linear, Cosine, OneMinusSqrt };  // "linear", "cosine", "1-sqrt"

namespace detail {

C10_HOST_DEVICE inline double linear_warmup(double step, double num_warmup_steps) {
  return step / py_max(1.0, num_warmup_steps);
}

// A factor in [0, 1] rescaled to end at `floor` instead of 0, clipped at 0.
C10_HOST_DEVICE inline double rescaled_to_floor(double factor, double floor) {
  return py_max(0.0, factor * (1.0 - floor) + floor);
}

// The progress of the decay after the warmup: float(step - W) / float(max(1, T - W)).
C10_HOST_DEVICE inline double decay_progress(double step, double num_warmup_steps, double num_training_steps) {
  return (step - num_warmup_steps) / py_max(1.0, num_training_steps - num_warmup_steps);
}

// 0.5 * (1 + cos(2 pi num_cycles progress)): from 1 at progress 0; to 0 at progress 1 for num_cycles 0.5.
C10_HOST_DEVICE inline double cosine_wave(double num_cycles, double progress) {
  return 0.5 * (1.0 + ::cos(kPi * num_cycles * 2.0 * progress));
}

C10_HOST_DEVICE inline double resolved_min_lr_rate(double min_lr_rate, double min_lr, double initial_lr) {
  return is_none(min_lr) ? min_lr_rate : min_lr / initial_lr;
}

}  // namespace detail

struct ConstantWithWarmup : TransformersLambda<ConstantWithWarmup> {
#define LRSCHED_CONSTANT_WITH_WARMUP_FIELDS(FIELD) FIELD(double, num_warmup_steps)
  LRSCHED_FIELDS(LRSCHED_CONSTANT_WITH_WARMUP_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double /*initial_lr*/) const {
    return step < num_warmup_steps ? detail::linear_warmup(step, num_warmup_steps) : 1.0;
  }
};

struct LinearWithWarmup : TransformersLambda<LinearWithWarmup> {
#define LRSCHED_LINEAR_WITH_WARMUP_FIELDS(FIELD) FIELD(double, num_warmup_steps) FIELD(double, num_training_steps)
  LRSCHED_FIELDS(LRSCHED_LINEAR_WITH_WARMUP_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double /*initial_lr*/) const {
    using detail::py_max;
    if (step < num_warmup_steps) {
      return detail::linear_warmup(step, num_warmup_steps);
    }
    return py_max(0.0, (num_training_steps - step) / py_max(1.0, num_training_steps - num_warmup_steps));
  }
};

struct CosineWithWarmup : TransformersLambda<CosineWithWarmup> {
#define LRSCHED_COSINE_WITH_WARMUP_FIELDS(FIELD)                                        \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles) \
  FIELD(double, min_lr_rate) FIELD(double, min_lr) /* None: min_lr_rate applies */
  LRSCHED_FIELDS(LRSCHED_COSINE_WITH_WARMUP_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double initial_lr) const {
    using namespace detail;
    if (step < num_warmup_steps) {
      return linear_warmup(step, num_warmup_steps);
    }
    const double progress = decay_progress(step, num_warmup_steps, num_training_steps);
    return rescaled_to_floor(cosine_wave(num_cycles, progress), resolved_min_lr_rate(min_lr_rate, min_lr, initial_lr));
  }
};

struct CosineWithHardRestarts : TransformersLambda<CosineWithHardRestarts> {
#define LRSCHED_COSINE_WITH_HARD_RESTARTS_FIELDS(FIELD) \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles)
  LRSCHED_FIELDS(LRSCHED_COSINE_WITH_HARD_RESTARTS_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double /*initial_lr*/) const {
    using namespace detail;
    if (step < num_warmup_steps) {
      return linear_warmup(step, num_warmup_steps);
    }
    const double progress = decay_progress(step, num_warmup_steps, num_training_steps);
    if (progress >= 1.0) {
      return 0.0;
    }
    return py_max(0.0, 0.5 * (1.0 + ::cos(kPi * py_mod(num_cycles * progress, 1.0))));
  }
};

struct PolynomialDecayWithWarmup : TransformersLambda<PolynomialDecayWithWarmup> {
#define LRSCHED_POLYNOMIAL_DECAY_WITH_WARMUP_FIELDS(FIELD)                                   \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, lr_end)    \
  FIELD(double, power) FIELD(double, lr_init) /* None: the group's initial lr */
  LRSCHED_FIELDS(LRSCHED_POLYNOMIAL_DECAY_WITH_WARMUP_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double initial_lr) const {
    const double lr_init_or_initial = detail::is_none(lr_init) ? initial_lr : lr_init;
    if (step < num_warmup_steps) {
      return detail::linear_warmup(step, num_warmup_steps);
    }
    if (step > num_training_steps) {
      return lr_end / lr_init_or_initial;
    }
    const double lr_range = lr_init_or_initial - lr_end;
    const double decay_steps = num_training_steps - num_warmup_steps;
    const double pct_remaining = 1.0 - (step - num_warmup_steps) / decay_steps;
    const double decay = lr_range * ::pow(pct_remaining, power) + lr_end;
    return decay / lr_init_or_initial;
  }
};

struct InverseSqrt : TransformersLambda<InverseSqrt> {
#define LRSCHED_INVERSE_SQRT_FIELDS(FIELD) \
  FIELD(double, num_warmup_steps) FIELD(double, timescale) /* None: num_warmup_steps or 10_000 */
  LRSCHED_FIELDS(LRSCHED_INVERSE_SQRT_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double /*initial_lr*/) const {
    if (step < num_warmup_steps) {
      return detail::linear_warmup(step, num_warmup_steps);
    }
    const double resolved_timescale =
        detail::is_none(timescale) ? (num_warmup_steps != 0.0 ? num_warmup_steps : 10000.0) : timescale;
    const double shift = resolved_timescale - num_warmup_steps;
    return 1.0 / ::sqrt((step + shift) / resolved_timescale);
  }
};

// Its lambda converts the counts with float() first, hence the + 1.0 terms.
struct CosineWarmupWithMinLr : TransformersLambda<CosineWarmupWithMinLr> {
#define LRSCHED_COSINE_WARMUP_WITH_MIN_LR_FIELDS(FIELD)                                          \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles)    \
  FIELD(double, min_lr_rate) FIELD(double, min_lr) FIELD(double, warmup_lr_rate) /* None: (step + 1) / W */
  LRSCHED_FIELDS(LRSCHED_COSINE_WARMUP_WITH_MIN_LR_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double initial_lr) const {
    using namespace detail;
    if (step < num_warmup_steps) {
      if (is_none(warmup_lr_rate)) {
        return (step + 1.0) / py_max(1.0, num_warmup_steps);
      }
      return warmup_lr_rate + (1.0 - warmup_lr_rate) * step / py_max(1.0, num_warmup_steps - 1.0);
    }
    const double progress = (step - num_warmup_steps + 1.0) / py_max(1.0, num_training_steps - num_warmup_steps);
    return rescaled_to_floor(cosine_wave(num_cycles, progress), resolved_min_lr_rate(min_lr_rate, min_lr, initial_lr));
  }
};

struct WarmupStableDecay : TransformersLambda<WarmupStableDecay> {
#define LRSCHED_WARMUP_STABLE_DECAY_FIELDS(FIELD)                                                   \
  FIELD(double, num_warmup_steps) FIELD(double, num_decay_steps) FIELD(double, num_training_steps)  \
  FIELD(double, num_stable_steps) /* None: num_training_steps - num_warmup_steps - num_decay_steps */ \
  FIELD(WsdShape, warmup_type) FIELD(WsdShape, decay_type) FIELD(double, min_lr_ratio) FIELD(double, num_cycles)
  LRSCHED_FIELDS(LRSCHED_WARMUP_STABLE_DECAY_FIELDS)

  C10_HOST_DEVICE double lr_lambda(double step, double /*initial_lr*/) const {
    using namespace detail;
    const double warmup = num_warmup_steps;
    const double stable = is_none(num_stable_steps) ? num_training_steps - warmup - num_decay_steps
                                                    : num_stable_steps;
    if (step < warmup) {
      const double progress = step / py_max(1.0, warmup);
      double factor;
      switch (warmup_type) {
        case WsdShape::Linear:
          factor = progress;
          break;
        case WsdShape::Cosine:
          factor = 0.5 * (1.0 - ::cos(kPi * progress));
          break;
        default:
          factor = 1.0 - ::sqrt(1.0 - progress);
          break;
      }
      return rescaled_to_floor(factor, min_lr_ratio);
    }
    if (step < warmup + stable) {
      return 1.0;
    }
    if (step < warmup + stable + num_decay_steps) {
      const double progress = (step - warmup - stable) / py_max(1.0, num_decay_steps);
      double factor;
      switch (decay_type) {
        case WsdShape::Linear:
          factor = 1.0 - progress;
          break;
        case WsdShape::Cosine:
          factor = cosine_wave(num_cycles, progress);
          break;
        default:
          factor = 1.0 - ::sqrt(progress);
          break;
      }
      return rescaled_to_floor(factor, min_lr_ratio);
    }
    return min_lr_ratio;
  }
};

}  // namespace lrsched_fused
