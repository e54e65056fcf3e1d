#pragma once
// The learning-rate schedules, written once for the CPU and the CUDA path.
//
// NOTE: [schedule state layout]
// All schedule state that changes during training lives in one float64 tensor
// (`schedule_state`) on the parameters' device. The update kernels read each
// group's lr (and, for a schedule that cycles momentum, its momentum/beta1)
// from it and `advance_schedule` rewrites it in place, so a step never needs
// the host. Counters are stored as float64, exact to 2**53. The layout is fixed
// (it does not depend on the schedule), so the update kernels find a group's
// lr from its index alone:
//
//   [0] last_epoch              steps taken by the whole schedule (the outer scheduler's last_epoch)
//   [1] (unused)
//   then kMaxLeaves leaf blocks of kLeafStride slots, one per leaf schedule:
//     [+0] last_epoch           the leaf's own last_epoch
//     [+1..+3]                  ReduceLROnPlateau: best, num_bad_epochs, cooldown_counter
//                               CosineAnnealingWarmRestarts: T_cur, T_i
//   then, per param group g, kGroupStride slots from kHeaderSize + g * kGroupStride:
//     [+0] lr                   the group's current lr
//     [+1] base_lr              torch's initial_lr (OneCycleLR: max_lr / div_factor; CyclicLR: base_lr)
//     [+2] momentum             SGD momentum or Adam beta1, moved by cycle_momentum
//     [+3] min_lr               ReduceLROnPlateau's lower bound
//     [+4] max_lr               OneCycleLR / CyclicLR
//     [+5] final_lr             OneCycleLR's min_lr (initial_lr / final_div_factor)
//     [+6] base_momentum        OneCycleLR / CyclicLR
//     [+7] max_momentum         OneCycleLR / CyclicLR
//
// NOTE: [schedule program]
// What the schedule is (never changes) travels with each op call as a float64
// list, the "program":
//
//   [combinator, num_leaves, milestones (num_leaves - 1 of them, SequentialLR only),
//    then per leaf: kind, num_hyperparameters, hyperparameters...]
//
// A plain schedule is one leaf under Combinator::Single; SequentialLR and
// ChainedScheduler combine up to kMaxLeaves leaves.
//
// The arithmetic below follows torch/optim/lr_scheduler.py expression by
// expression (same operand order, float64), so the lrs agree to the last bit
// on the CPU and to ~1 ulp of cos()/pow() on CUDA.

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

