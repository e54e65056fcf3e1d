// Operator schemas of the lrsched_fused library and the Python module that
// carries them. Kernels are registered per device: csrc/cpu/, csrc/cuda/.
#include <torch/library.h>
#include <torch/extension.h>

#include "schedule_math.h"
#include "step_plan_bindings.h"

TORCH_LIBRARY(lrsched_fused, m) {
  // One Adam/AdamW step over a list of same-dtype tensors of one param group.
  // The lr is read from schedule_state (NOTE: [schedule state layout]), and so
  // is beta1 when momentum_from_schedule (a schedule with cycle_momentum); each
  // tensor's `steps` entry is incremented. With found_inf != 0 nothing changes.
  m.def(
      "adam_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
      "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] steps, "
      "Tensor schedule_state, int group_index, float beta1, float beta2, float weight_decay, "
      "float eps, bool amsgrad, bool maximize, bool decoupled_weight_decay, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, bool momentum_from_schedule=False) -> ()");
  // One SGD step (momentum read from schedule_state when momentum_from_schedule). momentum_buffers is empty when momentum == 0; first_step[i]
  // says buffer i has no history yet (it is then set to the gradient).
  m.def(
      "sgd_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, "
      "bool[] first_step, Tensor schedule_state, int group_index, float momentum, "
      "float dampening, float weight_decay, bool nesterov, bool maximize, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, bool momentum_from_schedule=False) -> ()");
  // One scheduler.step() on the device, of the schedule `program` (NOTE:
  // [schedule program]). `metric` (one element, any real dtype) feeds
  // ReduceLROnPlateau; with skip_if given and != 0 nothing changes. With
  // initial=True it does what torch's scheduler constructors do instead.
  m.def(
      "schedule_step_(Tensor(a!) schedule_state, float[] program, Tensor? metric=None, "
      "Tensor? skip_if=None, bool initial=False) -> ()");
}

namespace {
template <size_t N>
py::tuple field_names(const std::array<const char*, N>& names) {
  py::tuple result(N);
  for (size_t i = 0; i < N; ++i) {
    result[i] = py::str(names[i]);
  }
  return result;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  lrsched_fused::bind_step_plan(m);
  namespace layout = lrsched_fused::layout;
  m.attr("LAST_EPOCH") = layout::kLastEpoch;
  m.attr("MAX_LEAVES") = layout::kMaxLeaves;
  m.attr("LEAF_STRIDE") = layout::kLeafStride;
  m.attr("HEADER_SIZE") = layout::kHeaderSize;
  m.attr("LEAF_LAST_EPOCH") = layout::kLeafLastEpoch;
  m.attr("PLATEAU_BEST") = layout::kPlateauBest;
  m.attr("PLATEAU_BAD_EPOCHS") = layout::kPlateauBadEpochs;
  m.attr("PLATEAU_COOLDOWN") = layout::kPlateauCooldown;
  m.attr("RESTARTS_T_CUR") = layout::kRestartsTCur;
  m.attr("RESTARTS_T_I") = layout::kRestartsTI;
  m.attr("GROUP_LR") = layout::kGroupLr;
  m.attr("GROUP_BASE_LR") = layout::kGroupBaseLr;
  m.attr("GROUP_MOMENTUM") = layout::kGroupMomentum;
  m.attr("GROUP_MIN_LR") = layout::kGroupMinLr;
  m.attr("GROUP_MAX_LR") = layout::kGroupMaxLr;
  m.attr("GROUP_FINAL_LR") = layout::kGroupFinalLr;
  m.attr("GROUP_BASE_MOMENTUM") = layout::kGroupBaseMomentum;
  m.attr("GROUP_MAX_MOMENTUM") = layout::kGroupMaxMomentum;
  m.attr("GROUP_STRIDE") = layout::kGroupStride;
  m.attr("FIRST_LEAF") = layout::kFirstLeaf;
  m.attr("MAX_PROGRAM_SIZE") = lrsched_fused::kMaxProgramSize;
  // Each leaf kind's number, and its field names in program order (NOTE: [schedule fields]).
  using lrsched_fused::ScheduleKind;
  py::dict schedule_fields;
#define LRSCHED_EXPORT_KIND(Kind, NAME, member, Fields)                              \
  m.attr("KIND_" #NAME) = static_cast<int64_t>(ScheduleKind::Kind);                  \
  schedule_fields[py::int_(static_cast<int64_t>(ScheduleKind::Kind))] = field_names(lrsched_fused::Fields::kNames);
  LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_EXPORT_KIND)
#undef LRSCHED_EXPORT_KIND
  m.attr("SCHEDULE_FIELDS") = schedule_fields;
  using lrsched_fused::Combinator;
  m.attr("COMBINATOR_SINGLE") = static_cast<int64_t>(Combinator::Single);
  m.attr("COMBINATOR_SEQUENTIAL") = static_cast<int64_t>(Combinator::Sequential);
  m.attr("COMBINATOR_CHAINED") = static_cast<int64_t>(Combinator::Chained);
}

