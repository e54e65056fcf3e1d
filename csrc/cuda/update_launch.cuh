#pragma once
// What the update kernels' launches share (csrc/cuda/fused_step_cuda.cu, and
// with 8-bit states csrc/cuda/states_8bit_cuda.cu): the launch bounds, the
// inputs every update kernel reads besides its tensors, and the launch of an
// update kernel over a call's tensors with its step counters' advance.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <vector>

#include "../op_checks.h"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {

// NOTE: [launch bounds]
// 256 threads per block, and at least kMinBlocksPerSm blocks resident per SM,
// which caps a thread at 65536 / (256 * 4) = 64 registers (50% occupancy on
// sm_80/sm_90). Estimate for the deepest kernel, amsgrad: five vectors of
// at most 16 bytes in flight (20 registers), one element's five opmath values
// (5, or 10 in fp64), the coefficients (12, or 24 in fp64), five slot
// pointers (10), indices and the loop (~8), and with stochastic rounding an
// element's Philox counter, key and words (~8): ~55 in fp32/bf16, ~77 in
// fp64 before the compiler shortens live ranges. A memory-bound update needs
// no more than 50%: 1024 resident threads x 5 vectors x 16 B = 80 KB in
// flight per SM, several times what an H100/H200 SM needs to cover DRAM
// latency. `-Xptxas -v` (nvcc 13.0) reports 45 to 64 registers for the 152
// update kernels (76 adam_chunk_kernel, 38 sgd_chunk_kernel, 38
// lion_chunk_kernel: 48 to 64, each on sm_80 and sm_90) at this bound, no
// spills, 0-byte stack frames; the grad norm
// kernels (grad_norm_cuda.cu, 44 to 64 registers, no spills) were measured
// before the states got their own dtype and not re-measured since.
constexpr int kMinBlocksPerSm = 4;

// What every update kernel reads besides its tensors: the group's block of
// the schedule state (lr and hyperparameters, NOTE: [hyperparameters on the
// device]), and the GradScaler's scale and found_inf and clipping's coefficient.
struct StepInputs {
  const double* schedule_state;
  int64_t group_index;
  DeviceScalar grad_scale;  // data == nullptr without
  DeviceScalar found_inf;
  DeviceScalar clip_coef;  // gradient clipping's coefficient (NOTE: [grad norm]); data == nullptr without
  bool stochastic_rounding;  // NOTE: [stochastic rounding]; the seed is schedule_state[layout::kRoundingSeed]
};

// One thread per tensor of a launch, after its update kernel: advances the
// tensor's step counter, not on a skipped step.
template <typename Entry>
__global__ void advance_steps_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<Entry> batch,
                                     DeviceScalar found_inf) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < batch.num_tensors && !is_set(found_inf)) {
    *batch.entries[t].step += 1.0;
  }
}

template <typename Op>
StepInputs step_inputs(const UpdateCall<Op>& call) {
  const at::Tensor& state = call.schedule_state;
  return {state.const_data_ptr<double>(), call.group_index,
          device_scalar(call.grad_scale, state, "schedule_state", "grad_scale"),
          device_scalar(call.found_inf, state, "schedule_state", "found_inf"),
          device_scalar(call.clip_coef, state, "schedule_state", "clip_coef"), call.has(Op::kStochasticRounding)};
}

// Launches `kernel` (taking a TensorBatch<UpdateEntry<kDepth>> and `args`)
// over the tensors of `slots` (param, grad, then the states, in the kernel's
// slot order), with their master weights, step counters and element offsets
// (stochastic rounding) when given; after each update launch, with step
// counters, the launch that advances them (NOTE: [tensors in kernel arguments]).
template <int kDepth, typename Args>
void launch_update(void (*kernel)(TensorBatch<UpdateEntry<kDepth>>, Args), const std::vector<at::TensorList>& slots,
                   at::TensorList masters, at::TensorList steps, c10::ArrayRef<int64_t> element_offsets,
                   const Args& args, cudaStream_t stream) {
  using Entry = UpdateEntry<kDepth>;
  static_assert(fits_in_arguments<Entry, Args>(), "an update launch's arguments fit");
  TORCH_INTERNAL_ASSERT(slots.size() == static_cast<size_t>(kDepth));
  std::vector<int64_t> numels;
  numels.reserve(slots[0].size());
  for (const at::Tensor& param : slots[0]) {  // slot 0: the params
    numels.push_back(param.numel());
  }
  const auto fill = [&](Entry& entry, int64_t t) {
    for (int s = 0; s < kDepth; ++s) {
      entry.slots[s] = slots[s][t].mutable_data_ptr();
    }
    entry.master = masters.empty() ? nullptr : masters[t].mutable_data_ptr<float>();
    entry.step = steps.empty() ? nullptr : steps[t].mutable_data_ptr<double>();
    entry.element_offset = element_offsets.empty() ? 0 : element_offsets[t];
  };
  for_each_launch<Entry>(launches_of<Entry>(numels), fill, [&](const TensorBatch<Entry>& batch,
                                                               const chunk_plan::Launch& launch) {
    if (launch.num_chunks > 0) {
      kernel<<<static_cast<unsigned int>(launch.num_chunks), kBlockThreads, 0, stream>>>(batch, args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (!steps.empty()) {
      const int64_t blocks = (launch.num_tensors + kBlockThreads - 1) / kBlockThreads;
      advance_steps_kernel<Entry>
          <<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(batch, args.in.found_inf);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

// The update ops with 8-bit states (csrc/cuda/states_8bit_cuda.cu).
void run_step_8bit(const UpdateCall<AdamStepOp>& call, const StepInputs& in, cudaStream_t stream);
void run_step_8bit(const UpdateCall<SgdStepOp>& call, const StepInputs& in, cudaStream_t stream);
void run_step_8bit(const UpdateCall<LionStepOp>& call, const StepInputs& in, cudaStream_t stream);

}  // namespace cuda
}  // namespace lrsched_fused
