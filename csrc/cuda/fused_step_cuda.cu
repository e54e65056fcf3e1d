// CUDA kernels of adam_step_, sgd_step_, lion_step_ and schedule_step_, and their
// registration (with 8-bit states, csrc/cuda/states_8bit_cuda.cu's kernels). The per-element math and the schedule are the shared headers'
// (csrc/update_math.h, csrc/schedule_math.h); the chunking is the launcher's
// (NOTE: [tensors in kernel arguments]).
//
// Each update kernel reads the group's lr and hyperparameters from
// schedule_state (NOTE: [hyperparameters on the device]), and grad_scale,
// found_inf and clip_coef, in device memory: nothing is read on the host, nothing
// syncs, and every launch goes to the current stream, so a step can be
// captured in a CUDA graph. With found_inf != 0 the kernels return before
// writing anything, step counters included.
//
// Launches per call of n tensors, with B = ceil(n / tensors per launch)
// (NOTE: [tensors in kernel arguments]: 406 to 580 tensors): adam_step_ 2B
// (per launch of tensors the update, then one thread per tensor advances its
// step counter), sgd_step_ 2B with momentum or stochastic rounding (likewise)
// and B without, lion_step_ likewise (2B with stochastic rounding, whose
// step counter it keeps, B without), schedule_step_ 1. The update reads the step counter before
// the step: Adam's bias corrections of step + 1, SGD's "the momentum buffer
// is new" (step == 0) and stochastic rounding's stream (keyed by step + 1,
// NOTE: [stochastic rounding]) are computed by thread 0 of each block, in
// float64, as the CPU kernels compute them.
//
// A kernel is a template over the params' dtype (scalar_t, the grads' too),
// the states' dtype (state_t) and master weights (NOTE: [kernel
// instantiations]); stochastic rounding is a runtime branch, the same for
// the whole call.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../op_checks.h"
#include "../schedule_math.h"
#include "../stochastic_rounding.h"
#include "../update_math.h"
#include "../update_ops.h"
#include "aligned_vector.cuh"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"
#include "update_launch.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

constexpr int kParam = 0;
constexpr int kGrad = 1;
constexpr int kFirstState = 2;      // slots kFirstState.. are the op's states, in state_t
constexpr int kExpAvg = 2;          // Adam
constexpr int kExpAvgSq = 3;        // Adam
constexpr int kMaxExpAvgSq = 4;     // Adam with amsgrad
constexpr int kMomentumBuffer = 2;  // SGD with momentum
constexpr int kLionExpAvg = 2;      // Lion

// The Philox word that rounds slot s (NOTE: [stochastic rounding]): word 0
// the param, word 1 + i the i-th state (exp_avg 1, exp_avg_sq 2,
// max_exp_avg_sq 3; momentum_buffer 1). The grad is never rounded stochastically.
__device__ __forceinline__ int rounding_word(int s) {
  return s == kParam ? 0 : s - kFirstState + 1;
}

// opmath_t -> T for a store: with `round` and a 16-bit T stochastically with
// `random` (the opmath value made a float first, as on the CPU), else to
// nearest (c10's float -> bfloat16 / half conversions round to nearest even;
// a double reaches a 16-bit T through float, as on the CPU).
template <typename T, typename opmath_t>
__device__ __forceinline__ T store_as(opmath_t value, bool round, uint32_t random) {
  if constexpr (is_16_bit_float_v<T>) {
    const float narrowed = static_cast<float>(value);
    return round ? round_stochastic<T>(narrowed, random) : T(narrowed);
  } else {
    return static_cast<T>(value);
  }
}

// A state slot's value: Adam's second moments (slots kExpAvgSq..; SGD has
// none) are second_t values, bfloat16 kept in the float16 states' two bytes
// when float16 states were asked for (NOTE: [float16 second moments] in
// csrc/dispatch.h); every other state is a state_t.
template <typename second_t, typename state_t>
constexpr bool kSecondMomentsInBfloat16 = std::is_same_v<state_t, c10::Half> && std::is_same_v<second_t, c10::BFloat16>;

