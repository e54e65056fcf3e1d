#pragma once
// torch.optim.lr_scheduler's chainable schedules (NOTE: [schedule kinds]):
// each step derives the new lr from the group's current lr; at a SequentialLR
// milestone they restart from their closed form at 0 (torch's
// _get_closed_form_lr, or get_lr() where there is none).

#include "kind.h"

namespace lrsched_fused {

// The lr stays where it is (schedule=None).
struct Constant {
#define LRSCHED_CONSTANT_FIELDS(FIELD)
  LRSCHED_FIELDS(LRSCHED_CONSTANT_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState&) const {}
  C10_HOST_DEVICE void step(const LeafState&, double /*epoch*/, double /*metric*/) const {}
  C10_HOST_DEVICE void restart(const LeafState&, double /*metric*/) const {}
};

struct StepLR {
#define LRSCHED_STEP_FIELDS(FIELD) FIELD(double, step_size) FIELD(double, gamma)
  LRSCHED_FIELDS(LRSCHED_STEP_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState&) const {}
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    if (epoch != 0.0 && detail::divides(step_size, epoch)) {
      leaf.scale_lrs(gamma);
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(1.0);  // base_lr * gamma ** (0 // step_size)
  }
};

// Its milestones are as many as the program says: milestones..., gamma.
struct MultiStepLR {
  const double* milestones;  // sorted, a repeated one repeated
  int64_t num_milestones;
  double gamma;
  static constexpr int64_t kCount = -1;  // variable
  static constexpr std::array<const char*, 2> kNames{{"milestones", "gamma"}};
  C10_HOST_DEVICE void read_fields(const double* values, int64_t count) {
    milestones = values;
    num_milestones = count - 1;
    gamma = values[count - 1];
  }

  // How many milestones are == epoch, or <= epoch.
  C10_HOST_DEVICE int64_t count_milestones(double epoch, bool up_to) const {
    int64_t count = 0;
    for (int64_t i = 0; i < num_milestones; ++i) {
      const double m = milestones[i];
      count += up_to ? (m <= epoch) : (m == epoch);
    }
    return count;
  }

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    step(leaf, 0.0, 0.0);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    const int64_t count = count_milestones(epoch, false);
    if (count > 0) {
      leaf.scale_lrs(::pow(gamma, static_cast<double>(count)));
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(::pow(gamma, static_cast<double>(count_milestones(0.0, true))));
  }
};

// torch's recursive CosineAnnealingLR (no clamping past T_max: period 2 * T_max).
struct CosineAnnealingLR {
#define LRSCHED_COSINE_FIELDS(FIELD) FIELD(double, T_max) FIELD(double, eta_min)
  LRSCHED_FIELDS(LRSCHED_COSINE_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState&) const {}
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    using detail::kPi;
    if (detail::divides(2.0 * T_max, epoch - 1.0 - T_max)) {
      for (int64_t g = 0; g < leaf.num_groups; ++g) {
        double* slots = leaf.group(g);
        slots[layout::kGroupLr] = slots[layout::kGroupLr] +
            (slots[layout::kGroupBaseLr] - eta_min) * (1.0 - ::cos(kPi / T_max)) / 2.0;
      }
      return;
    }
    const double ratio = (1.0 + ::cos(kPi * epoch / T_max)) / (1.0 + ::cos(kPi * (epoch - 1.0) / T_max));
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double& lr = leaf.group(g)[layout::kGroupLr];
      lr = ratio * (lr - eta_min) + eta_min;
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
      slots[layout::kGroupLr] =
          eta_min + (slots[layout::kGroupBaseLr] - eta_min) * (1.0 + ::cos(detail::kPi * 0.0 / T_max)) / 2.0;
    }
  }
};

struct ExponentialLR {
#define LRSCHED_EXPONENTIAL_FIELDS(FIELD) FIELD(double, gamma)
  LRSCHED_FIELDS(LRSCHED_EXPONENTIAL_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState&) const {}
  C10_HOST_DEVICE void step(const LeafState& leaf, double /*epoch*/, double /*metric*/) const {
    leaf.scale_lrs(gamma);
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(1.0);  // base_lr * gamma ** 0
  }
};

// torch's ConstantLR: `factor` until total_iters.
struct ConstantLR {
#define LRSCHED_CONSTANT_FACTOR_FIELDS(FIELD) FIELD(double, factor) FIELD(double, total_iters)
  LRSCHED_FIELDS(LRSCHED_CONSTANT_FACTOR_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    leaf.scale_lrs(factor);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    if (epoch == total_iters) {
      leaf.scale_lrs(1.0 / factor);
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(factor + (0.0 >= total_iters ? 1.0 - factor : 0.0));
  }
};

struct LinearLR {
#define LRSCHED_LINEAR_FIELDS(FIELD) FIELD(double, start_factor) FIELD(double, end_factor) FIELD(double, total_iters)
  LRSCHED_FIELDS(LRSCHED_LINEAR_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    leaf.scale_lrs(start_factor);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    const double start = start_factor, end = end_factor;
    if (!(epoch > total_iters)) {
      leaf.scale_lrs(1.0 + (end - start) / (total_iters * start + (epoch - 1.0) * (end - start)));
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(start_factor);  // start_factor + (end - start) * min(total_iters, 0) / total_iters
  }
};

struct PolynomialLR {
#define LRSCHED_POLYNOMIAL_FIELDS(FIELD) FIELD(double, total_iters) FIELD(double, power)
  LRSCHED_FIELDS(LRSCHED_POLYNOMIAL_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState&) const {}
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    if (!(epoch > total_iters)) {
      leaf.scale_lrs(::pow((1.0 - epoch / total_iters) / (1.0 - (epoch - 1.0) / total_iters), power));
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    leaf.set_lrs_from_base(1.0);  // base_lr * (1.0 - 0 / total_iters) ** power
  }
};

}  // namespace lrsched_fused
