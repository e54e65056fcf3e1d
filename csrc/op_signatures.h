#pragma once
// The C++ signatures of the clipping ops (their schemas are in csrc/ops.cpp):
// what the CPU and CUDA kernels implement and what C++ callers of the
// dispatcher (csrc/step_plan.h, csrc/no_autograd.cpp) call them with.
#include <ATen/core/Tensor.h>

#include <optional>

namespace lrsched_fused {

// The update ops' signature, shared by all of them: UpdateStepSignature in
// csrc/update_ops.h (NOTE: [update op declaration]).

using ClipCoefficientSignature = void(const at::Tensor& partial, double norm_type, double max_norm,
                                      const at::Tensor& total_norm, const at::Tensor& clip_coef);

using GradNormPartialSignature = void(at::TensorList grads, double norm_type,
                                      const std::optional<at::Tensor>& grad_scale, const at::Tensor& partial);

}  // namespace lrsched_fused