template <typename second_t, typename state_t, typename opmath_t>
__device__ __forceinline__ opmath_t load_state(int s, state_t raw) {
  if constexpr (kSecondMomentsInBfloat16<second_t, state_t>) {
    if (s >= kExpAvgSq) {
      return static_cast<opmath_t>(c10::BFloat16(raw.x, c10::BFloat16::from_bits()));
    }
  }
  return static_cast<opmath_t>(raw);
}

template <typename second_t, typename state_t, typename opmath_t>
__device__ __forceinline__ state_t store_state(int s, opmath_t value, bool round, uint32_t random) {
  if constexpr (kSecondMomentsInBfloat16<second_t, state_t>) {
    if (s >= kExpAvgSq) {
      return state_t(store_as<second_t>(value, round, random).x, state_t::from_bits());
    }
  }
  return store_as<state_t>(value, round, random);
}


// Where a chunk's elements draw their random bits (NOTE: [stochastic
// rounding]): their tensor's stream this step and the chunk's first element's
// global index. `on`: the call has stochastic_rounding (the same for every
// block, so a warp takes one branch).
struct ChunkRounding {
  bool on;
  RoundingStream stream;
  uint64_t first_index;
};

// Where a chunk's values live, in three storage types: the grad in
// scalar_t; slot kParam in value_t, the param's own or with master weights
// (NOTE: [master weights]) the float master, whose value `rounded_param` (the
// param) receives rounded to nearest; the states in state_t (the call's state
// dtype).
template <typename scalar_t, typename state_t, bool kMaster, int kDepth>
struct ChunkSlots {
  using value_t = param_value_type<scalar_t, kMaster>;
  using opmath_t = at::opmath_type<scalar_t>;
  using second_t = second_moment_type<scalar_t, state_t, kMaster>;
  static constexpr int kStates = kDepth - kFirstState;
  value_t* param;
  scalar_t* grad;
  state_t* states[kStates > 0 ? kStates : 1];  // states[s - kFirstState] is slot s (none for plain SGD)
  scalar_t* rounded_param;  // with master weights; nullptr without

  __device__ __forceinline__ opmath_t load(int s, int i) const {
    if (s == kParam) {
      return static_cast<opmath_t>(param[i]);
    }
    return s == kGrad ? static_cast<opmath_t>(grad[i])
                      : load_state<second_t, state_t, opmath_t>(s, states[s - kFirstState][i]);
  }
  // Stores slot s's value, rounded stochastically with `bits` when `round` (store_as).
  __device__ __forceinline__ void store(int s, int i, opmath_t value, bool round, const PhiloxWords& bits) const {
    if (s == kParam) {
      param[i] = store_as<value_t>(value, round, bits.w[0]);
    } else if (s == kGrad) {
      grad[i] = static_cast<scalar_t>(value);
    } else {
      states[s - kFirstState][i] = store_state<second_t, state_t>(s, value, round, bits.w[rounding_word(s)]);
    }
  }
};

// The values of kSize consecutive elements of every slot, in registers. kSize
// makes the widest slot's vector 16 bytes, so no vector is larger (a 16-bit
// slot beside float slots moves 8 bytes, beside float64 ones 4).
template <typename scalar_t, typename state_t, bool kMaster, int kDepth>
struct SlotVectors {
  using value_t = param_value_type<scalar_t, kMaster>;
  using opmath_t = at::opmath_type<scalar_t>;
  static constexpr size_t kWidest = std::max({sizeof(scalar_t), sizeof(value_t), sizeof(state_t)});
  static constexpr int kSize = static_cast<int>(16 / kWidest);
  using second_t = second_moment_type<scalar_t, state_t, kMaster>;
  static constexpr int kStates = kDepth - kFirstState;
  using ValueVector = AlignedVector<value_t, kSize>;
  using ScalarVector = AlignedVector<scalar_t, kSize>;  // the grad's, and the rounded param's
  using StateVector = AlignedVector<state_t, kSize>;
  ValueVector param;
  ScalarVector grad;
  StateVector states[kStates > 0 ? kStates : 1];

