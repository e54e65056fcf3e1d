// CUDA kernels of adam_step_, sgd_step_ and schedule_step_, and their
// registration. The per-element math and the schedule are the shared headers'
// (csrc/update_math.h, csrc/schedule_math.h); the chunking is the launcher's
// (NOTE: [device tensor table]).
//
// Each update kernel reads the group's lr and hyperparameters from
// schedule_state (NOTE: [hyperparameters on the device]), and grad_scale,
// found_inf and clip_coef, in device memory: nothing is read on the host, nothing
// syncs, and every launch goes to the current stream, so a step can be
// captured in a CUDA graph. With found_inf != 0 the kernels return before
// writing anything, step counters included.
//
// Launches per call, whatever the number of tensors: adam_step_ 2 (the step
// counters and per-tensor terms, then the update), sgd_step_ 2 with momentum
// (likewise) and 1 without, schedule_step_ 1. A call whose grads moved adds
// one upload of their addresses; the first call with new parameters or
// states builds their layout (NOTE: [device tensor table]).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../dispatch.h"
#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"
#include "../update_ops.h"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

// kDepth slot values of 16 bytes' worth of consecutive elements.
template <typename scalar_t>
struct alignas(16) Vector16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t values[kSize];
};

// Applies `update` to every element of a chunk (in opmath_t) and stores the
// slots whose bit is set in store_mask (the same for the whole call, so a
// warp takes one branch). When every slot pointer is 16-byte
// aligned (a chunk starts kChunkElements elements into its tensor, so this is
// the tensors' own alignment), each thread moves 16-byte vectors, one per
// slot in flight per loop; the last count % kSize elements, or the whole chunk
// of a misaligned tensor, go element by element, kILP per thread in flight.
// Both are coalesced across the block.
template <typename scalar_t, int kDepth, typename Update>
__device__ __forceinline__ void apply_to_chunk(scalar_t* const (&slots)[kDepth], int count, unsigned store_mask,
                                               const Update& update) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vector = Vector16<scalar_t>;
  constexpr int kILP = 4;
  uintptr_t addresses = 0;
#pragma unroll
  for (int s = 0; s < kDepth; ++s) {
    addresses |= reinterpret_cast<uintptr_t>(slots[s]);
  }
  int scalar_begin = 0;
  if (addresses % sizeof(Vector) == 0) {
    const int vectors = count / Vector::kSize;
    for (int v = threadIdx.x; v < vectors; v += kBlockThreads) {
      Vector loaded[kDepth];
#pragma unroll
      for (int s = 0; s < kDepth; ++s) {
        loaded[s] = reinterpret_cast<const Vector*>(slots[s])[v];
      }
#pragma unroll
      for (int k = 0; k < Vector::kSize; ++k) {
        opmath_t values[kDepth];
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          values[s] = static_cast<opmath_t>(loaded[s].values[k]);
        }
        update(values);
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          loaded[s].values[k] = static_cast<scalar_t>(values[s]);
        }
      }
#pragma unroll
      for (int s = 0; s < kDepth; ++s) {
        if ((store_mask >> s) & 1u) {
          reinterpret_cast<Vector*>(slots[s])[v] = loaded[s];
        }
      }
    }
    scalar_begin = vectors * Vector::kSize;
  }
  for (int start = scalar_begin; start < count; start += kBlockThreads * kILP) {
    opmath_t values[kILP][kDepth];
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          values[k][s] = static_cast<opmath_t>(slots[s][i]);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
        update(values[k]);
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          if ((store_mask >> s) & 1u) {
            slots[s][i] = static_cast<scalar_t>(values[k][s]);
          }
        }
      }
    }
  }
}

// With master weights (NOTE: [master weights]): params and grads in
// scalar_t, the states and the master in float. The update runs on the
// values of apply_to_chunk's slots, the master in the param's place; the
// param is stored as the master rounded to nearest (c10's float -> bfloat16
// and float -> half conversions round to nearest even). Element by element,
// kILP per thread in flight, coalesced across the block.
template <typename scalar_t, int kDepth, typename Update>
__device__ __forceinline__ void apply_to_master_chunk(scalar_t* param, scalar_t* grad, float* const (&wide)[kDepth],
                                                      int count, unsigned store_mask, const Update& update) {
  constexpr int kILP = 4;
  constexpr int kParamSlot = 0;
  for (int start = 0; start < count; start += kBlockThreads * kILP) {
    float values[kILP][kDepth];
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          values[k][s] = s == kGradSlot ? static_cast<float>(grad[i]) : wide[s][i];
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int i = start + k * kBlockThreads + static_cast<int>(threadIdx.x);
      if (i < count) {
        update(values[k]);
#pragma unroll
        for (int s = 0; s < kDepth; ++s) {
          if ((store_mask >> s) & 1u) {
            if (s == kGradSlot) {
              grad[i] = static_cast<scalar_t>(values[k][s]);
            } else {
              wide[s][i] = values[k][s];
            }
          }
        }
        param[i] = static_cast<scalar_t>(values[k][kParamSlot]);
      }
    }
  }
}

