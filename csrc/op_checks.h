#pragma once
// Argument checks shared by the CPU and CUDA registrations of every op. The
// Python layer validates user input with friendly errors first; these guard
// the op boundary for direct torch.ops callers.
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <array>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "schedule_math.h"
#include "states_8bit.h"
#include "update_ops.h"

namespace lrsched_fused {

inline int64_t num_schedule_groups(const at::Tensor& schedule_state) {
  TORCH_CHECK(schedule_state.scalar_type() == at::kDouble && schedule_state.dim() == 1 &&
                  schedule_state.is_contiguous(),
              "schedule_state must be a contiguous 1-D float64 tensor, got ", schedule_state.scalar_type(),
              " with shape ", schedule_state.sizes());
  const int64_t payload = schedule_state.numel() - layout::kHeaderSize;
  TORCH_CHECK(payload >= 0 && payload % layout::kGroupStride == 0,
              "schedule_state has ", schedule_state.numel(), " elements, which is not ", layout::kHeaderSize,
              " + ", layout::kGroupStride, " * num_groups");
  return payload / layout::kGroupStride;
}

inline void check_group_index(const at::Tensor& schedule_state, int64_t group_index) {
  const int64_t groups = num_schedule_groups(schedule_state);
  TORCH_CHECK(group_index >= 0 && group_index < groups, "group_index ", group_index,
              " is out of range for a schedule_state of ", groups, " groups");
}

// Every tensor of a slot (grads, exp_avgs, ...) must match the parameter it
// belongs to in device, shape and strides, and have the parameter's dtype or
// `dtype` (the states' dtype, float32 masters); the parameter must be dense
// so that one flat pass over its storage covers it exactly.
inline void check_slot(at::TensorList params, at::TensorList slot, const char* slot_name,
                       std::optional<at::ScalarType> dtype = std::nullopt) {
  TORCH_CHECK(slot.size() == params.size(), slot_name, " has ", slot.size(), " tensors, expected ",
              params.size(), " (one per parameter)");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& t = slot[i];
    const at::ScalarType expected = dtype.value_or(p.scalar_type());
    TORCH_CHECK(t.device() == p.device() && t.scalar_type() == expected && t.sizes() == p.sizes() &&
                    t.strides() == p.strides(),
                slot_name, "[", i, "] must match its parameter in device, shape and strides and have dtype ",
                expected, ": got ", t.device(), " ", t.scalar_type(), " ", t.sizes(), " strides ", t.strides(),
                " vs ", p.device(), " ", p.scalar_type(), " ", p.sizes(), " strides ", p.strides());
  }
}

// NOTE: [master weights]
// With master_params non-empty an update op keeps bfloat16/float16 params
// on a float32 trajectory: each param has a float32 master copy, the states
// are float32 (or the state_dtype asked for), the grad is read in the param's
// dtype and widened, the update of update_math.h runs on the master exactly
// as on a float32 parameter, and the param is written as the master rounded
// to nearest (even), in the same pass over the elements (never
// stochastically: the master holds the trajectory). A float32 parameter
// stepped by torch's fused optimizer with the widened grads follows the same
// trajectory as the master.
// With master weights, params must be bfloat16 or float16.
inline void check_master_dtypes(at::TensorList params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const at::ScalarType dtype = params[i].scalar_type();
    TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "params[", i, "] has dtype ", dtype,
                "; master weights are taken for bfloat16 and float16 params only");
  }
}

inline void check_params(at::TensorList params, const at::Tensor& schedule_state) {
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::ScalarType dtype = p.scalar_type();
    // Not at::isFloatingType: it admits the float8 types, which no kernel dispatches.
    TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
                "params[", i, "] has dtype ", dtype, "; accepted: float16, bfloat16, float32, float64");
    TORCH_CHECK(p.scalar_type() == params[0].scalar_type(), "params[", i, "] has dtype ", p.scalar_type(),
                " but params[0] has ", params[0].scalar_type(), "; one call takes one dtype");
    TORCH_CHECK(p.device() == schedule_state.device(), "params[", i, "] is on ", p.device(),
                " but schedule_state is on ", schedule_state.device());
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "params[", i,
                "] is not dense (a strided view?); lrsched_fused updates dense parameters only");
  }
}