  __device__ __forceinline__ opmath_t get(int s, int k) const {
    if (s == kParam) {
      return static_cast<opmath_t>(param.values[k]);
    }
    return s == kGrad ? static_cast<opmath_t>(grad.values[k])
                      : load_state<second_t, state_t, opmath_t>(s, states[s - kFirstState].values[k]);
  }
  __device__ __forceinline__ void set(int s, int k, opmath_t value, bool round, const PhiloxWords& bits) {
    if (s == kParam) {
      param.values[k] = store_as<value_t>(value, round, bits.w[0]);
    } else if (s == kGrad) {
      grad.values[k] = static_cast<scalar_t>(value);
    } else {
      states[s - kFirstState].values[k] =
          store_state<second_t, state_t>(s, value, round, bits.w[rounding_word(s)]);
    }
  }
};

// Applies `update` to every element of a chunk of `count` elements (in
// opmath_t) and stores the slots whose bit is set in store_mask (the same
// for the whole call, so a warp takes one branch), and with master weights
// the param. With stochastic rounding (NOTE: [stochastic rounding]) each
// element's Philox words are computed after its update, from its global index
// (rounding.first_index + its index in the chunk), and round its 16-bit
// stores. When every slot is aligned to its vector (a chunk starts
// kChunkElements elements into its tensor, so this is the tensors' own
// alignment), each thread moves one vector per slot per loop; the last
// count % kSize elements, or the whole chunk of a misaligned tensor, go
// element by element, kILP per thread in flight. Both are coalesced across
// the block.
template <typename scalar_t, typename state_t, bool kMaster, int kDepth, typename Update>
__device__ __forceinline__ void apply_to_chunk(const ChunkSlots<scalar_t, state_t, kMaster, kDepth>& chunk,
                                               int count, unsigned store_mask, const ChunkRounding& rounding,
                                               const Update& update) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vectors = SlotVectors<scalar_t, state_t, kMaster, kDepth>;
  using ValueVector = typename Vectors::ValueVector;
  using ScalarVector = typename Vectors::ScalarVector;
  using StateVector = typename Vectors::StateVector;
  constexpr int kSize = Vectors::kSize;
  constexpr int kILP = 4;
  const auto stored = [&](int s) { return ((store_mask >> s) & 1u) != 0; };
  // Folded to false at compile time for a kernel with no store to round.
  const bool round = kHasRoundedStores<scalar_t, state_t, kMaster, (kDepth > kFirstState)> && rounding.on;
  const auto words_of = [&](int i) {  // element i of the chunk
    PhiloxWords bits{};
    if (round) {
      bits = rounding_words(rounding.stream, rounding.first_index + static_cast<uint64_t>(i));
    }
    return bits;
  };
  bool aligned = is_vector_aligned<ValueVector>(chunk.param) && is_vector_aligned<ScalarVector>(chunk.grad) &&
                 (!kMaster || is_vector_aligned<ScalarVector>(chunk.rounded_param));
#pragma unroll
  for (int s = kFirstState; s < kDepth; ++s) {
    aligned = aligned && is_vector_aligned<StateVector>(chunk.states[s - kFirstState]);
  }
  int scalar_begin = 0;
  if (aligned) {
    const int vectors = count / kSize;
    for (int v = threadIdx.x; v < vectors; v += kBlockThreads) {
      Vectors loaded;
      loaded.param = reinterpret_cast<const ValueVector*>(chunk.param)[v];
      loaded.grad = reinterpret_cast<const ScalarVector*>(chunk.grad)[v];
#pragma unroll
      for (int s = kFirstState; s < kDepth; ++s) {
        loaded.states[s - kFirstState] = reinterpret_cast<const StateVector*>(chunk.states[s - kFirstState])[v];
      }
      ScalarVector rounded;
#pragma unroll
      for (int k = 0; k < kSize; ++k) {
        opmath_t values[kDepth];
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          values[s] = loaded.get(s, k);
        }
        update(values);
        const PhiloxWords bits = words_of(v * kSize + k);
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          loaded.set(s, k, values[s], round, bits);
        }
        rounded.values[k] = static_cast<scalar_t>(values[kParam]);
      }
      if (stored(kParam)) {
        reinterpret_cast<ValueVector*>(chunk.param)[v] = loaded.param;
      }
      if (stored(kGrad)) {
        reinterpret_cast<ScalarVector*>(chunk.grad)[v] = loaded.grad;
      }