constexpr int kParam = 0;
constexpr int kGrad = 1;
constexpr int kExpAvg = 2;          // Adam
constexpr int kExpAvgSq = 3;        // Adam
constexpr int kMaxExpAvgSq = 4;     // Adam with amsgrad
constexpr int kMomentumBuffer = 2;  // SGD with momentum
static_assert(kGrad == kGradSlot, "the launcher keeps the grads apart");

// NOTE: [launch bounds]
// 256 threads per block, and at least kMinBlocksPerSm blocks resident per SM,
// which caps a thread at 65536 / (256 * 4) = 64 registers (50% occupancy on
// sm_80/sm_90). Estimate for the deepest kernel, amsgrad: five 16-byte
// vectors in flight (20 registers), one element's five opmath values (5, or
// 10 in fp64), the coefficients (12, or 24 in fp64), five slot pointers (10),
// indices and the loop (~8): ~55 in fp32/bf16, ~77 in fp64 before the
// compiler shortens live ranges. A memory-bound update needs no more than
// 50%: 1024 resident threads x 5 vectors x 16 B = 80 KB in flight per SM,
// several times what an H100/H200 SM needs to cover DRAM latency. `-Xptxas -v`
// reports no spills at this bound (register counts in the commit message).
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
};

// One thread per tensor, before the update kernel of the same step: advances
// the tensor's step counter (not on a skipped step) and writes the tensor's
// terms with terms_of(step before, inputs, terms), so that a block reads them
// instead of computing them once per chunk.
template <typename TermsOf>
__global__ void advance_steps_kernel(TensorTable table, StepInputs in, TermsOf terms_of) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= table.num_tensors || is_set(in.found_inf)) {
    return;
  }
  double* step = table.entries[t].step;
  const double before = *step;
  *step = before + 1.0;
  terms_of(before, in, table.tensor_terms + kTermsPerTensor * t);
}

// A block's work: its tensor's slots, its chunk and what make() derived.
template <typename Values>
struct BlockPlan {
  void* slots[kMaxSlots];
  void* master;  // the fp32 master weights (NOTE: [master weights]); nullptr without
  int64_t begin;
  int count;
  Values values;
};

// Thread 0 finds the block's tensor (one load), reads its table entry and
// terms and computes make(terms, grad_scale, clip_coef) (float64); every
// thread then reads the plan from shared memory. nullptr: found_inf is set,
// the step is skipped.
template <typename Values, typename Make>
__device__ const BlockPlan<Values>* plan_block(const TensorTable& table, const StepInputs& in, const Make& make) {
  __shared__ bool skipped;
  __shared__ BlockPlan<Values> plan;
  if (threadIdx.x == 0) {
    skipped = is_set(in.found_inf);
    if (!skipped) {
      const int64_t t = table.chunk_tensors[blockIdx.x];
      const TensorEntry& entry = table.entries[t];
      const chunk_plan::ChunkRef chunk = chunk_plan::chunk_ref(t, entry.numel, entry.first_chunk, blockIdx.x);
#pragma unroll
      for (int s = 0; s < kMaxSlots; ++s) {
        plan.slots[s] = s == kGradSlot ? table.grads[t] : entry.slots[s];
      }
      plan.master = entry.slots[kGradSlot];
      plan.begin = chunk.begin;
      plan.count = chunk.count;
      const double scale = in.grad_scale.data != nullptr ? load_scalar(in.grad_scale) : 1.0;
      const double clip = in.clip_coef.data != nullptr ? load_scalar(in.clip_coef) : 1.0;
      plan.values = make(table.tensor_terms + kTermsPerTensor * t, scale, clip);
    }
  }
  __syncthreads();
  return skipped ? nullptr : &plan;
}

// The chunk's slot pointers: slot s of the block's tensor, from the chunk's first element.
template <typename scalar_t, int kDepth, typename Values>
__device__ void chunk_slots(const BlockPlan<Values>& plan, scalar_t* (&slots)[kDepth]) {
#pragma unroll
  for (int s = 0; s < kDepth; ++s) {
    slots[s] = static_cast<scalar_t*>(plan.slots[s]) + plan.begin;
    __builtin_assume(__isGlobal(slots[s]));  // tensor memory: global loads and stores, not generic ones
  }
}

