#pragma once
// torch's ReduceLROnPlateau (NOTE: [schedule kinds]): the one kind that reads
// the metric of schedule_step(metric), on the device.

#include "kind.h"

namespace lrsched_fused {

// The choices of the string-valued fields, in the order of the Python
// schedule's choice lists (lrsched_fused/schedules/).
enum class PlateauMode : int64_t { Min, Max };
enum class ThresholdMode : int64_t { Rel, Abs };

struct ReduceLROnPlateau {
#define LRSCHED_PLATEAU_FIELDS(FIELD)                                                          \
  FIELD(PlateauMode, mode) FIELD(double, factor) FIELD(double, patience) FIELD(double, threshold) \
  FIELD(ThresholdMode, threshold_mode) FIELD(double, cooldown) FIELD(double, eps)
  LRSCHED_FIELDS(LRSCHED_PLATEAU_FIELDS)

  C10_HOST_DEVICE void construct(const LeafState& leaf) const {
    leaf[layout::kPlateauBest] = mode == PlateauMode::Max ? -INFINITY : INFINITY;  // mode_worse
    leaf[layout::kPlateauBadEpochs] = 0.0;
    leaf[layout::kPlateauCooldown] = 0.0;
  }
  C10_HOST_DEVICE void initial(const LeafState&) const {}

  // step(metric). A NaN metric compares false, so it is a bad epoch, as in torch.
  C10_HOST_DEVICE void step(const LeafState& leaf, double /*epoch*/, double metric) const {
    double& best = leaf[layout::kPlateauBest];
    double& bad_epochs = leaf[layout::kPlateauBadEpochs];
    double& cooldown_counter = leaf[layout::kPlateauCooldown];

    const bool rel = threshold_mode == ThresholdMode::Rel;
    bool is_better;
    if (mode == PlateauMode::Min) {
      is_better = rel ? metric < best * (1.0 - threshold) : metric < best - threshold;
    } else {
      is_better = rel ? metric > best * (threshold + 1.0) : metric > best + threshold;
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
      for (int64_t g = 0; g < leaf.num_groups; ++g) {
        double* slots = leaf.group(g);
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

  // Beyond torch: at its SequentialLR milestone it keeps the lr it is handed
  // and takes its first step(metric), so its last_epoch becomes 1.
  C10_HOST_DEVICE void restart(const LeafState& leaf, double metric) const {
    const double epoch = leaf[layout::kLeafLastEpoch] += 1.0;
    step(leaf, epoch, metric);
  }
};

}  // namespace lrsched_fused