#pragma unroll
      for (int s = kFirstState; s < kDepth; ++s) {
        if (stored(s)) {
          reinterpret_cast<StateVector*>(chunk.states[s - kFirstState])[v] = loaded.states[s - kFirstState];
        }
      }
      if constexpr (kMaster) {
        reinterpret_cast<ScalarVector*>(chunk.rounded_param)[v] = rounded;
      }
    }
    scalar_begin = vectors * kSize;
  }
  for (int start = scalar_begin; start < count; start += kBlockThreads * kILP) {
    opmath_t values[kILP][kDepth];
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          values[k][s] = chunk.load(s, i);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
        update(values[k]);
        const PhiloxWords bits = words_of(i);
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          if (stored(s)) {
            chunk.store(s, i, values[k][s], round, bits);
          }
        }
        if constexpr (kMaster) {
          chunk.rounded_param[i] = static_cast<scalar_t>(values[k][kParam]);
        }
      }
    }
  }
}

// A block's work: its chunk's slots, its element count, where its random
// bits come from and what make() derived.
template <typename scalar_t, typename state_t, bool kMaster, int kDepth, typename Values>
struct BlockPlan {
  ChunkSlots<scalar_t, state_t, kMaster, kDepth> slots;
  int count;
  ChunkRounding rounding;
  Values values;
};

// Thread 0 finds the block's tensor and chunk, its slots from the chunk's
// first element, with stochastic rounding its rounding (the stream of the
// step after this one's increment, step before + 1, as the CPU's), and
// computes make(step before this step (0 without a counter), grad_scale,
// clip_coef) (float64); every thread then reads the plan from shared memory.
// nullptr: found_inf is set, the step is skipped.
template <typename scalar_t, typename state_t, bool kMaster, int kDepth, typename Values, typename Make>
__device__ const BlockPlan<scalar_t, state_t, kMaster, kDepth, Values>* plan_block(
    const TensorBatch<UpdateEntry<kDepth>>& batch, const StepInputs& in, const Make& make) {
  using value_t = param_value_type<scalar_t, kMaster>;
  __shared__ bool skipped;
  __shared__ BlockPlan<scalar_t, state_t, kMaster, kDepth, Values> plan;
  if (threadIdx.x == 0) {
    skipped = is_set(in.found_inf);
    if (!skipped) {
      const chunk_plan::ChunkRef chunk = block_chunk(batch);
      const UpdateEntry<kDepth>& entry = batch.entries[chunk.tensor];
      void* values = kMaster ? static_cast<void*>(entry.master) : entry.slots[kParam];
      plan.slots.param = static_cast<value_t*>(values) + chunk.begin;
      plan.slots.grad = static_cast<scalar_t*>(entry.slots[kGrad]) + chunk.begin;
#pragma unroll
      for (int s = kFirstState; s < kDepth; ++s) {
        plan.slots.states[s - kFirstState] = static_cast<state_t*>(entry.slots[s]) + chunk.begin;
      }
      plan.slots.rounded_param = kMaster ? static_cast<scalar_t*>(entry.slots[kParam]) + chunk.begin : nullptr;
      plan.count = chunk.count;
      const double step_before = entry.step != nullptr ? *entry.step : 0.0;
      ChunkRounding rounding{in.stochastic_rounding, {0, 0}, 0};
      if (in.stochastic_rounding) {
        rounding.stream.seed = static_cast<uint64_t>(in.schedule_state[layout::kRoundingSeed]);
        rounding.stream.step = static_cast<uint32_t>(static_cast<uint64_t>(step_before + 1.0));
        rounding.first_index = static_cast<uint64_t>(entry.element_offset + chunk.begin);
      }
      plan.rounding = rounding;
      const double scale = in.grad_scale.data != nullptr ? load_scalar(in.grad_scale) : 1.0;
      const double clip = in.clip_coef.data != nullptr ? load_scalar(in.clip_coef) : 1.0;
      plan.values = make(step_before, scale, clip);
    }
  }
  __syncthreads();
  return skipped ? nullptr : &plan;
}

