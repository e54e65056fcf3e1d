#pragma once
// Where everything sits in the float64 device state of an optimizer
// (`schedule_state`): what the schedule math, the update kernels and Python
// (through _C's constants) agree on. The update kernels include this header
// alone.
//
// NOTE: [schedule state layout]
// All state that changes during training, besides the per-parameter tensors,
// lives in one float64 tensor (`schedule_state`) on the parameters' device:
// the schedule's counters, and per param group the lr, the schedule's
// per-group values and every hyperparameter an update kernel reads. The update
// kernels read a group's values from it and `advance_schedule` rewrites it in
// place, so a step never needs the host, and a CUDA graph replays with what
// the block holds then (NOTE: [hyperparameters on the device]). Counters are
// stored as float64, exact to 2**53. The layout is fixed (it does not depend
// on the schedule or the optimizer), so a kernel finds a group's values from
// its index alone:
//
//   [0] last_epoch              steps taken by the whole schedule (the outer scheduler's last_epoch)
//   [1] rounding_seed         the key of stochastic rounding's bits (an integer < 2**53;
//                             NOTE: [stochastic rounding] in csrc/stochastic_rounding.h)
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
//     [+8] weight_decay         the optimizer's hyperparameters (each optimizer's
//     [+9] beta2                list of the ones it reads: HyperparameterSlots in
//     [+10] eps                 lrsched_fused/optimizers.py); unused ones stay 0
//     [+11] dampening
//
// NOTE: [hyperparameters on the device]: Python keeps each group's values in
// the block (lrsched_fused/device_schedule.py says when it writes them).

#include <c10/macros/Macros.h>

#include <cstdint>

namespace lrsched_fused {

namespace layout {
constexpr int64_t kLastEpoch = 0;
constexpr int64_t kRoundingSeed = 1;
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
constexpr int64_t kGroupWeightDecay = 8;
constexpr int64_t kGroupBeta2 = 9;
constexpr int64_t kGroupEps = 10;
constexpr int64_t kGroupDampening = 11;
constexpr int64_t kGroupStride = 12;

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

}  // namespace lrsched_fused
