#pragma once
// torch.optim.lr_scheduler's schedules that set the lr absolutely from each
// group's own values (NOTE: [schedule kinds]): CosineAnnealingWarmRestarts
// (from base_lr and its T_cur, T_i), OneCycleLR and CyclicLR (from their
// per-group slots, momentum included). At a SequentialLR milestone they
// restart with get_lr() at last_epoch 0, as torch's _update_lr(0).

#include "kind.h"

namespace lrsched_fused {

// The choices of the string-valued fields, in the order of the Python
// schedules' choice lists (lrsched_fused/schedules/).
enum class AnnealStrategy : int64_t { Cos, Linear };
enum class CyclicMode : int64_t { Triangular, Triangular2, ExpRange };

// Its own step(): T_cur, T_i, then the absolute lr.
struct CosineAnnealingWarmRestarts {
#define LRSCHED_COSINE_RESTARTS_FIELDS(FIELD) FIELD(double, T_0) FIELD(double, T_mult) FIELD(double, eta_min)
  LRSCHED_FIELDS(LRSCHED_COSINE_RESTARTS_FIELDS)

  // get_lr(): from base_lr, T_cur and T_i.
  C10_HOST_DEVICE void set_lrs(const LeafState& leaf) const {
    const double t_cur = leaf[layout::kRestartsTCur];
    const double t_i = leaf[layout::kRestartsTI];
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
      slots[layout::kGroupLr] =
          eta_min + (slots[layout::kGroupBaseLr] - eta_min) * (1.0 + ::cos(detail::kPi * t_cur / t_i)) / 2.0;
    }
  }

  C10_HOST_DEVICE void construct(const LeafState& leaf) const {
    leaf[layout::kRestartsTCur] = 0.0;
    leaf[layout::kRestartsTI] = T_0;
  }
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    set_lrs(leaf);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double /*epoch*/, double /*metric*/) const {
    double& t_cur = leaf[layout::kRestartsTCur];
    double& t_i = leaf[layout::kRestartsTI];
    t_cur = t_cur + 1.0;
    if (t_cur >= t_i) {
      t_cur = ::fmod(t_cur, t_i);
      t_i = t_i * T_mult;
    }
    set_lrs(leaf);
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    set_lrs(leaf);
  }
};

struct OneCycleLR {
#define LRSCHED_ONE_CYCLE_FIELDS(FIELD)                                                                 \
  FIELD(double, total_steps) FIELD(double, pct_start) FIELD(AnnealStrategy, anneal_strategy)             \
  FIELD(bool, cycle_momentum) FIELD(double, div_factor) FIELD(double, final_div_factor) FIELD(bool, three_phase)
  LRSCHED_FIELDS(LRSCHED_ONE_CYCLE_FIELDS)

  C10_HOST_DEVICE static double anneal(bool linear, double start, double end, double pct) {
    if (linear) {
      return (end - start) * pct + start;
    }
    const double cos_out = ::cos(detail::kPi * pct) + 1.0;
    return end + (start - end) / 2.0 * cos_out;
  }

  // get_lr() at step `step_num`: lr (and momentum) of every group.
  C10_HOST_DEVICE void set_lrs(const LeafState& leaf, double step_num) const {
    const bool linear = anneal_strategy == AnnealStrategy::Linear;
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
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
      slots[kGroupLr] = anneal(linear, slots[lr_from[phase]], slots[lr_to[phase]], pct);
      if (cycle_momentum) {
        slots[kGroupMomentum] = anneal(linear, slots[momentum_from[phase]], slots[momentum_to[phase]], pct);
      }
    }
  }

  C10_HOST_DEVICE void construct(const LeafState& leaf) const {
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
      slots[layout::kGroupBaseLr] = slots[layout::kGroupMaxLr] / div_factor;
      slots[layout::kGroupFinalLr] = slots[layout::kGroupBaseLr] / final_div_factor;
    }
  }
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    set_lrs(leaf, 0.0);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    // torch raises past total_steps; the device cannot, so the lr holds its last value.
    if (!(epoch > total_steps)) {
      set_lrs(leaf, epoch);
    }
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    set_lrs(leaf, 0.0);
  }
};

struct CyclicLR : AbsoluteSchedule<CyclicLR> {
#define LRSCHED_CYCLIC_FIELDS(FIELD)                                                    \
  FIELD(double, step_size_up) FIELD(double, step_size_down) /* None: step_size_up */    \
  FIELD(CyclicMode, mode) FIELD(double, gamma) FIELD(bool, cycle_momentum)
  LRSCHED_FIELDS(LRSCHED_CYCLIC_FIELDS)

  // get_lr() at `epoch`: lr (and momentum) of every group.
  C10_HOST_DEVICE void set_lrs(const LeafState& leaf, double epoch) const {
    const double step_size_down_or_up = detail::is_none(step_size_down) ? step_size_up : step_size_down;
    const double total_size = step_size_up + step_size_down_or_up;
    const double step_ratio = step_size_up / total_size;
    const double cycle = ::floor(1.0 + epoch / total_size);
    const double x = 1.0 + epoch / total_size - cycle;
    const double scale_factor = x <= step_ratio ? x / step_ratio : (x - 1.0) / (step_ratio - 1.0);
    double scale;  // torch's scale_fn: by cycle for the triangular modes, by iteration for exp_range
    switch (mode) {
      case CyclicMode::Triangular:
        scale = 1.0;
        break;
      case CyclicMode::Triangular2:
        scale = 1.0 / ::pow(2.0, cycle - 1.0);
        break;
      default:
        scale = ::pow(gamma, epoch);
        break;
    }
    for (int64_t g = 0; g < leaf.num_groups; ++g) {
      double* slots = leaf.group(g);
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

};

}  // namespace lrsched_fused
