#pragma once
// NOTE: [update op declaration]
// Every elementwise update op (adam_step_, sgd_step_, ...) has one shape,
// declared once here:
//
//   NAME(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, Tensor schedule_state,
//        int group_index, int flags, Tensor? grad_scale=None, Tensor? found_inf=None,
//        Tensor? clip_coef=None, int[] element_offsets=[]) -> ()
//
// The schema (csrc/ops.cpp), the kernels' C++ signature (UpdateStepSignature),
// the step plan's call (csrc/step_plan.h), the Autograd kernel and the Python
// wrapper and fake (lrsched_fused/_ops.py) are all derived from it. What
// tells the ops apart is their declaration below: their structural flags (bits
// of `flags`) and their named state slots. `states` holds the slots that are
// present, slot after slot in declaration order, one tensor per parameter each
// (a slot guarded by flags is present when any of them is set). Python reads
// the declarations from _C.UPDATE_OPS and builds the lists by name.
//
// The states' dtype (every SlotKind::State tensor of a call has one) is the
// call's state dtype: the params' dtype, float32, bfloat16 or float16 (the
// optimizers' state_dtype; float32 by default with master weights), or uint8
// with the states_8bit flag: every State and SecondMoment slot then holds
// codes, and an Absmax slot per coded slot the blocks' absmax (NOTE: [8-bit
// states] in csrc/states_8bit.h). With the
// stochastic_rounding flag, `element_offsets` holds each param's first
// element's global index (NOTE: [stochastic rounding] in
// csrc/stochastic_rounding.h); else it is empty.
//
// No hyperparameter travels with a call: the kernels read the group's values
// (lr, betas, eps, weight decay, momentum, dampening) from the group's block
// of schedule_state (NOTE: [hyperparameters on the device]).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>