// Runs `update` over the block's chunk (apply_to_chunk), every pointer a global one.
template <typename scalar_t, typename state_t, bool kMaster, int kDepth, typename Values, typename Update>
__device__ __forceinline__ void apply_to_block(const BlockPlan<scalar_t, state_t, kMaster, kDepth, Values>& plan,
                                               unsigned store_mask, const Update& update) {
  ChunkSlots<scalar_t, state_t, kMaster, kDepth> slots = plan.slots;
  // tensor memory: global loads and stores, not generic ones
  __builtin_assume(__isGlobal(slots.param));
  __builtin_assume(__isGlobal(slots.grad));
#pragma unroll
  for (int s = kFirstState; s < kDepth; ++s) {
    __builtin_assume(__isGlobal(slots.states[s - kFirstState]));
  }
  if constexpr (kMaster) {
    __builtin_assume(__isGlobal(slots.rounded_param));
  }
  const ChunkRounding rounding = plan.rounding;
  apply_to_chunk<scalar_t, state_t, kMaster, kDepth>(slots, plan.count, store_mask, rounding, update);
}

// The slots a kernel stores: its own, and the grads when they were unscaled in place.
__device__ __forceinline__ unsigned store_mask_of(unsigned written, const StepInputs& in) {
  return written | (in.grad_scale.data != nullptr ? 1u << kGrad : 0u);
}

struct AdamArgs {
  StepInputs in;
  bool maximize;
};

template <typename scalar_t, typename state_t, bool kMaster, bool kAmsgrad, bool kDecoupled>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm)
    adam_chunk_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<UpdateEntry<kAmsgrad ? 5 : 4>> batch,
                      AdamArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kAmsgrad ? 5 : 4;
  const unsigned store_mask = store_mask_of(
      (1u << kParam) | (1u << kExpAvg) | (1u << kExpAvgSq) | (kAmsgrad ? 1u << kMaxExpAvgSq : 0u), args.in);
  const auto* plan = plan_block<scalar_t, state_t, kMaster, kDepth, AdamCoefficients<opmath_t>>(
      batch, args.in, [&](double step_before, double scale, double clip) {
        const AdamGroupValues group = adam_group_values(args.in.schedule_state, args.in.group_index);
        const GradOptions<opmath_t> grad = make_grad_options<opmath_t>(
            args.maximize, args.in.grad_scale.data != nullptr, scale, args.in.clip_coef.data != nullptr, clip);
        return make_adam_coefficients<opmath_t>(group, grad, adam_step_terms(group, step_before + 1.0));
      });
  if (plan == nullptr) {
    return;
  }
  const AdamCoefficients<opmath_t> c = plan->values;
  apply_to_block(*plan, store_mask, [&](opmath_t(&v)[kDepth]) {
    if constexpr (kAmsgrad) {
      adam_update<opmath_t, true, kDecoupled, scalar_t>(v[kParam], v[kGrad], v[kExpAvg], v[kExpAvgSq],
                                                        v[kMaxExpAvgSq], c);
    } else {
      opmath_t unused = 0;
      adam_update<opmath_t, false, kDecoupled, scalar_t>(v[kParam], v[kGrad], v[kExpAvg], v[kExpAvgSq], unused,
                                                         c);
    }
  });
}

struct SgdArgs {
  StepInputs in;
  bool nesterov;
  bool maximize;
};

template <typename opmath_t>
struct SgdBlockValues {
  SgdCoefficients<opmath_t> coefficients;
  bool first_step;
};

template <typename scalar_t, typename state_t, bool kMaster, bool kMomentum>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm)
    sgd_chunk_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<UpdateEntry<kMomentum ? 3 : 2>> batch,
                     SgdArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kMomentum ? 3 : 2;
  const unsigned store_mask = store_mask_of((1u << kParam) | (kMomentum ? 1u << kMomentumBuffer : 0u), args.in);
  const auto* plan = plan_block<scalar_t, state_t, kMaster, kDepth, SgdBlockValues<opmath_t>>(
      batch, args.in, [&](double step_before, double scale, double clip) {
        const GradOptions<opmath_t> grad = make_grad_options<opmath_t>(
            args.maximize, args.in.grad_scale.data != nullptr, scale, args.in.clip_coef.data != nullptr, clip);
        // The momentum buffer has no history yet: the step counter is still 0
        // (every earlier step was skipped or none ran).
        return SgdBlockValues<opmath_t>{
            make_sgd_coefficients<opmath_t>(sgd_group_values(args.in.schedule_state, args.in.group_index),
                                            args.nesterov, grad),
            kMomentum && step_before == 0.0};
      });
  if (plan == nullptr) {
    return;
  }
  const SgdCoefficients<opmath_t> c = plan->values.coefficients;
  const bool first_step = plan->values.first_step;
  apply_to_block(*plan, store_mask, [&](opmath_t(&v)[kDepth]) {
    if constexpr (kMomentum) {
      sgd_update<opmath_t, true, scalar_t>(v[kParam], v[kGrad], v[kMomentumBuffer], first_step, c);
    } else {
      opmath_t unused = 0;
      sgd_update<opmath_t, false, scalar_t>(v[kParam], v[kGrad], unused, first_step, c);
    }
  });
}