inline void check_steps(at::TensorList params, at::TensorList steps) {
  TORCH_CHECK(steps.size() == params.size(), "steps has ", steps.size(), " tensors, expected ", params.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    TORCH_CHECK(steps[i].scalar_type() == at::kDouble && steps[i].numel() == 1 &&
                    steps[i].device() == params[i].device(),
                "steps[", i, "] must be a one-element float64 tensor on ", params[i].device(), ", got ",
                steps[i].scalar_type(), " ", steps[i].sizes(), " on ", steps[i].device());
  }
}

inline void check_scalar_tensor(const std::optional<at::Tensor>& t, const char* name) {
  if (t.has_value()) {
    TORCH_CHECK(t->numel() == 1 && !at::isComplexType(t->scalar_type()), name,
                " must be a one-element real tensor, got ", t->scalar_type(), " ", t->sizes());
  }
}

// The arguments of grad_norm_partial_, the same on every device (NOTE: [grad norm]).
inline void check_grad_norm_args(at::TensorList grads, double norm_type, const at::Tensor& partial) {
  TORCH_CHECK(norm_type > 0, "grad_norm_partial_: norm_type must be > 0 (inf for the max norm), got ", norm_type);
  TORCH_CHECK(partial.numel() == 1 && partial.scalar_type() == at::kDouble,
              "grad_norm_partial_: partial must be a one-element float64 tensor, got ", partial.scalar_type(), " ",
              partial.sizes());
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    TORCH_CHECK(at::isFloatingType(g.scalar_type()) && g.element_size() >= 2,
                "grad_norm_partial_: grads[", i, "] must be float64, float32, bfloat16 or float16, got ",
                g.scalar_type());
    TORCH_CHECK(g.device() == partial.device(), "grad_norm_partial_: grads[", i, "] is on ", g.device(),
                ", partial on ", partial.device());
    TORCH_CHECK(!g.is_sparse() && g.layout() == at::kStrided, "grad_norm_partial_: grads[", i, "] must be dense");
  }
}

// The arguments of clip_coefficient_, the same on every device.
inline void check_clip_coefficient_args(const at::Tensor& partial, double norm_type, double max_norm,
                                        const at::Tensor& total_norm, const at::Tensor& clip_coef) {
  TORCH_CHECK(norm_type > 0, "clip_coefficient_: norm_type must be > 0 (inf for the max norm), got ", norm_type);
  TORCH_CHECK(max_norm > 0, "clip_coefficient_: max_norm must be > 0, got ", max_norm);
  TORCH_CHECK(partial.numel() == 1 && partial.scalar_type() == at::kDouble,
              "clip_coefficient_: partial must be a one-element float64 tensor");
  TORCH_CHECK(total_norm.numel() == 1 && clip_coef.numel() == 1 && total_norm.scalar_type() == clip_coef.scalar_type() &&
                  at::isFloatingType(total_norm.scalar_type()) && total_norm.element_size() >= 2,
              "clip_coefficient_: total_norm and clip_coef must be one-element tensors of one floating dtype, got ",
              total_norm.scalar_type(), " and ", clip_coef.scalar_type());
  TORCH_CHECK(partial.device() == total_norm.device() && partial.device() == clip_coef.device(),
              "clip_coefficient_: partial, total_norm and clip_coef must be on one device");
}

