// CPU kernels of Muon's elementwise passes, muon_momentum_ and muon_apply_
// (NOTE: [Muon's passes] in csrc/ops.cpp): one parallel pass over the
// elements of all tensors of a call (NOTE: [CPU work split]), the math of
// csrc/update_math.h. The Newton-Schulz iteration between them is torch's
// batched matmuls (lrsched_fused/muon.py), which dominate a Muon step; these
// loops are plain, not specialized further.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "../op_checks.h"
#include "../op_signatures.h"
#include "../update_math.h"
#include "cpu_loops.h"

namespace lrsched_fused {
namespace {

using namespace cpu;  // NOLINT: the loop machinery of cpu_loops.h

void muon_momentum_cpu(at::TensorList grads, at::TensorList buffers, at::TensorList updates,
                       const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                       const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                       const std::optional<at::Tensor>& clip_coef) {
  check_muon_momentum_args(grads, buffers, updates, schedule_state, group_index, flags, grad_scale, found_inf,
                           clip_coef);
  if (grads.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const MuonGroupValues group = muon_group_values(schedule_state.const_data_ptr<double>(), group_index);
  const ElementSpace space(grads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "muon_momentum_", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const GradOptions<opmath_t> options = make_grad_options<opmath_t>(
        false, grad_scale.has_value(), grad_scale.has_value() ? read_double(*grad_scale) : 1.0,
        clip_coef.has_value(), clip_coef.has_value() ? read_double(*clip_coef) : 1.0);
    const MuonMomentumCoefficients<opmath_t> c =
        make_muon_momentum_coefficients<opmath_t>(group, (flags & kMuonNesterov) != 0, options);
    const auto grad_data = data_pointers<scalar_t>(grads);
    const auto buffer_data = data_pointers<scalar_t>(buffers);
    const auto update_data = data_pointers<c10::BFloat16>(updates);
    for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
      scalar_t* grad = grad_data[t];
      scalar_t* buffer = buffer_data[t];
      c10::BFloat16* update = update_data[t];
      for (int64_t i = begin; i < end; ++i) {
        opmath_t g = grad[i];
        opmath_t b = buffer[i];
        opmath_t u = 0;
        muon_momentum<opmath_t, scalar_t>(g, b, u, c);
        buffer[i] = static_cast<scalar_t>(b);
        update[i] = to_storage<c10::BFloat16>(static_cast<float>(u));
        if (options.unscale) {
          grad[i] = static_cast<scalar_t>(g);
        }
      }
    });
  });
}

void muon_apply_cpu(at::TensorList params, at::TensorList orthogonalized, const at::Tensor& schedule_state,
                    int64_t group_index, c10::ArrayRef<double> lr_ratios,
                    const std::optional<at::Tensor>& found_inf) {
  check_muon_apply_args(params, orthogonalized, schedule_state, group_index, lr_ratios, found_inf);
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const MuonGroupValues group = muon_group_values(schedule_state.const_data_ptr<double>(), group_index);
  const ElementSpace space(params);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "muon_apply_", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    std::vector<MuonApplyCoefficients<opmath_t>> coefficients;
    coefficients.reserve(params.size());
    for (const double ratio : lr_ratios) {
      coefficients.push_back(make_muon_apply_coefficients<opmath_t>(group, ratio));
    }
    const auto param_data = data_pointers<scalar_t>(params);
    std::vector<const c10::BFloat16*> update_data;
    for (const at::Tensor& t : orthogonalized) {
      update_data.push_back(t.const_data_ptr<c10::BFloat16>());
    }
    for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
      scalar_t* param = param_data[t];
      const c10::BFloat16* update = update_data[t];
      const MuonApplyCoefficients<opmath_t> c = coefficients[t];
      for (int64_t i = begin; i < end; ++i) {
        opmath_t p = param[i];
        muon_apply<opmath_t, scalar_t>(p, static_cast<opmath_t>(static_cast<float>(update[i])), c);
        param[i] = static_cast<scalar_t>(p);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, CPU, m) {
  m.impl("muon_momentum_", &muon_momentum_cpu);
  m.impl("muon_apply_", &muon_apply_cpu);
}

}  // namespace lrsched_fused