namespace lrsched_fused {

using UpdateStepSignature = void(at::TensorList params, at::TensorList grads, at::TensorList states,
                                 const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                                 const std::optional<at::Tensor>& grad_scale,
                                 const std::optional<at::Tensor>& found_inf,
                                 const std::optional<at::Tensor>& clip_coef,
                                 c10::ArrayRef<int64_t> element_offsets);

// What a state slot holds, per parameter: a tensor like the parameter (in the
// call's state dtype), one that holds squares of grads (a second moment: in
// bfloat16 where the state dtype is float16 by request, NOTE: [float16 second
// moments] in csrc/dispatch.h), a step counter (a one-element float64 tensor),
// the float32 master weights (NOTE: [master weights]), or, with 8-bit states,
// the float32 absmax of each block of the coded slot named `coded` (NOTE:
// [8-bit states]).
enum class SlotKind { State, SecondMoment, Step, Master, Absmax };

// A state slot: its name (torch's state key), what it holds and the flag bits
// that make it present (any of them; 0: always present).
struct StateSlot {
  const char* name;
  SlotKind kind;
  int64_t needs_flag;
  int coded = -1;  // an Absmax slot's coded slot
};

struct AdamStepOp {
  static constexpr const char* kName = "adam_step_";
  static constexpr int64_t kAmsgrad = 1 << 0;
  static constexpr int64_t kDecoupledWeightDecay = 1 << 1;
  static constexpr int64_t kMaximize = 1 << 2;
  static constexpr int64_t kMasterWeights = 1 << 3;
  static constexpr int64_t kStochasticRounding = 1 << 4;  // NOTE: [stochastic rounding]
  static constexpr int64_t kStates8Bit = 1 << 5;          // NOTE: [8-bit states]
  static constexpr int64_t kNot8Bit = kAmsgrad;           // flags 8-bit states do not take
  static constexpr std::array<const char*, 6> kFlagNames{"amsgrad", "decoupled_weight_decay", "maximize",
                                                        "master_weights", "stochastic_rounding", "states_8bit"};
  enum State { kExpAvg, kExpAvgSq, kMaxExpAvgSq, kStep, kMasterParam, kExpAvgAbsmax, kExpAvgSqAbsmax, kNumStates };
  static constexpr std::array<StateSlot, kNumStates> kStates{
      {{"exp_avg", SlotKind::State, 0},
       {"exp_avg_sq", SlotKind::SecondMoment, 0},
       {"max_exp_avg_sq", SlotKind::SecondMoment, kAmsgrad},
       {"step", SlotKind::Step, 0},
       {"master_param", SlotKind::Master, kMasterWeights},
       {"exp_avg_absmax", SlotKind::Absmax, kStates8Bit, kExpAvg},
       {"exp_avg_sq_absmax", SlotKind::Absmax, kStates8Bit, kExpAvgSq}}};
};

struct SgdStepOp {
  static constexpr const char* kName = "sgd_step_";
  static constexpr int64_t kMomentum = 1 << 0;  // momentum buffers (and their step counters) are kept
  static constexpr int64_t kNesterov = 1 << 1;
  static constexpr int64_t kMaximize = 1 << 2;
  static constexpr int64_t kMasterWeights = 1 << 3;
  static constexpr int64_t kStochasticRounding = 1 << 4;  // NOTE: [stochastic rounding]
  static constexpr int64_t kStates8Bit = 1 << 5;          // NOTE: [8-bit states]
  static constexpr int64_t kNot8Bit = 0;
  static constexpr std::array<const char*, 6> kFlagNames{"momentum", "nesterov", "maximize", "master_weights",
                                                        "stochastic_rounding", "states_8bit"};
  // The step counter counts the steps taken (kept with momentum, or with
  // stochastic rounding, whose bits it keys): at 0 a momentum buffer has no
  // history and becomes the gradient (torch's first-step buffer = grad).
  enum State { kMomentumBuffer, kStep, kMasterParam, kMomentumBufferAbsmax, kNumStates };
  static constexpr std::array<StateSlot, kNumStates> kStates{
      {{"momentum_buffer", SlotKind::State, kMomentum},
       {"step", SlotKind::Step, kMomentum | kStochasticRounding},
       {"master_param", SlotKind::Master, kMasterWeights},
       {"momentum_buffer_absmax", SlotKind::Absmax, kStates8Bit, kMomentumBuffer}}};
};

struct LionStepOp {
  static constexpr const char* kName = "lion_step_";
  static constexpr int64_t kMaximize = 1 << 0;
  static constexpr int64_t kMasterWeights = 1 << 1;
  static constexpr int64_t kStochasticRounding = 1 << 2;  // NOTE: [stochastic rounding]
  static constexpr int64_t kStates8Bit = 1 << 3;          // NOTE: [8-bit states]
  static constexpr int64_t kNot8Bit = 0;
  static constexpr std::array<const char*, 4> kFlagNames{"maximize", "master_weights", "stochastic_rounding",
                                                        "states_8bit"};
  // Lion keeps no step count (nor does lion-pytorch); with stochastic
  // rounding a counter keys the rounding bits, as for SGD.
  enum State { kExpAvg, kStep, kMasterParam, kExpAvgAbsmax, kNumStates };
  static constexpr std::array<StateSlot, kNumStates> kStates{
      {{"exp_avg", SlotKind::State, 0},
       {"step", SlotKind::Step, kStochasticRounding},
       {"master_param", SlotKind::Master, kMasterWeights},
       {"exp_avg_absmax", SlotKind::Absmax, kStates8Bit, kExpAvg}}};
};

// Calls f(Op{}) for each update op.
template <typename F>
void for_each_update_op(const F& f) {
  f(AdamStepOp{});
  f(SgdStepOp{});
  f(LionStepOp{});
}

// The op's state slots cut out of `states` (an absent slot is an empty list).
template <typename Op>
std::array<at::TensorList, Op::kNumStates> state_slots(at::TensorList states, size_t num_params, int64_t flags) {
  TORCH_CHECK(flags >= 0 && flags < (int64_t{1} << Op::kFlagNames.size()), Op::kName, ": flags ", flags,
              " has bits no flag names");
  size_t present = 0;
  for (const StateSlot& slot : Op::kStates) {
    present += slot.needs_flag == 0 || (flags & slot.needs_flag) != 0;
  }
  TORCH_CHECK(states.size() == present * num_params, Op::kName, ": states has ", states.size(),
              " tensors, expected ", present * num_params, " (", num_params, " per present slot)");
  std::array<at::TensorList, Op::kNumStates> slots{};
  size_t at = 0;
  for (size_t s = 0; s < Op::kStates.size(); ++s) {
    const int64_t needs = Op::kStates[s].needs_flag;
    if (needs == 0 || (flags & needs) != 0) {
      slots[s] = states.slice(at, num_params);
      at += num_params;
    }
  }
  return slots;
}

}  // namespace lrsched_fused
