// CUDA kernels of adam_step_, sgd_step_ and lion_step_ with 8-bit states
// (NOTE: [8-bit states] in csrc/states_8bit.h). One kernel per op rule on the
// multi-tensor launcher (a block takes a chunk of kChunkElements elements,
// which starts at a multiple of the 256-element blocks): a block of 256
// threads walks its chunk one code block at a time, one element per thread,
// so a code block's new absmax is one block-wide max (warp shuffles, then 8
// values in shared memory) of values still in registers, and each thread
// then codes its own value with the map in shared memory (nearest_code).
// Nothing is read on the host; a skipped step (found_inf) writes nothing.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../op_checks.h"
#include "../states_8bit.h"
#include "../stochastic_rounding.h"
#include "../update_ops.h"
#include "multi_tensor_launcher.cuh"
#include "update_launch.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

namespace q = states_8bit;

__device__ const float kSignedMapDevice[q::kCodes] = {LRSCHED_FUSED_SIGNED_MAP};
__device__ const float kUnsignedMapDevice[q::kCodes] = {LRSCHED_FUSED_UNSIGNED_MAP};

static_assert(kBlockThreads == q::kBlock, "one thread per element of a code block");
static_assert(kChunkElements % q::kBlock == 0, "a chunk starts at a code block");
static_assert(q::kCodes == kBlockThreads, "a thread loads one value of each map");

struct CodedArgs {
  StepInputs in;
  bool maximize;
  bool nesterov;  // SGD
};

// A block's chunk: where its slots start, its element count and first code
// block, what Rule::make gave, and where its random bits come from.
template <typename scalar_t, bool kMaster, typename Rule>
struct CodedPlan {
  using value_t = param_value_type<scalar_t, kMaster>;
  value_t* param;           // the master with master weights
  scalar_t* rounded_param;  // with master weights: the param, the master rounded to nearest
  scalar_t* grad;
  uint8_t* codes[Rule::kStates];
  float* absmax[Rule::kStates];  // from the chunk's first code block
  int count;
  bool round;
  RoundingStream stream;
  uint64_t first_index;
  typename Rule::Values values;
};

template <typename scalar_t, bool kMaster, typename Rule>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm)
    coded_chunk_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<UpdateEntry<2 + 2 * Rule::kStates>> batch,
                       CodedArgs args) {
  constexpr int kStates = Rule::kStates;
  constexpr int kWarps = kBlockThreads / 32;
  using value_t = param_value_type<scalar_t, kMaster>;
  __shared__ float maps[kStates][q::kCodes];
  __shared__ uint32_t peaks[kStates][kWarps];
  __shared__ bool skipped;
  __shared__ CodedPlan<scalar_t, kMaster, Rule> plan;
#pragma unroll
  for (int k = 0; k < kStates; ++k) {
    maps[k][threadIdx.x] =
        (Rule::map(k) == q::MapKind::Signed ? kSignedMapDevice : kUnsignedMapDevice)[threadIdx.x];
  }
  if (threadIdx.x == 0) {
    const StepInputs& in = args.in;
    skipped = is_set(in.found_inf);
    if (!skipped) {
      const chunk_plan::ChunkRef chunk = block_chunk(batch);
      const UpdateEntry<2 + 2 * kStates>& entry = batch.entries[chunk.tensor];
      void* values = kMaster ? static_cast<void*>(entry.master) : entry.slots[0];
      plan.param = static_cast<value_t*>(values) + chunk.begin;
      plan.rounded_param = kMaster ? static_cast<scalar_t*>(entry.slots[0]) + chunk.begin : nullptr;
      plan.grad = static_cast<scalar_t*>(entry.slots[1]) + chunk.begin;
#pragma unroll
      for (int k = 0; k < kStates; ++k) {
        plan.codes[k] = static_cast<uint8_t*>(entry.slots[2 + k]) + chunk.begin;
        plan.absmax[k] = static_cast<float*>(entry.slots[2 + kStates + k]) + chunk.begin / q::kBlock;
      }
      plan.count = chunk.count;
      const double step_before = entry.step != nullptr ? *entry.step : 0.0;
      plan.round = in.stochastic_rounding;
      if (in.stochastic_rounding) {
        plan.stream.seed = static_cast<uint64_t>(in.schedule_state[layout::kRoundingSeed]);
        plan.stream.step = static_cast<uint32_t>(static_cast<uint64_t>(step_before + 1.0));
        plan.first_index = static_cast<uint64_t>(entry.element_offset + chunk.begin);
      }
      const double scale = in.grad_scale.data != nullptr ? load_scalar(in.grad_scale) : 1.0;
      const double clip = in.clip_coef.data != nullptr ? load_scalar(in.clip_coef) : 1.0;
      const GradOptions<float> grad = make_grad_options<float>(args.maximize, in.grad_scale.data != nullptr, scale,
                                                               in.clip_coef.data != nullptr, clip);
      plan.values = Rule::make(in.schedule_state, in.group_index, grad, step_before, args.nesterov);
    }
  }
  __syncthreads();
  if (skipped) {
    return;
  }
  const typename Rule::Values c = plan.values;
  const bool unscale = args.in.grad_scale.data != nullptr;
  // Stochastic rounding rounds the 16-bit param (without master weights); codes are the nearest.
  const bool round = is_16_bit_float_v<scalar_t> && !kMaster && plan.round;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int start = 0; start < plan.count; start += q::kBlock) {
    const int i = start + static_cast<int>(threadIdx.x);
    const bool active = i < plan.count;
    const int block = start / q::kBlock;
    float s[kStates];
#pragma unroll
    for (int k = 0; k < kStates; ++k) {
      s[k] = 0.0f;
    }
    if (active) {
      float p = static_cast<float>(plan.param[i]);
      float g = static_cast<float>(plan.grad[i]);
#pragma unroll
      for (int k = 0; k < kStates; ++k) {
        s[k] = maps[k][plan.codes[k][i]] * plan.absmax[k][block];
      }
      Rule::template update<scalar_t>(p, g, s, c);
      if constexpr (kMaster) {
        plan.param[i] = p;
        plan.rounded_param[i] = static_cast<scalar_t>(p);
      } else if constexpr (is_16_bit_float_v<scalar_t>) {
        plan.param[i] = round ? round_stochastic<scalar_t>(p, rounding_words(plan.stream, plan.first_index + i).w[0])
                              : static_cast<scalar_t>(p);
      } else {
        plan.param[i] = p;
      }
      if (unscale) {
        plan.grad[i] = static_cast<scalar_t>(g);
      }
    }
    // The block's new absmax: the largest magnitude as a bit pattern (NOTE: [8-bit states]).
#pragma unroll
    for (int k = 0; k < kStates; ++k) {
      uint32_t peak = q::magnitude_bits(s[k]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        peak = max(peak, __shfl_xor_sync(0xFFFFFFFFu, peak, offset));
      }
      if (lane == 0) {
        peaks[k][warp] = peak;
      }
    }
    __syncthreads();  // every thread has read this code block's old absmax
#pragma unroll
    for (int k = 0; k < kStates; ++k) {
      uint32_t peak = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        peak = max(peak, peaks[k][w]);
      }
      const float absmax = q::from_bits(peak);
      if (threadIdx.x == 0) {
        plan.absmax[k][block] = absmax;
      }
      if (active) {
        plan.codes[k][i] =
            static_cast<uint8_t>(q::nearest_code(maps[k], q::normalized(s[k], q::inverse_scale(absmax))));
      }
    }
    __syncthreads();  // peaks is written again by the next code block
  }
}