namespace lrsched_fused {

namespace layout {
constexpr int64_t kLastEpoch = 0;
constexpr int64_t kFirstLeaf = 2;
constexpr int64_t kMaxLeaves = 8;
constexpr int64_t kLeafStride = 4;
constexpr int64_t kHeaderSize = kFirstLeaf + kMaxLeaves * kLeafStride;

constexpr int64_t kLeafLastEpoch = 0;
constexpr int64_t kPlateauBest = 1;
constexpr int64_t kPlateauBadEpochs = 2;
constexpr int64_t kPlateauCooldown = 3;
constexpr int64_t kRestartsTCur = 1;
constexpr int64_t kRestartsTI = 2;

constexpr int64_t kGroupLr = 0;
constexpr int64_t kGroupBaseLr = 1;
constexpr int64_t kGroupMomentum = 2;
constexpr int64_t kGroupMinLr = 3;
constexpr int64_t kGroupMaxLr = 4;
constexpr int64_t kGroupFinalLr = 5;
constexpr int64_t kGroupBaseMomentum = 6;
constexpr int64_t kGroupMaxMomentum = 7;
constexpr int64_t kGroupStride = 8;

C10_HOST_DEVICE constexpr int64_t leaf_offset(int64_t leaf) {
  return kFirstLeaf + leaf * kLeafStride;
}
C10_HOST_DEVICE constexpr int64_t group_offset(int64_t group) {
  return kHeaderSize + group * kGroupStride;
}
C10_HOST_DEVICE constexpr int64_t lr_offset(int64_t group) {
  return group_offset(group) + kGroupLr;
}
C10_HOST_DEVICE constexpr int64_t momentum_offset(int64_t group) {
  return group_offset(group) + kGroupMomentum;
}
}  // namespace layout

// The leaf schedules and the hyperparameters each one reads, in order.
enum class ScheduleKind : int64_t {
  Constant = 0,            // -
  Step = 1,                // step_size, gamma
  Cosine = 2,              // T_max, eta_min
  Plateau = 3,             // mode_is_max, factor, patience, threshold, threshold_is_abs, cooldown, eps
  MultiStep = 4,           // gamma, milestones... (sorted, repeated ones repeated)
  Exponential = 5,         // gamma
  ConstantFactor = 6,      // factor, total_iters                   (torch's ConstantLR)
  Linear = 7,              // start_factor, end_factor, total_iters
  Polynomial = 8,          // total_iters, power
  CosineRestarts = 9,      // T_0, T_mult, eta_min                  (CosineAnnealingWarmRestarts)
  OneCycle = 10,           // total_steps, pct_start, anneal_is_linear, three_phase, cycle_momentum,
                           // div_factor, final_div_factor
  Cyclic = 11,             // step_size_up, step_size_down, mode (0 triangular, 1 triangular2,
                           // 2 exp_range), gamma, cycle_momentum
};
constexpr int64_t kLastScheduleKind = static_cast<int64_t>(ScheduleKind::Cyclic);

enum class Combinator : int64_t { Single = 0, Sequential = 1, Chained = 2 };
constexpr int64_t kLastCombinator = static_cast<int64_t>(Combinator::Chained);

// The number of hyperparameters of a kind; -1 for MultiStep, which takes 1 + its milestones.
C10_HOST_DEVICE constexpr int64_t num_hyperparameters(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Constant: return 0;
    case ScheduleKind::Step: return 2;
    case ScheduleKind::Cosine: return 2;
    case ScheduleKind::Plateau: return 7;
    case ScheduleKind::MultiStep: return -1;
    case ScheduleKind::Exponential: return 1;
    case ScheduleKind::ConstantFactor: return 2;
    case ScheduleKind::Linear: return 3;
    case ScheduleKind::Polynomial: return 2;
    case ScheduleKind::CosineRestarts: return 3;
    case ScheduleKind::OneCycle: return 7;
    case ScheduleKind::Cyclic: return 5;
  }
  return 0;
}

// One leaf of a program, with its slice of the state.
struct Leaf {
  ScheduleKind kind;
  int64_t num_hyper;
  const double* hyper;
  double* state;  // the leaf's kLeafStride slots
};

// Reads a program (NOTE: [schedule program]); it was checked on the host.
struct Program {
  const double* values;

  C10_HOST_DEVICE Combinator combinator() const { return static_cast<Combinator>(static_cast<int64_t>(values[0])); }
  C10_HOST_DEVICE int64_t num_leaves() const { return static_cast<int64_t>(values[1]); }
  C10_HOST_DEVICE int64_t num_milestones() const {
    return combinator() == Combinator::Sequential ? num_leaves() - 1 : 0;
  }
  C10_HOST_DEVICE double milestone(int64_t i) const { return values[2 + i]; }
  C10_HOST_DEVICE Leaf leaf(int64_t index, double* state) const {
    int64_t at = 2 + num_milestones();
    for (int64_t l = 0; l < index; ++l) {
      at += 2 + static_cast<int64_t>(values[at + 1]);
    }
    return Leaf{static_cast<ScheduleKind>(static_cast<int64_t>(values[at])), static_cast<int64_t>(values[at + 1]),
                values + at + 2, state + layout::leaf_offset(index)};
  }
};

