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
  // One scheduler.step() on the device, of the schedule `program` (NOTE:
  // [schedule program]). `metric` (one element, any real dtype) feeds
  // ReduceLROnPlateau; with skip_if given and != 0 nothing changes. With
  // initial=True it does what torch's scheduler constructors do instead.
  m.def(
      "schedule_step_(Tensor(a!) schedule_state, float[] program, Tensor? metric=None, "
      "Tensor? skip_if=None, bool initial=False) -> ()");
}