struct LionArgs {
  StepInputs in;
  bool maximize;
};

template <typename scalar_t, typename state_t, bool kMaster>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm)
    lion_chunk_kernel(const LRSCHED_FUSED_GRID_CONSTANT TensorBatch<UpdateEntry<3>> batch, LionArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = 3;
  const unsigned store_mask = store_mask_of((1u << kParam) | (1u << kLionExpAvg), args.in);
  const auto* plan = plan_block<scalar_t, state_t, kMaster, kDepth, LionCoefficients<opmath_t>>(
      batch, args.in, [&](double, double scale, double clip) {
        const GradOptions<opmath_t> grad = make_grad_options<opmath_t>(
            args.maximize, args.in.grad_scale.data != nullptr, scale, args.in.clip_coef.data != nullptr, clip);
        return make_lion_coefficients<opmath_t>(lion_group_values(args.in.schedule_state, args.in.group_index),
                                                grad);
      });
  if (plan == nullptr) {
    return;
  }
  const LionCoefficients<opmath_t> c = plan->values;
  apply_to_block(*plan, store_mask, [&](opmath_t(&v)[kDepth]) {
    lion_update<opmath_t, scalar_t>(v[kParam], v[kGrad], v[kLionExpAvg], c);
  });
}

// The schedule program travels in the kernel's arguments (NOTE: [schedule program]).
struct ProgramArgument {
  static constexpr int64_t kCapacity = kMaxProgramSize;
  double values[kCapacity];
};

__global__ void schedule_step_kernel(double* schedule_state, int64_t num_groups, ProgramArgument program,
                                     DeviceScalar metric, DeviceScalar skip_if, bool initial) {
  if (is_set(skip_if)) {
    return;
  }
  if (initial) {
    initialize_schedule(schedule_state, num_groups, Program{program.values});
    return;
  }
  const double metric_value = metric.data != nullptr ? load_scalar(metric) : 0.0;
  advance_schedule(schedule_state, num_groups, Program{program.values}, metric_value);
}

void run_step(const UpdateCall<AdamStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = AdamStepOp;
  const bool amsgrad = call.has(Op::kAmsgrad);
  std::vector<at::TensorList> slots{call.params, call.grads, call.slots[Op::kExpAvg], call.slots[Op::kExpAvgSq]};
  if (amsgrad) {
    slots.push_back(call.slots[Op::kMaxExpAvgSq]);
  }
  const AdamArgs args{in, call.has(Op::kMaximize)};
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    with_bool(amsgrad, [&](auto amsgrad_flag) {
      with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
        launch_update(&adam_chunk_kernel<scalar_t, state_t, decltype(master_flag)::value,
                                         decltype(amsgrad_flag)::value, decltype(decoupled_flag)::value>,
                      slots, call.slots[Op::kMasterParam], call.slots[Op::kStep], call.element_offsets, args,
                      stream);
      });
    });
  });
}

void run_step(const UpdateCall<SgdStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = SgdStepOp;
  const bool has_momentum = call.has(Op::kMomentum);
  std::vector<at::TensorList> slots{call.params, call.grads};
  if (has_momentum) {
    slots.push_back(call.slots[Op::kMomentumBuffer]);
  }
  const SgdArgs args{in, call.has(Op::kNesterov), call.has(Op::kMaximize)};
  // The step counters (call.slots[Op::kStep]) are there with momentum or stochastic rounding.
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    using scalar_t = decltype(scalar);
    using state_t = decltype(state);
    with_bool(has_momentum, [&](auto momentum_flag) {
      launch_update(
          &sgd_chunk_kernel<scalar_t, state_t, decltype(master_flag)::value, decltype(momentum_flag)::value>,
          slots, call.slots[Op::kMasterParam], call.slots[Op::kStep], call.element_offsets, args, stream);
    });
  });
}