namespace detail {

constexpr double kPi = 3.141592653589793;  // == math.pi

// Python's truth value of `a % b == 0` for integral a, b: the sign convention of
// the remainder does not change whether it is zero.
C10_HOST_DEVICE inline bool divides(double divisor, double value) {
  return ::fmod(value, divisor) == 0.0;
}

C10_HOST_DEVICE inline double* group_slots(double* state, int64_t group) {
  return state + layout::group_offset(group);
}

// How many of MultiStepLR's sorted milestones are == epoch, or <= epoch.
C10_HOST_DEVICE inline int64_t count_milestones(const Leaf& leaf, double epoch, bool up_to) {
  int64_t count = 0;
  for (int64_t i = 1; i < leaf.num_hyper; ++i) {
    const double m = leaf.hyper[i];
    count += up_to ? (m <= epoch) : (m == epoch);
  }
  return count;
}

C10_HOST_DEVICE inline void scale_lrs(double* state, int64_t num_groups, double factor) {
  for (int64_t g = 0; g < num_groups; ++g) {
    double& lr = group_slots(state, g)[layout::kGroupLr];
    lr = lr * factor;
  }
}

// torch's recursive CosineAnnealingLR (no clamping past T_max: period 2 * T_max).
C10_HOST_DEVICE inline void cosine_annealing_step(const Leaf& leaf, double* state, int64_t num_groups, double epoch) {
  const double t_max = leaf.hyper[0];
  const double eta_min = leaf.hyper[1];
  if (divides(2.0 * t_max, epoch - 1.0 - t_max)) {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = group_slots(state, g);
      slots[layout::kGroupLr] = slots[layout::kGroupLr] +
          (slots[layout::kGroupBaseLr] - eta_min) * (1.0 - ::cos(kPi / t_max)) / 2.0;
    }
    return;
  }
  const double ratio = (1.0 + ::cos(kPi * epoch / t_max)) / (1.0 + ::cos(kPi * (epoch - 1.0) / t_max));
  for (int64_t g = 0; g < num_groups; ++g) {
    double& lr = group_slots(state, g)[layout::kGroupLr];
    lr = ratio * (lr - eta_min) + eta_min;
  }
}

// torch's ReduceLROnPlateau.step(metric). A NaN metric compares false, so it is
// a bad epoch, as in torch.
C10_HOST_DEVICE inline void plateau_step(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  const double* hyper = leaf.hyper;
  const bool mode_is_max = hyper[0] != 0.0;
  const double factor = hyper[1];
  const double patience = hyper[2];
  const double threshold = hyper[3];
  const bool threshold_is_abs = hyper[4] != 0.0;
  const double cooldown = hyper[5];
  const double eps = hyper[6];

  double& best = leaf.state[layout::kPlateauBest];
  double& bad_epochs = leaf.state[layout::kPlateauBadEpochs];
  double& cooldown_counter = leaf.state[layout::kPlateauCooldown];

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
      double* slots = group_slots(state, g);
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

// CosineAnnealingWarmRestarts.get_lr(): absolute, from base_lr, T_cur and T_i.
C10_HOST_DEVICE inline void cosine_restarts_lrs(const Leaf& leaf, double* state, int64_t num_groups) {
  const double eta_min = leaf.hyper[2];
  const double t_cur = leaf.state[layout::kRestartsTCur];
  const double t_i = leaf.state[layout::kRestartsTI];
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    slots[layout::kGroupLr] =
        eta_min + (slots[layout::kGroupBaseLr] - eta_min) * (1.0 + ::cos(kPi * t_cur / t_i)) / 2.0;
  }
}

C10_HOST_DEVICE inline double one_cycle_anneal(bool linear, double start, double end, double pct) {
  if (linear) {
    return (end - start) * pct + start;
  }
  const double cos_out = ::cos(kPi * pct) + 1.0;
  return end + (start - end) / 2.0 * cos_out;
}

// OneCycleLR.get_lr() at step `step_num`: lr (and momentum) of every group.
C10_HOST_DEVICE inline void one_cycle_lrs(const Leaf& leaf, double* state, int64_t num_groups, double step_num) {
  const double total_steps = leaf.hyper[0];
  const double pct_start = leaf.hyper[1];
  const bool linear = leaf.hyper[2] != 0.0;
  const bool three_phase = leaf.hyper[3] != 0.0;
  const bool cycle_momentum = leaf.hyper[4] != 0.0;
  // The phases: end_step, and the group slots the lr and momentum go from and to.
  const int64_t num_phases = three_phase ? 3 : 2;
  double end_steps[3];
  int64_t lr_from[3], lr_to[3], momentum_from[3], momentum_to[3];
  using namespace layout;
  end_steps[0] = pct_start * total_steps - 1.0;
  lr_from[0] = kGroupBaseLr, lr_to[0] = kGroupMaxLr;
  momentum_from[0] = kGroupMaxMomentum, momentum_to[0] = kGroupBaseMomentum;
  if (three_phase) {
    end_steps[1] = 2.0 * pct_start * total_steps - 2.0;
    lr_from[1] = kGroupMaxLr, lr_to[1] = kGroupBaseLr;
    momentum_from[1] = kGroupBaseMomentum, momentum_to[1] = kGroupMaxMomentum;
    end_steps[2] = total_steps - 1.0;
    lr_from[2] = kGroupBaseLr, lr_to[2] = kGroupFinalLr;
    momentum_from[2] = kGroupMaxMomentum, momentum_to[2] = kGroupMaxMomentum;
  } else {
    end_steps[1] = total_steps - 1.0;
    lr_from[1] = kGroupMaxLr, lr_to[1] = kGroupFinalLr;
    momentum_from[1] = kGroupBaseMomentum, momentum_to[1] = kGroupMaxMomentum;
  }
  double start_step = 0.0;
  int64_t phase = 0;
  for (; phase < num_phases - 1 && !(step_num <= end_steps[phase]); ++phase) {
    start_step = end_steps[phase];
  }
  const double pct = (step_num - start_step) / (end_steps[phase] - start_step);
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    slots[kGroupLr] = one_cycle_anneal(linear, slots[lr_from[phase]], slots[lr_to[phase]], pct);
    if (cycle_momentum) {
      slots[kGroupMomentum] = one_cycle_anneal(linear, slots[momentum_from[phase]], slots[momentum_to[phase]], pct);
    }
  }
}