// One call of an update op (NOTE: [update op declaration]), checked: what
// every device's kernel starts from.
template <typename Op>
struct UpdateCall {
  at::TensorList params;
  at::TensorList grads;
  std::array<at::TensorList, Op::kNumStates> slots;  // an absent slot is empty
  at::ScalarType state_dtype;                        // of every SlotKind::State tensor
  const at::Tensor& schedule_state;
  int64_t group_index;
  int64_t flags;
  const std::optional<at::Tensor>& grad_scale;
  const std::optional<at::Tensor>& found_inf;
  const std::optional<at::Tensor>& clip_coef;
  c10::ArrayRef<int64_t> element_offsets;  // with stochastic rounding; else empty

  bool has(int64_t flag) const { return (flags & flag) != 0; }
};

// The states' dtype of a call: the first state tensor's (float32 by default
// with master weights, else the params'), one of those update_types takes
// (csrc/dispatch.h), or uint8 with 8-bit states (NOTE: [8-bit states]).
template <typename Op>
at::ScalarType checked_state_dtype(at::TensorList params, const std::array<at::TensorList, Op::kNumStates>& slots,
                                   bool master, bool coded) {
  at::ScalarType dtype = master || params.empty() ? at::kFloat : params[0].scalar_type();
  for (size_t s = 0; s < Op::kStates.size(); ++s) {
    if (Op::kStates[s].kind == SlotKind::State && !slots[s].empty()) {
      dtype = slots[s][0].scalar_type();
      break;
    }
  }
  if (coded) {
    TORCH_CHECK(dtype == at::kByte, Op::kName, ": with states_8bit the states are uint8 codes, got ", dtype);
    return dtype;
  }
  const bool accepted = dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf ||
                        (!params.empty() && dtype == params[0].scalar_type() && !master);
  TORCH_CHECK(accepted, Op::kName, ": states of dtype ", dtype, " are not taken; a state dtype is float32, ",
              "bfloat16, float16 or the params' dtype (not with master weights), or uint8 with states_8bit");
  return dtype;
}

// With 8-bit states (NOTE: [8-bit states]): the params are float32,
// bfloat16 or float16, no flag the coded update lacks is set, every coded
// slot is there, and each absmax is a contiguous float32 vector of one value
// per block of its parameter.
template <typename Op>
void check_8bit_slots(at::TensorList params, const std::array<at::TensorList, Op::kNumStates>& slots,
                      int64_t flags) {
  TORCH_CHECK((flags & Op::kNot8Bit) == 0, Op::kName, ": flags ", flags, " set a flag that states_8bit does ",
              "not take (", Op::kNot8Bit, ")");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::ScalarType dtype = params[i].scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, Op::kName, ": params[", i,
                "] has dtype ", dtype, "; 8-bit states are kept for float32, bfloat16 and float16 params");
  }
  for (size_t s = 0; s < Op::kStates.size(); ++s) {
    const StateSlot& slot = Op::kStates[s];
    if (slot.kind != SlotKind::Absmax) {
      continue;
    }
    TORCH_CHECK(params.empty() || !slots[slot.coded].empty(), Op::kName, ": ", slot.name, " is there but ",
                Op::kStates[slot.coded].name, " is not (its flags)");
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& absmax = slots[s][i];
      const int64_t blocks = states_8bit::num_blocks(params[i].numel());
      TORCH_CHECK(absmax.scalar_type() == at::kFloat && absmax.dim() == 1 && absmax.numel() == blocks &&
                      absmax.is_contiguous() && absmax.device() == params[i].device(),
                  slot.name, "[", i, "] must be a contiguous float32 vector of ", blocks, " values on ",
                  params[i].device(), " (one per block of ", states_8bit::kBlock, " elements), got ",
                  absmax.scalar_type(), " ", absmax.sizes(), " on ", absmax.device());
    }
  }
}