// Runs `update` over the block's chunk: every slot in scalar_t, or with
// kMaster the params and grads in scalar_t and the states and master in float
// (the master takes the param's place among the values).
template <typename scalar_t, bool kMaster, int kDepth, typename Values, typename Update>
__device__ __forceinline__ void apply_to_block(const BlockPlan<Values>& plan, unsigned store_mask,
                                               const Update& update) {
  if constexpr (kMaster) {
    float* wide[kDepth];
#pragma unroll
    for (int s = 0; s < kDepth; ++s) {
      void* base = s == kParam ? plan.master : plan.slots[s];
      wide[s] = s == kGrad ? nullptr : static_cast<float*>(base) + plan.begin;
    }
    apply_to_master_chunk<scalar_t, kDepth>(static_cast<scalar_t*>(plan.slots[kParam]) + plan.begin,
                                            static_cast<scalar_t*>(plan.slots[kGrad]) + plan.begin, wide,
                                            plan.count, store_mask, update);
  } else {
    scalar_t* slot_pointers[kDepth];
    chunk_slots<scalar_t, kDepth>(plan, slot_pointers);
    apply_to_chunk<scalar_t, kDepth>(slot_pointers, plan.count, store_mask, update);
  }
}

// The slots a kernel stores: its own, and the grads when they were unscaled in place.
__device__ __forceinline__ unsigned store_mask_of(unsigned written, const StepInputs& in) {
  return written | (in.grad_scale.data != nullptr ? 1u << kGrad : 0u);
}

struct AdamArgs {
  StepInputs in;
  bool maximize;
};

// Adam's tensor terms: the bias corrections of the new step.
struct AdamTermsOf {
  __device__ void operator()(double step_before, const StepInputs& in, double* terms) const {
    const AdamStepTerms step_terms =
        adam_step_terms(adam_group_values(in.schedule_state, in.group_index), step_before + 1.0);
    terms[0] = step_terms.step_size;
    terms[1] = step_terms.bias_correction2_sqrt;
  }
};

