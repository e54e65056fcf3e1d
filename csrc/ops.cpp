// Operator schemas of the lrsched_fused library. Kernels are registered per
// device (csrc/cpu/, csrc/cuda/); the Python module is csrc/bindings.cpp.
#include <torch/library.h>

#include <string>

#include "update_ops.h"

TORCH_LIBRARY(lrsched_fused, m) {
  // The update ops (NOTE: [update op declaration]): one step of one param
  // group's same-dtype tensors, with the group's lr and hyperparameters read
  // from schedule_state (NOTE: [hyperparameters on the device]); each tensor's
  // step counter is incremented. With found_inf != 0 nothing changes. With the
  // stochastic_rounding flag, element_offsets holds each param's first
  // element's global index (NOTE: [stochastic rounding]).
  lrsched_fused::for_each_update_op([&](auto op) {
    const std::string schema = std::string(decltype(op)::kName) +
                               "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, Tensor schedule_state, "
                               "int group_index, int flags, Tensor? grad_scale=None, Tensor? found_inf=None, "
                               "Tensor? clip_coef=None, int[] element_offsets=[]) -> ()";
    m.def(torch::schema(schema.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
  });
  // With clip_coef (gradient clipping, NOTE: [grad norm]) both update ops use
  // grad * clip_coef, rounded to the grad's dtype, and leave the grad unclipped.
  //
  // With the master_weights flag (NOTE: [master weights]) both update ops
  // take bfloat16/float16 params and grads and float32 master_param: the
  // update is computed on the master, as for a float32 parameter, and the
  // param is written as the master rounded to nearest, in the same pass.
  // The states' dtype is the params' dtype, float32, bfloat16 or float16
  // (state_dtype): the math runs in opmath, each state is stored rounded.
  //
  // The part of a global grad norm that reads the grads (NOTE: [grad norm]):
  // partial (0-dim float64, on the grads' device) = the sum over grads of
  // ||g||_p ** p, each grad's norm rounded to its dtype first (for p = inf,
  // the max of ||g||_inf). Grads of any floating dtypes; with grad_scale each
  // element is unscaled first, as the update ops unscale it. Deterministic.
  m.def("grad_norm_partial_(Tensor[] grads, float norm_type, Tensor? grad_scale, Tensor(a!) partial) -> ()");
  // The rest of clip_grad_norm_ from `partial` (summed over ranks where the
  // grads are shards): total_norm and clip_coef (0-dim, one floating dtype,
  // the grads' promoted one), rounded as torch's ops round them.
  m.def(
      "clip_coefficient_(Tensor partial, float norm_type, float max_norm, Tensor(a!) total_norm, "
      "Tensor(b!) clip_coef) -> ()");
  // NOTE: [Muon's passes]
  // Muon (lrsched_fused/muon.py) steps a param group of matrices in three
  // passes: muon_momentum_, the Newton-Schulz iteration (batched matmuls,
  // torch ops), muon_apply_. muon_momentum_: per matrix, with the group's
  // momentum read from schedule_state, buf.lerp_(grad, 1 - momentum) and
  // updates (bfloat16, the iteration's input) = buf, or with flags bit 0
  // (nesterov) grad.lerp(buf, momentum); grads, as the update ops take them
  // (unscaled in place with grad_scale, times clip_coef), buffers in the
  // grads' dtype, every tensor matching its grad in shape and strides.
  // muon_apply_: param = param * (1 - lr * weight_decay) (rounded to the
  // param's dtype), then + (-(lr * lr_ratios[i])) * orthogonalized[i]
  // (bfloat16), lr and weight_decay the group's in schedule_state. With
  // found_inf != 0 neither changes anything.
  m.def(
      "muon_momentum_(Tensor(a!)[] grads, Tensor(b!)[] momentum_buffers, Tensor(c!)[] updates, "
      "Tensor schedule_state, int group_index, int flags, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor? clip_coef=None) -> ()");
  m.def(
      "muon_apply_(Tensor(a!)[] params, Tensor[] orthogonalized, Tensor schedule_state, int group_index, "
      "float[] lr_ratios, Tensor? found_inf=None) -> ()");
  // One scheduler.step() on the device, of the schedule `program` (NOTE:
  // [schedule program]). `metric` (one element, any real dtype) feeds
  // ReduceLROnPlateau; with skip_if given and != 0 nothing changes. With
  // initial=True it does what torch's scheduler constructors do instead.
  m.def(
      "schedule_step_(Tensor(a!) schedule_state, float[] program, Tensor? metric=None, "
      "Tensor? skip_if=None, bool initial=False) -> ()");
}