// The arguments of an update op, the same on every device: every tensor of a
// slot matches its parameter; the states share one dtype (above); masters are
// float32; with stochastic rounding every param has an element offset.
template <typename Op>
UpdateCall<Op> check_update_call(at::TensorList params, at::TensorList grads, at::TensorList states,
                                 const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                                 const std::optional<at::Tensor>& grad_scale,
                                 const std::optional<at::Tensor>& found_inf,
                                 const std::optional<at::Tensor>& clip_coef,
                                 c10::ArrayRef<int64_t> element_offsets) {
  check_group_index(schedule_state, group_index);
  check_params(params, schedule_state);
  check_slot(params, grads, "grads");
  const auto slots = state_slots<Op>(states, params.size(), flags);
  const bool master = (flags & Op::kMasterWeights) != 0;
  const bool coded = (flags & Op::kStates8Bit) != 0;
  if (master) {
    check_master_dtypes(params);
  }
  if (coded) {
    check_8bit_slots<Op>(params, slots, flags);
  }
  const at::ScalarType state_dtype = checked_state_dtype<Op>(params, slots, master, coded);
  for (size_t s = 0; s < Op::kStates.size(); ++s) {
    const StateSlot& slot = Op::kStates[s];
    if ((slot.needs_flag != 0 && (flags & slot.needs_flag) == 0) || slot.kind == SlotKind::Absmax) {
      continue;
    }
    if (slot.kind == SlotKind::Step) {
      check_steps(params, slots[s]);
    } else if (slot.kind == SlotKind::SecondMoment && !params.empty() && !coded) {
      check_slot(params, slots[s], slot.name, second_moment_dtype(params[0].scalar_type(), state_dtype, master));
    } else {
      check_slot(params, slots[s], slot.name, slot.kind == SlotKind::Master ? at::kFloat : state_dtype);
    }
  }
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  check_scalar_tensor(clip_coef, "clip_coef");
  const bool rounds = (flags & Op::kStochasticRounding) != 0;
  TORCH_CHECK(element_offsets.size() == (rounds ? params.size() : 0), Op::kName, ": element_offsets has ",
              element_offsets.size(), " values, expected ", rounds ? params.size() : 0,
              rounds ? " (one per param with stochastic_rounding)" : " (it is for stochastic_rounding)");
  for (size_t i = 0; i < element_offsets.size(); ++i) {
    TORCH_CHECK(element_offsets[i] >= 0, Op::kName, ": element_offsets[", i, "] is ", element_offsets[i],
                ", expected >= 0");
  }
  return {params, grads, slots, state_dtype, schedule_state, group_index, flags, grad_scale, found_inf, clip_coef,
          element_offsets};
}

// The arguments of muon_momentum_ (NOTE: [Muon's passes]), the same on every device.
inline void check_muon_momentum_args(at::TensorList grads, at::TensorList buffers, at::TensorList updates,
                                     const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                                     const std::optional<at::Tensor>& grad_scale,
                                     const std::optional<at::Tensor>& found_inf,
                                     const std::optional<at::Tensor>& clip_coef) {
  check_group_index(schedule_state, group_index);
  check_params(grads, schedule_state);
  check_slot(grads, buffers, "momentum_buffers");
  check_slot(grads, updates, "updates", at::kBFloat16);
  TORCH_CHECK(flags >= 0 && flags <= 1, "muon_momentum_: flags ", flags, " has bits no flag names (bit 0: nesterov)");
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  check_scalar_tensor(clip_coef, "clip_coef");
}

// The arguments of muon_apply_ (NOTE: [Muon's passes]), the same on every device.
inline void check_muon_apply_args(at::TensorList params, at::TensorList orthogonalized,
                                  const at::Tensor& schedule_state, int64_t group_index,
                                  c10::ArrayRef<double> lr_ratios, const std::optional<at::Tensor>& found_inf) {
  check_group_index(schedule_state, group_index);
  check_params(params, schedule_state);
  check_slot(params, orthogonalized, "orthogonalized", at::kBFloat16);
  TORCH_CHECK(lr_ratios.size() == params.size(), "muon_apply_: lr_ratios has ", lr_ratios.size(),
              " values, expected ", params.size(), " (one per param)");
  check_scalar_tensor(found_inf, "found_inf");
}