// CyclicLR.get_lr() at `epoch`: lr (and momentum) of every group.
C10_HOST_DEVICE inline void cyclic_lrs(const Leaf& leaf, double* state, int64_t num_groups, double epoch) {
  const double step_size_up = leaf.hyper[0];
  const double step_size_down = leaf.hyper[1];
  const int64_t mode = static_cast<int64_t>(leaf.hyper[2]);
  const double gamma = leaf.hyper[3];
  const bool cycle_momentum = leaf.hyper[4] != 0.0;
  const double total_size = step_size_up + step_size_down;
  const double step_ratio = step_size_up / total_size;
  const double cycle = ::floor(1.0 + epoch / total_size);
  const double x = 1.0 + epoch / total_size - cycle;
  const double scale_factor = x <= step_ratio ? x / step_ratio : (x - 1.0) / (step_ratio - 1.0);
  double scale;  // torch's scale_fn: by cycle for the triangular modes, by iteration for exp_range
  if (mode == 0) {
    scale = 1.0;
  } else if (mode == 1) {
    scale = 1.0 / ::pow(2.0, cycle - 1.0);
  } else {
    scale = ::pow(gamma, epoch);
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    const double base_lr = slots[layout::kGroupBaseLr];
    const double base_height = (slots[layout::kGroupMaxLr] - base_lr) * scale_factor;
    slots[layout::kGroupLr] = base_lr + base_height * scale;
    if (cycle_momentum) {
      const double max_momentum = slots[layout::kGroupMaxMomentum];
      const double momentum_height = (max_momentum - slots[layout::kGroupBaseMomentum]) * scale_factor;
      slots[layout::kGroupMomentum] = max_momentum - momentum_height * scale;
    }
  }
}

// get_lr() at last_epoch 0 of the leaves that set the lr absolutely (no-op for the others).
C10_HOST_DEVICE inline void absolute_lrs_at_zero(const Leaf& leaf, double* state, int64_t num_groups) {
  switch (leaf.kind) {
    case ScheduleKind::CosineRestarts:
      cosine_restarts_lrs(leaf, state, num_groups);
      break;
    case ScheduleKind::OneCycle:
      one_cycle_lrs(leaf, state, num_groups, 0.0);
      break;
    case ScheduleKind::Cyclic:
      cyclic_lrs(leaf, state, num_groups, 0.0);
      break;
    default:
      break;
  }
}

// What a leaf's torch constructor leaves in the scheduler's own state (before
// its initial step touches the lrs), plus OneCycleLR's per-group setup.
C10_HOST_DEVICE inline void construct_leaf(const Leaf& leaf, double* state, int64_t num_groups) {
  leaf.state[layout::kLeafLastEpoch] = 0.0;
  switch (leaf.kind) {
    case ScheduleKind::Plateau:
      leaf.state[layout::kPlateauBest] = leaf.hyper[0] != 0.0 ? -INFINITY : INFINITY;  // mode_worse
      leaf.state[layout::kPlateauBadEpochs] = 0.0;
      leaf.state[layout::kPlateauCooldown] = 0.0;
      break;
    case ScheduleKind::CosineRestarts:
      leaf.state[layout::kRestartsTCur] = 0.0;
      leaf.state[layout::kRestartsTI] = leaf.hyper[0];
      break;
    case ScheduleKind::OneCycle:
      for (int64_t g = 0; g < num_groups; ++g) {
        double* slots = group_slots(state, g);
        slots[layout::kGroupBaseLr] = slots[layout::kGroupMaxLr] / leaf.hyper[5];
        slots[layout::kGroupFinalLr] = slots[layout::kGroupBaseLr] / leaf.hyper[6];
      }
      break;
    default:
      break;
  }
}

