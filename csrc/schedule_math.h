#pragma once
// The learning-rate schedules, written once for the CPU and the CUDA path.
//
// NOTE: [schedule state layout]
// All schedule state that changes during training lives in one float64 tensor
// (`schedule_state`) on the parameters' device. The update kernels read each
// group's lr from it and `advance_schedule` rewrites it in place, so a step
// never needs the host. Counters are stored as float64, exact to 2**53.
//
//   [0] last_epoch            number of schedule steps taken (torch's last_epoch)
//   [1] plateau_best          ReduceLROnPlateau: best metric seen (+-inf at start)
//   [2] plateau_bad_epochs    ReduceLROnPlateau: num_bad_epochs
//   [3] plateau_cooldown      ReduceLROnPlateau: cooldown_counter
//   then, per param group g, kGroupStride slots from kHeaderSize + g * kGroupStride:
//   [+0] lr                   the group's current lr
//   [+1] base_lr              the group's initial lr (torch's initial_lr)
//   [+2] min_lr               ReduceLROnPlateau's per-group lower bound
//
// The arithmetic below follows torch/optim/lr_scheduler.py expression by
// expression (same operand order, float64), so the lrs agree to the last bit
// on the CPU and to ~1 ulp of cos() on CUDA.

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

namespace lrsched_fused {

namespace layout {
constexpr int64_t kLastEpoch = 0;
constexpr int64_t kPlateauBest = 1;
constexpr int64_t kPlateauBadEpochs = 2;
constexpr int64_t kPlateauCooldown = 3;
constexpr int64_t kHeaderSize = 4;

constexpr int64_t kGroupLr = 0;
constexpr int64_t kGroupBaseLr = 1;
constexpr int64_t kGroupMinLr = 2;
constexpr int64_t kGroupStride = 3;

C10_HOST_DEVICE constexpr int64_t group_offset(int64_t group) {
  return kHeaderSize + group * kGroupStride;
}
C10_HOST_DEVICE constexpr int64_t lr_offset(int64_t group) {
  return group_offset(group) + kGroupLr;
}
}  // namespace layout

// The schedule kinds and the hyperparameters each one reads, in order.
enum class ScheduleKind : int64_t {
  Constant = 0,  // no hyperparameters
  Step = 1,      // step_size, gamma
  Cosine = 2,    // T_max, eta_min
  Plateau = 3,   // mode_is_max, factor, patience, threshold, threshold_is_abs, cooldown, eps
};

constexpr int64_t num_hyperparameters(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Step:
    case ScheduleKind::Cosine:
      return 2;
    case ScheduleKind::Plateau:
      return 7;
    default:
      return 0;
  }
}

namespace detail {

// Python's truth value of `a % b != 0` for integral a, b: the sign convention of
// the remainder does not change whether it is zero.
C10_HOST_DEVICE inline bool divides(double divisor, double value) {
  return ::fmod(value, divisor) == 0.0;
}

C10_HOST_DEVICE inline void step_lr(double* state, int64_t num_groups, const double* hyper) {
  const double step_size = hyper[0];
  const double gamma = hyper[1];
  const double epoch = state[layout::kLastEpoch];
  if (epoch == 0.0 || !divides(step_size, epoch)) {
    return;
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    state[layout::lr_offset(g)] = state[layout::lr_offset(g)] * gamma;
  }
}

// torch's recursive CosineAnnealingLR (no clamping past T_max: period 2 * T_max).
C10_HOST_DEVICE inline void cosine_annealing_lr(double* state, int64_t num_groups, const double* hyper) {
  constexpr double kPi = 3.141592653589793;  // == math.pi
  const double t_max = hyper[0];
  const double eta_min = hyper[1];
  const double epoch = state[layout::kLastEpoch];
  if (divides(2.0 * t_max, epoch - 1.0 - t_max)) {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = state + layout::group_offset(g);
      slots[layout::kGroupLr] = slots[layout::kGroupLr] +
          (slots[layout::kGroupBaseLr] - eta_min) * (1.0 - ::cos(kPi / t_max)) / 2.0;
    }
    return;
  }
  const double ratio = (1.0 + ::cos(kPi * epoch / t_max)) / (1.0 + ::cos(kPi * (epoch - 1.0) / t_max));
  for (int64_t g = 0; g < num_groups; ++g) {
    double& lr = state[layout::lr_offset(g)];
    lr = ratio * (lr - eta_min) + eta_min;
  }
}

// torch's ReduceLROnPlateau.step(metric). A NaN metric compares false, so it is
// a bad epoch, as in torch.
C10_HOST_DEVICE inline void reduce_lr_on_plateau(
    double* state, int64_t num_groups, const double* hyper, double metric) {
  const bool mode_is_max = hyper[0] != 0.0;
  const double factor = hyper[1];
  const double patience = hyper[2];
  const double threshold = hyper[3];
  const bool threshold_is_abs = hyper[4] != 0.0;
  const double cooldown = hyper[5];
  const double eps = hyper[6];

  double& best = state[layout::kPlateauBest];
  double& bad_epochs = state[layout::kPlateauBadEpochs];
  double& cooldown_counter = state[layout::kPlateauCooldown];

  bool is_better;
  if (!mode_is_max && !threshold_is_abs) {
    is_better = metric < best * (1.0 - threshold);
  } else if (!mode_is_max) {
    is_better = metric < best - threshold;
  } else if (!threshold_is_abs) {
    is_better = metric > best * (threshold + 1.0);
  } else {
    is_better = metric > best + threshold;
  }
  if (is_better) {
    best = metric;
    bad_epochs = 0.0;
  } else {
    bad_epochs += 1.0;
  }
  if (cooldown_counter > 0.0) {
    cooldown_counter -= 1.0;
    bad_epochs = 0.0;
  }
  if (bad_epochs > patience) {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = state + layout::group_offset(g);
      const double old_lr = slots[layout::kGroupLr];
      const double scaled = old_lr * factor;
      const double min_lr = slots[layout::kGroupMinLr];
      const double new_lr = scaled < min_lr ? min_lr : scaled;  // Python's max(scaled, min_lr)
      if (old_lr - new_lr > eps) {
        slots[layout::kGroupLr] = new_lr;
      }
    }
    cooldown_counter = cooldown;
    bad_epochs = 0.0;
  }
}

}  // namespace detail

// One scheduler.step(): last_epoch += 1, then the kind's rule. `metric` is read
// only by ReduceLROnPlateau.
C10_HOST_DEVICE inline void advance_schedule(
    double* state, int64_t num_groups, ScheduleKind kind, const double* hyper, double metric) {
  state[layout::kLastEpoch] += 1.0;
  switch (kind) {
    case ScheduleKind::Step:
      detail::step_lr(state, num_groups, hyper);
      break;
    case ScheduleKind::Cosine:
      detail::cosine_annealing_lr(state, num_groups, hyper);
      break;
    case ScheduleKind::Plateau:
      detail::reduce_lr_on_plateau(state, num_groups, hyper, metric);
      break;
    default:
      break;
  }
}

}  // namespace lrsched_fused
