#pragma once
// The C++ signatures of the update ops (their schemas are in csrc/ops.cpp):
// what the CPU and CUDA kernels implement and what C++ callers of the
// dispatcher (csrc/step_plan.h, csrc/no_autograd.cpp) call them with.
#include <ATen/core/Tensor.h>

#include <optional>

namespace lrsched_fused {

using AdamStepSignature = void(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                               at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList steps,
                               const at::Tensor& schedule_state, int64_t group_index, double beta1, double beta2,
                               double weight_decay, double eps, bool amsgrad, bool maximize,
                               bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
                               const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule,
                               const std::optional<at::Tensor>& clip_coef,
                               std::optional<at::TensorList> master_params);

using SgdStepSignature = void(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                              at::TensorList steps, const at::Tensor& schedule_state, int64_t group_index,
                              double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                              bool momentum_from_schedule, const std::optional<at::Tensor>& clip_coef,
                              std::optional<at::TensorList> master_params);

using ClipCoefficientSignature = void(const at::Tensor& partial, double norm_type, double max_norm,
                                      const at::Tensor& total_norm, const at::Tensor& clip_coef);

using GradNormPartialSignature = void(at::TensorList grads, double norm_type,
                                      const std::optional<at::Tensor>& grad_scale, const at::Tensor& partial);

}  // namespace lrsched_fused