// The lr change of a leaf's initial step (torch's _initial_step: get_lr() at
// last_epoch 0 in initial mode).
C10_HOST_DEVICE inline void initial_leaf_lrs(const Leaf& leaf, double* state, int64_t num_groups) {
  switch (leaf.kind) {
    case ScheduleKind::MultiStep: {
      const int64_t count = count_milestones(leaf, 0.0, false);
      if (count > 0) {
        scale_lrs(state, num_groups, ::pow(leaf.hyper[0], static_cast<double>(count)));
      }
      break;
    }
    case ScheduleKind::ConstantFactor:
    case ScheduleKind::Linear:
      scale_lrs(state, num_groups, leaf.hyper[0]);  // factor / start_factor
      break;
    default:
      absolute_lrs_at_zero(leaf, state, num_groups);
      break;
  }
}

// One scheduler.step() of a leaf (ReduceLROnPlateau: step(metric)).
C10_HOST_DEVICE inline void step_leaf(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  if (leaf.kind == ScheduleKind::Plateau) {
    leaf.state[layout::kLeafLastEpoch] += 1.0;
    plateau_step(leaf, state, num_groups, metric);
    return;
  }
  if (leaf.kind == ScheduleKind::CosineRestarts) {  // its own step(): T_cur, T_i, then the absolute lr
    leaf.state[layout::kLeafLastEpoch] += 1.0;
    double& t_cur = leaf.state[layout::kRestartsTCur];
    double& t_i = leaf.state[layout::kRestartsTI];
    t_cur = t_cur + 1.0;
    if (t_cur >= t_i) {
      t_cur = ::fmod(t_cur, t_i);
      t_i = t_i * leaf.hyper[1];
    }
    cosine_restarts_lrs(leaf, state, num_groups);
    return;
  }
  const double epoch = leaf.state[layout::kLeafLastEpoch] += 1.0;
  const double* hyper = leaf.hyper;
  switch (leaf.kind) {
    case ScheduleKind::Step:
      if (epoch != 0.0 && divides(hyper[0], epoch)) {
        scale_lrs(state, num_groups, hyper[1]);
      }
      break;
    case ScheduleKind::MultiStep: {
      const int64_t count = count_milestones(leaf, epoch, false);
      if (count > 0) {
        scale_lrs(state, num_groups, ::pow(hyper[0], static_cast<double>(count)));
      }
      break;
    }
    case ScheduleKind::Cosine:
      cosine_annealing_step(leaf, state, num_groups, epoch);
      break;
    case ScheduleKind::Exponential:
      scale_lrs(state, num_groups, hyper[0]);
      break;
    case ScheduleKind::ConstantFactor:
      if (epoch == hyper[1]) {
        scale_lrs(state, num_groups, 1.0 / hyper[0]);
      }
      break;
    case ScheduleKind::Linear: {
      const double start = hyper[0], end = hyper[1], total_iters = hyper[2];
      if (!(epoch > total_iters)) {
        scale_lrs(state, num_groups,
                  1.0 + (end - start) / (total_iters * start + (epoch - 1.0) * (end - start)));
      }
      break;
    }
    case ScheduleKind::Polynomial: {
      const double total_iters = hyper[0], power = hyper[1];
      if (!(epoch > total_iters)) {
        scale_lrs(state, num_groups,
                  ::pow((1.0 - epoch / total_iters) / (1.0 - (epoch - 1.0) / total_iters), power));
      }
      break;
    }
    case ScheduleKind::OneCycle:
      // torch raises past total_steps; the device cannot, so the lr holds its last value.
      if (!(epoch > hyper[0])) {
        one_cycle_lrs(leaf, state, num_groups, epoch);
      }
      break;
    case ScheduleKind::Cyclic:
      cyclic_lrs(leaf, state, num_groups, epoch);
      break;
    default:
      break;
  }
}