// Launches Rule's kernel over the call: params, grads, the coded slots, then their absmax.
template <typename Rule, typename Op>
void launch_coded(const UpdateCall<Op>& call, const std::vector<at::TensorList>& coded,
                  const std::vector<at::TensorList>& absmax, const CodedArgs& args, cudaStream_t stream) {
  std::vector<at::TensorList> slots{call.params, call.grads};
  slots.insert(slots.end(), coded.begin(), coded.end());
  slots.insert(slots.end(), absmax.begin(), absmax.end());
  dispatch_update_types(call.params[0].scalar_type(), at::kFloat, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto, auto master_flag) {
    using scalar_t = decltype(scalar);
    if constexpr (!std::is_same_v<scalar_t, double>) {  // refused by the op's checks
      launch_update(&coded_chunk_kernel<scalar_t, decltype(master_flag)::value, Rule>, slots,
                    call.slots[Op::kMasterParam], call.slots[Op::kStep], call.element_offsets, args, stream);
    }
  });
}

}  // namespace

void run_step_8bit(const UpdateCall<AdamStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = AdamStepOp;
  const CodedArgs args{in, call.has(Op::kMaximize), false};
  const std::vector<at::TensorList> coded{call.slots[Op::kExpAvg], call.slots[Op::kExpAvgSq]};
  const std::vector<at::TensorList> absmax{call.slots[Op::kExpAvgAbsmax], call.slots[Op::kExpAvgSqAbsmax]};
  with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
    launch_coded<q::AdamRule<decltype(decoupled_flag)::value>>(call, coded, absmax, args, stream);
  });
}

void run_step_8bit(const UpdateCall<SgdStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = SgdStepOp;  // 8-bit states need momentum: the step counters are there
  const CodedArgs args{in, call.has(Op::kMaximize), call.has(Op::kNesterov)};
  launch_coded<q::SgdRule>(call, {call.slots[Op::kMomentumBuffer]}, {call.slots[Op::kMomentumBufferAbsmax]}, args,
                           stream);
}

void run_step_8bit(const UpdateCall<LionStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = LionStepOp;
  const CodedArgs args{in, call.has(Op::kMaximize), false};
  launch_coded<q::LionRule>(call, {call.slots[Op::kExpAvg]}, {call.slots[Op::kExpAvgAbsmax]}, args, stream);
}

}  // namespace cuda
}  // namespace lrsched_fused
