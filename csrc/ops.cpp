// Operator schemas of the lrsched_fused library and the Python module that
// carries them. Kernels are registered per device: csrc/cpu/, csrc/cuda/.
#include <torch/library.h>
#include <torch/extension.h>

#include "schedule_math.h"

TORCH_LIBRARY(lrsched_fused, m) {
  // One Adam/AdamW step over a list of same-dtype tensors of one param group.
  // The lr is read from schedule_state (NOTE: [schedule state layout]); each
  // tensor's `steps` entry is incremented. With found_inf != 0 nothing changes.
  m.def(
      "adam_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
      "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] steps, "
      "Tensor schedule_state, int group_index, float beta1, float beta2, float weight_decay, "
      "float eps, bool amsgrad, bool maximize, bool decoupled_weight_decay, "
      "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  // One SGD step. momentum_buffers is empty when momentum == 0; first_step[i]
  // says buffer i has no history yet (it is then set to the gradient).
  m.def(
      "sgd_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, "
      "bool[] first_step, Tensor schedule_state, int group_index, float momentum, "
      "float dampening, float weight_decay, bool nesterov, bool maximize, "
      "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  // One scheduler.step() on the device. `metric` (one element, any real dtype)
  // feeds ReduceLROnPlateau; with skip_if given and != 0 nothing changes.
  m.def(
      "schedule_step_(Tensor(a!) schedule_state, int kind, float[] hyperparameters, "
      "Tensor? metric=None, Tensor? skip_if=None) -> ()");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace layout = lrsched_fused::layout;
  m.attr("LAST_EPOCH") = layout::kLastEpoch;
  m.attr("PLATEAU_BEST") = layout::kPlateauBest;
  m.attr("PLATEAU_BAD_EPOCHS") = layout::kPlateauBadEpochs;
  m.attr("PLATEAU_COOLDOWN") = layout::kPlateauCooldown;
  m.attr("HEADER_SIZE") = layout::kHeaderSize;
  m.attr("GROUP_LR") = layout::kGroupLr;
  m.attr("GROUP_BASE_LR") = layout::kGroupBaseLr;
  m.attr("GROUP_MIN_LR") = layout::kGroupMinLr;
  m.attr("GROUP_STRIDE") = layout::kGroupStride;
  using lrsched_fused::ScheduleKind;
  m.attr("KIND_CONSTANT") = static_cast<int64_t>(ScheduleKind::Constant);
  m.attr("KIND_STEP") = static_cast<int64_t>(ScheduleKind::Step);
  m.attr("KIND_COSINE") = static_cast<int64_t>(ScheduleKind::Cosine);
  m.attr("KIND_PLATEAU") = static_cast<int64_t>(ScheduleKind::Plateau);
}