void run_step(const UpdateCall<LionStepOp>& call, const StepInputs& in, cudaStream_t stream) {
  using Op = LionStepOp;
  const std::vector<at::TensorList> slots{call.params, call.grads, call.slots[Op::kExpAvg]};
  const LionArgs args{in, call.has(Op::kMaximize)};
  // The step counters (call.slots[Op::kStep]) are there with stochastic rounding only.
  dispatch_update_types(call.params[0].scalar_type(), call.state_dtype, call.has(Op::kMasterWeights),
                        [&](auto scalar, auto state, auto master_flag) {
    launch_update(&lion_chunk_kernel<decltype(scalar), decltype(state), decltype(master_flag)::value>, slots,
                  call.slots[Op::kMasterParam], call.slots[Op::kStep], call.element_offsets, args, stream);
  });
}

// The CUDA kernels of update op Op (UpdateStepSignature): the shared checks,
// then the launches on the current stream; found_inf is read on the device.
template <typename Op>
void update_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList states,
                      const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                      const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                      const std::optional<at::Tensor>& clip_coef, c10::ArrayRef<int64_t> element_offsets) {
  const UpdateCall<Op> call = check_update_call<Op>(params, grads, states, schedule_state, group_index, flags,
                                                    grad_scale, found_inf, clip_coef, element_offsets);
  const StepInputs in = step_inputs(call);
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(schedule_state.device().index()).stream();
  if (call.has(Op::kStates8Bit)) {
    run_step_8bit(call, in, stream);  // csrc/cuda/states_8bit_cuda.cu
  } else {
    run_step(call, in, stream);
  }
}

void schedule_step_cuda(
    const at::Tensor& schedule_state, c10::ArrayRef<double> program, const std::optional<at::Tensor>& metric,
    const std::optional<at::Tensor>& skip_if, bool initial) {
  const int64_t groups = num_schedule_groups(schedule_state);
  check_schedule_program(program, metric.has_value() || initial);
  const DeviceScalar metric_scalar = device_scalar(metric, schedule_state, "schedule_state", "metric");
  const DeviceScalar skip = device_scalar(skip_if, schedule_state, "schedule_state", "skip_if");
  ProgramArgument argument{};
  TORCH_CHECK(static_cast<int64_t>(program.size()) <= ProgramArgument::kCapacity, "the schedule program has ",
              program.size(), " values; the CUDA kernel takes at most ", ProgramArgument::kCapacity,
              " (fewer MultiStepLR milestones)");
  for (size_t i = 0; i < program.size(); ++i) {
    argument.values[i] = program[i];
  }
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(schedule_state.device().index()).stream();
  schedule_step_kernel<<<1, 1, 0, stream>>>(schedule_state.mutable_data_ptr<double>(), groups, argument,
                                            metric_scalar, skip, initial);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// The tensors one launch carries, per kind of launch (tests/test_cuda.py,
// through lrsched_fused._C.testing.cuda_tensors_per_launch).
std::map<std::string, int64_t> tensors_per_launch() {
  return {{"sgd", TensorBatch<UpdateEntry<2>>::kCapacity},
          {"sgd_momentum", TensorBatch<UpdateEntry<3>>::kCapacity},
          {"lion", TensorBatch<UpdateEntry<3>>::kCapacity},
          {"adam", TensorBatch<UpdateEntry<4>>::kCapacity},
          {"adam_amsgrad", TensorBatch<UpdateEntry<5>>::kCapacity},
          {"adam_8bit", TensorBatch<UpdateEntry<6>>::kCapacity},  // param, grad, 2 codes, 2 absmax
          {"sgd_lion_8bit", TensorBatch<UpdateEntry<4>>::kCapacity},
          {"grad_norm", TensorBatch<GradEntry>::kCapacity}};
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  for_each_update_op([&](auto op) { m.impl(decltype(op)::kName, &cuda::update_step_cuda<decltype(op)>); });
  m.impl("schedule_step_", &cuda::schedule_step_cuda);
}

}  // namespace lrsched_fused