// SequentialLR's hand-over at a milestone: torch's scheduler._update_lr(0),
// i.e. last_epoch = 0 and the closed form at 0 where the scheduler has one.
// A ReduceLROnPlateau leaf (beyond torch) takes its first step(metric) instead.
C10_HOST_DEVICE inline void restart_leaf(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  if (leaf.kind == ScheduleKind::Plateau) {
    step_leaf(leaf, state, num_groups, metric);
    return;
  }
  leaf.state[layout::kLeafLastEpoch] = 0.0;
  const double* hyper = leaf.hyper;
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    const double base_lr = slots[layout::kGroupBaseLr];
    double& lr = slots[layout::kGroupLr];
    switch (leaf.kind) {
      case ScheduleKind::Step:         // base_lr * gamma ** (0 // step_size)
      case ScheduleKind::Exponential:  // base_lr * gamma ** 0
      case ScheduleKind::Polynomial:   // base_lr * (1.0 - 0 / total_iters) ** power
        lr = base_lr * 1.0;
        break;
      case ScheduleKind::MultiStep:
        lr = base_lr * ::pow(hyper[0], static_cast<double>(count_milestones(leaf, 0.0, true)));
        break;
      case ScheduleKind::Cosine:
        lr = hyper[1] + (base_lr - hyper[1]) * (1.0 + ::cos(kPi * 0.0 / hyper[0])) / 2.0;
        break;
      case ScheduleKind::ConstantFactor:
        lr = base_lr * (hyper[0] + (0.0 >= hyper[1] ? 1.0 - hyper[0] : 0.0));
        break;
      case ScheduleKind::Linear:
        lr = base_lr * hyper[0];  // start_factor + (end - start) * min(total_iters, 0) / total_iters
        break;
      default:
        break;
    }
  }
  absolute_lrs_at_zero(leaf, state, num_groups);  // the schedules without a closed form
}

// SequentialLR: the index of the leaf in charge at `epoch` (bisect_right).
C10_HOST_DEVICE inline int64_t sequential_index(const Program& program, double epoch) {
  int64_t index = 0;
  while (index < program.num_milestones() && program.milestone(index) <= epoch) {
    ++index;
  }
  return index;
}

}  // namespace detail

// What torch's constructors do, from a state whose group slots hold each
// group's lr (== base_lr), momentum and the schedule's per-group constants:
// every leaf's construction, then the initial step of the leaf in charge
// (SequentialLR, which resets the lrs to initial_lr first) or of each leaf in
// order (a single schedule, ChainedScheduler).
C10_HOST_DEVICE inline void initialize_schedule(double* state, int64_t num_groups, Program program) {
  state[layout::kLastEpoch] = 0.0;
  const int64_t leaves = program.num_leaves();
  for (int64_t l = 0; l < leaves; ++l) {
    detail::construct_leaf(program.leaf(l, state), state, num_groups);
  }
  if (program.combinator() == Combinator::Sequential) {
    detail::initial_leaf_lrs(program.leaf(detail::sequential_index(program, 0.0), state), state, num_groups);
    return;
  }
  for (int64_t l = 0; l < leaves; ++l) {
    detail::initial_leaf_lrs(program.leaf(l, state), state, num_groups);
  }
}

// One scheduler.step() of the whole schedule. `metric` is read only by
// ReduceLROnPlateau leaves.
C10_HOST_DEVICE inline void advance_schedule(double* state, int64_t num_groups, Program program, double metric) {
  const double epoch = state[layout::kLastEpoch] += 1.0;
  if (program.combinator() == Combinator::Sequential) {
    const int64_t index = detail::sequential_index(program, epoch);
    const Leaf leaf = program.leaf(index, state);
    if (index > 0 && program.milestone(index - 1) == epoch) {
      detail::restart_leaf(leaf, state, num_groups, metric);
    } else {
      detail::step_leaf(leaf, state, num_groups, metric);
    }
    return;
  }
  for (int64_t l = 0; l < program.num_leaves(); ++l) {  // Single, Chained: every leaf in order
    detail::step_leaf(program.leaf(l, state), state, num_groups, metric);
  }
}

}  // namespace lrsched_fused
