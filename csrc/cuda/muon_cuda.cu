// CUDA kernels of Muon's elementwise passes, muon_momentum_ and muon_apply_
// (NOTE: [Muon's passes] in csrc/ops.cpp), on the multi-tensor launcher
// (NOTE: [tensors in kernel arguments]): one block per chunk, the math of
// csrc/update_math.h, the group's values read from schedule_state and
// found_inf, grad_scale and clip_coef in device memory, so nothing syncs and
// a step can be captured in a CUDA graph. One launch per batch of tensors;
// the matrices of a Muon group are few, and their Newton-Schulz matmuls
// dominate the step, so the loops are plain (element by element, coalesced
// across the block).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "../op_checks.h"
#include "../op_signatures.h"
#include "../update_math.h"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

struct MuonMomentumEntry {
  void* grad;
  void* buffer;
  c10::BFloat16* update;
  int64_t numel;
  int64_t first_chunk;  // within the launch
};

struct MuonApplyEntry {
  void* param;
  const c10::BFloat16* orthogonalized;
  double lr_ratio;
  int64_t numel;
  int64_t first_chunk;  // within the launch
};

struct MuonArgs {
  const double* schedule_state;
  int64_t group_index;
  DeviceScalar grad_scale;  // data == nullptr without
  DeviceScalar found_inf;
  DeviceScalar clip_coef;
  bool nesterov;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    muon_momentum_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<MuonMomentumEntry> batch, MuonArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (is_set(args.found_inf)) {
    return;
  }
  const chunk_plan::ChunkRef chunk = block_chunk(batch);
  const MuonMomentumEntry& entry = batch.entries[chunk.tensor];
  const bool unscale = args.grad_scale.data != nullptr;
  const GradOptions<opmath_t> grad_options = make_grad_options<opmath_t>(
      false, unscale, unscale ? load_scalar(args.grad_scale) : 1.0, args.clip_coef.data != nullptr,
      args.clip_coef.data != nullptr ? load_scalar(args.clip_coef) : 1.0);
  const MuonMomentumCoefficients<opmath_t> c = make_muon_momentum_coefficients<opmath_t>(
      muon_group_values(args.schedule_state, args.group_index), args.nesterov, grad_options);
  scalar_t* grad = static_cast<scalar_t*>(entry.grad) + chunk.begin;
  scalar_t* buffer = static_cast<scalar_t*>(entry.buffer) + chunk.begin;
  c10::BFloat16* update = entry.update + chunk.begin;
  for (int i = threadIdx.x; i < chunk.count; i += kBlockThreads) {
    opmath_t g = static_cast<opmath_t>(grad[i]);
    opmath_t b = static_cast<opmath_t>(buffer[i]);
    opmath_t u = 0;
    muon_momentum<opmath_t, scalar_t>(g, b, u, c);
    buffer[i] = static_cast<scalar_t>(b);
    update[i] = c10::BFloat16(static_cast<float>(u));
    if (unscale) {
      grad[i] = static_cast<scalar_t>(g);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockThreads)
    muon_apply_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<MuonApplyEntry> batch, MuonArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (is_set(args.found_inf)) {
    return;
  }
  const chunk_plan::ChunkRef chunk = block_chunk(batch);
  const MuonApplyEntry& entry = batch.entries[chunk.tensor];
  const MuonApplyCoefficients<opmath_t> c = make_muon_apply_coefficients<opmath_t>(
      muon_group_values(args.schedule_state, args.group_index), entry.lr_ratio);
  scalar_t* param = static_cast<scalar_t*>(entry.param) + chunk.begin;
  const c10::BFloat16* orthogonalized = entry.orthogonalized + chunk.begin;
  for (int i = threadIdx.x; i < chunk.count; i += kBlockThreads) {
    opmath_t p = static_cast<opmath_t>(param[i]);
    muon_apply<opmath_t, scalar_t>(p, static_cast<opmath_t>(static_cast<float>(orthogonalized[i])), c);
    param[i] = static_cast<scalar_t>(p);
  }
}

MuonArgs muon_args(const at::Tensor& schedule_state, int64_t group_index,
                   const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                   const std::optional<at::Tensor>& clip_coef, bool nesterov) {
  return {schedule_state.const_data_ptr<double>(), group_index,
          device_scalar(grad_scale, schedule_state, "schedule_state", "grad_scale"),
          device_scalar(found_inf, schedule_state, "schedule_state", "found_inf"),
          device_scalar(clip_coef, schedule_state, "schedule_state", "clip_coef"), nesterov};
}

// Launches kernel over the tensors whose numels are given, fill(entry, t) writing tensor t's entry.
template <typename Entry, typename Fill>
void launch_muon(void (*kernel)(TensorBatch<Entry>, MuonArgs), const std::vector<int64_t>& numels, const Fill& fill,
                 const MuonArgs& args, const at::Tensor& schedule_state) {
  static_assert(fits_in_arguments<Entry, MuonArgs>(), "a Muon launch's arguments fit");
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(schedule_state.device().index()).stream();
  for_each_launch<Entry>(launches_of<Entry>(numels), fill, [&](const TensorBatch<Entry>& batch,
                                                               const chunk_plan::Launch& launch) {
    if (launch.num_chunks > 0) {
      kernel<<<static_cast<unsigned int>(launch.num_chunks), kBlockThreads, 0, stream>>>(batch, args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

std::vector<int64_t> numels_of(at::TensorList tensors) {
  std::vector<int64_t> numels;
  numels.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    numels.push_back(t.numel());
  }
  return numels;
}

void muon_momentum_cuda(at::TensorList grads, at::TensorList buffers, at::TensorList updates,
                        const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                        const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                        const std::optional<at::Tensor>& clip_coef) {
  check_muon_momentum_args(grads, buffers, updates, schedule_state, group_index, flags, grad_scale, found_inf,
                           clip_coef);
  const MuonArgs args =
      muon_args(schedule_state, group_index, grad_scale, found_inf, clip_coef, (flags & kMuonNesterov) != 0);
  if (grads.empty()) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[0].scalar_type(), "muon_momentum_", [&] {
    launch_muon(&muon_momentum_kernel<scalar_t>, numels_of(grads), [&](MuonMomentumEntry& entry, int64_t t) {
      entry.grad = grads[t].mutable_data_ptr();
      entry.buffer = buffers[t].mutable_data_ptr();
      entry.update = updates[t].mutable_data_ptr<c10::BFloat16>();
    }, args, schedule_state);
  });
}

void muon_apply_cuda(at::TensorList params, at::TensorList orthogonalized, const at::Tensor& schedule_state,
                     int64_t group_index, c10::ArrayRef<double> lr_ratios,
                     const std::optional<at::Tensor>& found_inf) {
  check_muon_apply_args(params, orthogonalized, schedule_state, group_index, lr_ratios, found_inf);
  const MuonArgs args = muon_args(schedule_state, group_index, std::nullopt, found_inf, std::nullopt, false);
  if (params.empty()) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "muon_apply_", [&] {
    launch_muon(&muon_apply_kernel<scalar_t>, numels_of(params), [&](MuonApplyEntry& entry, int64_t t) {
      entry.param = params[t].mutable_data_ptr();
      entry.orthogonalized = orthogonalized[t].const_data_ptr<c10::BFloat16>();
      entry.lr_ratio = lr_ratios[t];
    }, args, schedule_state);
  });
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  m.impl("muon_momentum_", &cuda::muon_momentum_cuda);
  m.impl("muon_apply_", &cuda::muon_apply_cuda);
}

}  // namespace lrsched_fused