template <typename scalar_t, bool kMaster, bool kAmsgrad, bool kDecoupled>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm) adam_chunk_kernel(TensorTable table,
                                                                                    AdamArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kAmsgrad ? 5 : 4;
  const unsigned store_mask = store_mask_of(
      (1u << kParam) | (1u << kExpAvg) | (1u << kExpAvgSq) | (kAmsgrad ? 1u << kMaxExpAvgSq : 0u), args.in);
  const auto* plan = plan_block<AdamCoefficients<opmath_t>>(
      table, args.in, [&](const double* terms, double scale, double clip) {
        const GradOptions<opmath_t> grad = make_grad_options<opmath_t>(
            args.maximize, args.in.grad_scale.data != nullptr, scale, args.in.clip_coef.data != nullptr, clip);
        return make_adam_coefficients<opmath_t>(adam_group_values(args.in.schedule_state, args.in.group_index),
                                                grad, AdamStepTerms{terms[0], terms[1]});
      });
  if (plan == nullptr) {
    return;
  }
  const AdamCoefficients<opmath_t> c = plan->values;
  apply_to_block<scalar_t, kMaster, kDepth>(*plan, store_mask, [&](opmath_t(&v)[kDepth]) {
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

// SGD's tensor term: whether the momentum buffer has no history yet (the
// step counter is still 0: every earlier step was skipped or none ran).
struct SgdTermsOf {
  __device__ void operator()(double step_before, const StepInputs&, double* terms) const {
    terms[0] = step_before == 0.0 ? 1.0 : 0.0;
  }
};

template <typename opmath_t>
struct SgdBlockValues {
  SgdCoefficients<opmath_t> coefficients;
  bool first_step;
};

template <typename scalar_t, bool kMaster, bool kMomentum>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm) sgd_chunk_kernel(TensorTable table,
                                                                                   SgdArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kMomentum ? 3 : 2;
  const unsigned store_mask = store_mask_of((1u << kParam) | (kMomentum ? 1u << kMomentumBuffer : 0u), args.in);
  const auto* plan = plan_block<SgdBlockValues<opmath_t>>(
      table, args.in, [&](const double* terms, double scale, double clip) {
        const GradOptions<opmath_t> grad = make_grad_options<opmath_t>(
            args.maximize, args.in.grad_scale.data != nullptr, scale, args.in.clip_coef.data != nullptr, clip);
        return SgdBlockValues<opmath_t>{
            make_sgd_coefficients<opmath_t>(sgd_group_values(args.in.schedule_state, args.in.group_index),
                                            args.nesterov, grad),
            kMomentum && terms[0] != 0.0};  // without momentum there are no terms
      });
  if (plan == nullptr) {
    return;
  }
  const SgdCoefficients<opmath_t> c = plan->values.coefficients;
  const bool first_step = plan->values.first_step;
  apply_to_block<scalar_t, kMaster, kDepth>(*plan, store_mask, [&](opmath_t(&v)[kDepth]) {
    if constexpr (kMomentum) {
      sgd_update<opmath_t, true, scalar_t>(v[kParam], v[kGrad], v[kMomentumBuffer], first_step, c);
    } else {
      opmath_t unused = 0;
      sgd_update<opmath_t, false, scalar_t>(v[kParam], v[kGrad], unused, first_step, c);
    }
  });
}

template <typename Op>
StepInputs step_inputs(const UpdateCall<Op>& call) {
  const at::Tensor& state = call.schedule_state;
  return {state.const_data_ptr<double>(), call.group_index,
          device_scalar(call.grad_scale, state, "schedule_state", "grad_scale"),
          device_scalar(call.found_inf, state, "schedule_state", "found_inf"),
          device_scalar(call.clip_coef, state, "schedule_state", "clip_coef")};
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

void run_step(const UpdateCall<AdamStepOp>& call, const StepInputs& in, c10::cuda::CUDAStream stream) {
  using Op = AdamStepOp;
  const bool amsgrad = call.has(Op::kAmsgrad);
  TableSpec spec;
  spec.slots = {call.params, call.grads, call.slots[Op::kExpAvg], call.slots[Op::kExpAvgSq]};
  if (amsgrad) {
    spec.slots.push_back(call.slots[Op::kMaxExpAvgSq]);
  }
  spec.steps = call.slots[Op::kStep];
  spec.masters = call.slots[Op::kMasterParam];
  const TensorTable table = TensorTableCache::instance().get(spec, call.schedule_state.device().index(), stream);
  const AdamArgs args{in, call.has(Op::kMaximize)};
  launch_per_tensor(&advance_steps_kernel<AdamTermsOf>, table, stream.stream(), in, AdamTermsOf{});
  dispatch_update_types(call.params[0].scalar_type(), call.has(Op::kMasterWeights), [&](auto scalar,
                                                                                       auto master_flag) {
    using scalar_t = decltype(scalar);
    with_bool(amsgrad, [&](auto amsgrad_flag) {
      with_bool(call.has(Op::kDecoupledWeightDecay), [&](auto decoupled_flag) {
        launch_per_chunk(&adam_chunk_kernel<scalar_t, decltype(master_flag)::value, decltype(amsgrad_flag)::value,
                                            decltype(decoupled_flag)::value>,
                         table, stream.stream(), args);
      });
    });
  });
}

void run_step(const UpdateCall<SgdStepOp>& call, const StepInputs& in, c10::cuda::CUDAStream stream) {
  using Op = SgdStepOp;
  const bool has_momentum = call.has(Op::kMomentum);
  TableSpec spec;
  spec.slots = {call.params, call.grads};
  if (has_momentum) {
    spec.slots.push_back(call.slots[Op::kMomentumBuffer]);
    spec.steps = call.slots[Op::kStep];
  }
  spec.masters = call.slots[Op::kMasterParam];
  const TensorTable table = TensorTableCache::instance().get(spec, call.schedule_state.device().index(), stream);
  const SgdArgs args{in, call.has(Op::kNesterov), call.has(Op::kMaximize)};
  if (has_momentum) {
    launch_per_tensor(&advance_steps_kernel<SgdTermsOf>, table, stream.stream(), in, SgdTermsOf{});
  }
  dispatch_update_types(call.params[0].scalar_type(), call.has(Op::kMasterWeights), [&](auto scalar,
                                                                                       auto master_flag) {
    using scalar_t = decltype(scalar);
    with_bool(has_momentum, [&](auto momentum_flag) {
      launch_per_chunk(&sgd_chunk_kernel<scalar_t, decltype(master_flag)::value, decltype(momentum_flag)::value>,
                       table, stream.stream(), args);
    });
  });
}

// The CUDA kernels of update op Op (UpdateStepSignature): the shared checks,
// then the launches on the current stream; found_inf is read on the device.
template <typename Op>
void update_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList states,
                      const at::Tensor& schedule_state, int64_t group_index, int64_t flags,
                      const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                      const std::optional<at::Tensor>& clip_coef) {
  const UpdateCall<Op> call = check_update_call<Op>(params, grads, states, schedule_state, group_index, flags,
                                                    grad_scale, found_inf, clip_coef);
  const StepInputs in = step_inputs(call);
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  run_step(call, in, c10::cuda::getCurrentCUDAStream(schedule_state.device().index()));
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

std::map<std::string, int64_t> table_cache_stats() {
  return TensorTableCache::instance().stats();
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  for_each_update_op([&](auto op) { m.impl(decltype(op)::kName, &cuda::update_step_cuda<decltype(op)>); });
  m.impl("schedule_step_", &cuda::schedule_step_cuda);
}

}  // namespace lrsched_fused
