#pragma once
// The C++ signatures of the clipping ops and Muon's passes (their schemas are in csrc/ops.cpp):
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

// Muon's elementwise passes (NOTE: [Muon's passes] in csrc/ops.cpp).
using MuonMomentumSignature = void(at::TensorList grads, at::TensorList momentum_buffers, at::TensorList updates,
                                   const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                                   const std::optional<at::Tensor>& grad_scale,
                                   const std::optional<at::Tensor>& found_inf,
                                   const std::optional<at::Tensor>& clip_coef);

using MuonApplySignature = void(at::TensorList params, at::TensorList orthogonalized, const at::Tensor& schedule_state,
                                int64_t group_index, c10::ArrayRef<double> lr_ratios,
                                const std::optional<at::Tensor>& found_inf);

// muon_momentum_'s flags.
constexpr int64_t kMuonNesterov = 1 << 0;

}  // namespace lrsched_fused