// A schedule program (NOTE: [schedule program]) read in full before any state
// changes; returns it, checked.
inline Program check_schedule_program(c10::ArrayRef<double> program, bool has_metric) {
  const int64_t size = static_cast<int64_t>(program.size());
  TORCH_CHECK(size <= kMaxProgramSize, "schedule program: ", size, " values, more than the ", kMaxProgramSize,
              " a program may hold");
  auto is_count = [](double v) { return v >= 0 && v == std::floor(v) && v < 1e9; };
  TORCH_CHECK(size >= 2 && is_count(program[0]) && program[0] <= kLastCombinator,
              "schedule program: unknown combinator ", size >= 1 ? program[0] : -1.0);
  TORCH_CHECK(is_count(program[1]) && program[1] >= 1 && program[1] <= layout::kMaxLeaves,
              "schedule program: num_leaves must be in [1, ", layout::kMaxLeaves, "], got ", program[1]);
  const Program view{program.data()};
  TORCH_CHECK(view.combinator() != Combinator::Single || view.num_leaves() == 1,
              "schedule program: a single schedule has one leaf");
  int64_t at = 2 + view.num_milestones();
  bool has_plateau = false;
  for (int64_t l = 0; l < view.num_leaves(); ++l) {
    TORCH_CHECK(at + 2 <= size && is_count(program[at]) && program[at] <= kLastScheduleKind &&
                    is_count(program[at + 1]),
                "schedule program: leaf ", l, " is malformed");
    const auto kind = static_cast<ScheduleKind>(static_cast<int64_t>(program[at]));
    const int64_t count = static_cast<int64_t>(program[at + 1]);
    const int64_t expected = num_fields(kind);
    TORCH_CHECK(expected < 0 ? count >= 1 : count == expected, "schedule program: leaf ", l, " of kind ",
                program[at], " takes ", expected, " fields, got ", count);
    has_plateau = has_plateau || kind == ScheduleKind::Plateau;
    at += 2 + count;
  }
  TORCH_CHECK(at == size, "schedule program: ", size, " values, expected ", at);
  TORCH_CHECK(!has_plateau || has_metric, "ReduceLROnPlateau needs a metric");
  return view;
}

// A grad the kernels cannot take as it is (NOTE: [step plan] in
// lrsched_fused/step_plan.py): one with other strides than its parameter
// (assigned by hand) is copied to the parameter's layout, the others are
// refused. Vanished / Appeared: a grad that became None or came back since
// the step plan was built.
enum class GradProblem : int64_t { Sparse = 1, Mismatch = 2, OtherStrides = 3, Vanished = 4, Appeared = 5 };

inline std::optional<GradProblem> grad_problem(const at::Tensor& param, const at::Tensor& grad) {
  if (grad.layout() != at::kStrided) {
    return GradProblem::Sparse;
  }
  if (grad.device() != param.device() || grad.scalar_type() != param.scalar_type() ||
      grad.sizes() != param.sizes()) {
    return GradProblem::Mismatch;
  }
  if (grad.strides() != param.strides()) {
    return GradProblem::OtherStrides;
  }
  return std::nullopt;
}

// (index, problem) of each grad that is not a dense tensor in its
// parameter's device, dtype, shape and strides; checked in one loop before
// any op of a step runs, the optimizer names the parameter in its error.
inline std::vector<std::pair<int64_t, int64_t>> grad_problems(const std::vector<at::Tensor>& params,
                                                              const std::vector<at::Tensor>& grads) {
  TORCH_CHECK(params.size() == grads.size(), "grad_problems: ", params.size(), " params but ", grads.size(),
              " grads");
  std::vector<std::pair<int64_t, int64_t>> problems;
  for (size_t i = 0; i < params.size(); ++i) {
    if (const auto problem = grad_problem(params[i], grads[i])) {
      problems.emplace_back(static_cast<int64_t>(i), static_cast<int64_t>(*problem));
    }
  }
  return problems;
}

}  // namespace lrsched_fused
