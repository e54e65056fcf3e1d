// CUDA kernels of adam_step_, sgd_step_ and schedule_step_, and their
// registration. The per-element math and the schedule are the shared headers'
// (csrc/update_math.h, csrc/schedule_math.h); the chunking is the launcher's
// (NOTE: [device tensor table]).
//
// Each update kernel reads the group's lr from schedule_state, and grad_scale
// and found_inf, in device memory: nothing is read on the host, nothing
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

#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

// Calls f(std::bool_constant<value>{}) so that `value` becomes a template argument.
template <typename F>
void with_bool(bool value, const F& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// kDepth slot values of 16 bytes' worth of consecutive elements.
template <typename scalar_t>
struct alignas(16) Vector16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t values[kSize];
};

// Applies `update` to every element of a chunk (in opmath_t) and stores the
// slots whose bit is set in kStoreMask. When every slot pointer is 16-byte
// aligned (a chunk starts kChunkElements elements into its tensor, so this is
// the tensors' own alignment), each thread moves 16-byte vectors, one per
// slot in flight per loop; the last count % kSize elements, or the whole chunk
// of a misaligned tensor, go element by element, kILP per thread in flight.
// Both are coalesced across the block.
template <typename scalar_t, int kDepth, unsigned kStoreMask, typename Update>
__device__ __forceinline__ void apply_to_chunk(scalar_t* const (&slots)[kDepth], int count, const Update& update) {
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
        if ((kStoreMask >> s) & 1u) {
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
          if ((kStoreMask >> s) & 1u) {
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
template <typename scalar_t, int kDepth, unsigned kStoreMask, typename Update>
__device__ __forceinline__ void apply_to_master_chunk(scalar_t* param, scalar_t* grad, float* const (&wide)[kDepth],
                                                      int count, const Update& update) {
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
          if ((kStoreMask >> s) & 1u) {
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

// What every update kernel reads besides its own hyperparameters: the group's
// lr (and a cycled momentum / beta1) from the schedule state, and the
// GradScaler's scale and found_inf.
struct StepInputs {
  const double* schedule_state;
  int64_t lr_offset;
  int64_t momentum_offset;  // where momentum / beta1 is read from schedule_state; -1: use `momentum`
  double momentum;          // SGD's momentum or Adam's beta1 when not cycled
  DeviceScalar grad_scale;
  DeviceScalar found_inf;
  DeviceScalar clip_coef;  // gradient clipping's coefficient (NOTE: [grad norm]); data == nullptr without

  __device__ double lr() const { return schedule_state[lr_offset]; }
  __device__ double group_momentum() const {
    return momentum_offset >= 0 ? schedule_state[momentum_offset] : momentum;
  }
};

// One thread per tensor, before the update kernel of the same step: advances
// the tensor's step counter (not on a skipped step) and writes the tensor's
// terms with terms_of(step before, lr, momentum, terms), so that a block
// reads them instead of computing them once per chunk.
template <typename TermsOf>
__global__ void advance_steps_kernel(TensorTable table, StepInputs in, TermsOf terms_of) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= table.num_tensors || is_set(in.found_inf)) {
    return;
  }
  double* step = table.entries[t].step;
  const double before = *step;
  *step = before + 1.0;
  terms_of(before, in.lr(), in.group_momentum(), table.tensor_terms + kTermsPerTensor * t);
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
// terms and computes make(terms, lr, momentum, grad_scale, clip_coef) (all float64);
// every thread then reads the plan from shared memory. nullptr: found_inf is
// set, the step is skipped.
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
      plan.values = make(table.tensor_terms + kTermsPerTensor * t, in.lr(), in.group_momentum(), scale, clip);
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
template <typename scalar_t, bool kMaster, int kDepth, unsigned kStoreMask, typename Values, typename Update>
__device__ __forceinline__ void apply_to_block(const BlockPlan<Values>& plan, const Update& update) {
  if constexpr (kMaster) {
    float* wide[kDepth];
#pragma unroll
    for (int s = 0; s < kDepth; ++s) {
      void* base = s == kParam ? plan.master : plan.slots[s];
      wide[s] = s == kGrad ? nullptr : static_cast<float*>(base) + plan.begin;
    }
    apply_to_master_chunk<scalar_t, kDepth, kStoreMask>(static_cast<scalar_t*>(plan.slots[kParam]) + plan.begin,
                                                        static_cast<scalar_t*>(plan.slots[kGrad]) + plan.begin,
                                                        wide, plan.count, update);
  } else {
    scalar_t* slot_pointers[kDepth];
    chunk_slots<scalar_t, kDepth>(plan, slot_pointers);
    apply_to_chunk<scalar_t, kDepth, kStoreMask>(slot_pointers, plan.count, update);
  }
}

struct AdamArgs {
  StepInputs in;  // in.momentum is beta1
  double beta2;
  double weight_decay;
  double eps;
  bool maximize;
};

// Adam's tensor terms: the bias corrections of the new step.
struct AdamTermsOf {
  double beta2;
  __device__ void operator()(double step_before, double lr, double beta1, double* terms) const {
    const AdamStepTerms step_terms = adam_step_terms(lr, beta1, beta2, step_before + 1.0);
    terms[0] = step_terms.step_size;
    terms[1] = step_terms.bias_correction2_sqrt;
  }
};

template <typename scalar_t, bool kMaster, bool kAmsgrad, bool kDecoupled, bool kWeightDecay, bool kUnscale,
          bool kClip>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm) adam_chunk_kernel(TensorTable table,
                                                                                    AdamArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kAmsgrad ? 5 : 4;
  constexpr unsigned kStoreMask = (1u << kParam) | (kUnscale ? 1u << kGrad : 0u) | (1u << kExpAvg) |
                                  (1u << kExpAvgSq) | (kAmsgrad ? 1u << kMaxExpAvgSq : 0u);
  const auto* plan = plan_block<AdamCoefficients<opmath_t>>(
      table, args.in, [&](const double* terms, double lr, double beta1, double scale, double clip) {
        return make_adam_coefficients<opmath_t>(lr, beta1, args.beta2, args.weight_decay, args.eps,
                                                args.maximize, scale, AdamStepTerms{terms[0], terms[1]}, clip);
      });
  if (plan == nullptr) {
    return;
  }
  const AdamCoefficients<opmath_t> c = plan->values;
  apply_to_block<scalar_t, kMaster, kDepth, kStoreMask>(*plan, [&](opmath_t(&v)[kDepth]) {
    if constexpr (kAmsgrad) {
      adam_update<opmath_t, true, kDecoupled, kWeightDecay, kUnscale, kClip, scalar_t>(
          v[kParam], v[kGrad], v[kExpAvg], v[kExpAvgSq], v[kMaxExpAvgSq], c);
    } else {
      opmath_t unused = 0;
      adam_update<opmath_t, false, kDecoupled, kWeightDecay, kUnscale, kClip, scalar_t>(
          v[kParam], v[kGrad], v[kExpAvg], v[kExpAvgSq], unused, c);
    }
  });
}

struct SgdArgs {
  StepInputs in;
  double dampening;
  double weight_decay;
  bool nesterov;
  bool maximize;
};

// SGD's tensor term: whether the momentum buffer has no history yet (the
// step counter is still 0: every earlier step was skipped or none ran).
struct SgdTermsOf {
  __device__ void operator()(double step_before, double, double, double* terms) const {
    terms[0] = step_before == 0.0 ? 1.0 : 0.0;
  }
};

template <typename opmath_t>
struct SgdBlockValues {
  SgdCoefficients<opmath_t> coefficients;
  bool first_step;
};

template <typename scalar_t, bool kMaster, bool kMomentum, bool kWeightDecay, bool kUnscale, bool kClip>
__global__ void __launch_bounds__(kBlockThreads, kMinBlocksPerSm) sgd_chunk_kernel(TensorTable table,
                                                                                   SgdArgs args) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kDepth = kMomentum ? 3 : 2;
  constexpr unsigned kStoreMask =
      (1u << kParam) | (kUnscale ? 1u << kGrad : 0u) | (kMomentum ? 1u << kMomentumBuffer : 0u);
  const auto* plan = plan_block<SgdBlockValues<opmath_t>>(
      table, args.in, [&](const double* terms, double lr, double momentum, double scale, double clip) {
        return SgdBlockValues<opmath_t>{
            make_sgd_coefficients<opmath_t>(lr, momentum, args.dampening, args.weight_decay, args.nesterov,
                                            args.maximize, scale, clip),
            kMomentum && terms[0] != 0.0};  // without momentum there are no terms
      });
  if (plan == nullptr) {
    return;
  }
  const SgdCoefficients<opmath_t> c = plan->values.coefficients;
  const bool first_step = plan->values.first_step;
  apply_to_block<scalar_t, kMaster, kDepth, kStoreMask>(*plan, [&](opmath_t(&v)[kDepth]) {
    if constexpr (kMomentum) {
      sgd_update<opmath_t, true, kWeightDecay, kUnscale, kClip, scalar_t>(v[kParam], v[kGrad], v[kMomentumBuffer],
                                                                         first_step, c);
    } else {
      opmath_t unused = 0;
      sgd_update<opmath_t, false, kWeightDecay, kUnscale, kClip, scalar_t>(v[kParam], v[kGrad], unused, first_step,
                                                                          c);
    }
  });
}

// Calls f(scalar_t{}, kMaster) for the params' dtype; master weights are
// taken for bfloat16/float16 params only (checked before).
template <typename F>
void dispatch_update_types(at::ScalarType dtype, bool master, const F& f) {
  if (master) {
    AT_DISPATCH_SWITCH(dtype, "update_step_cuda",
                       AT_DISPATCH_CASE(at::kHalf, [&] { f(scalar_t{}, std::true_type{}); })
                           AT_DISPATCH_CASE(at::kBFloat16, [&] { f(scalar_t{}, std::true_type{}); }));
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "update_step_cuda",
                                    [&] { f(scalar_t{}, std::false_type{}); });
  }
}

StepInputs step_inputs(const at::Tensor& schedule_state, int64_t group_index, bool momentum_from_schedule,
                       double momentum, DeviceScalar grad_scale, DeviceScalar found_inf, DeviceScalar clip_coef) {
  return {schedule_state.const_data_ptr<double>(), layout::lr_offset(group_index),
          momentum_from_schedule ? layout::momentum_offset(group_index) : -1, momentum, grad_scale, found_inf,
          clip_coef};
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

void adam_step_cuda(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
    at::TensorList max_exp_avg_sqs, at::TensorList steps, const at::Tensor& schedule_state,
    int64_t group_index, double beta1, double beta2, double weight_decay, double eps, bool amsgrad,
    bool maximize, bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule,
    const std::optional<at::Tensor>& clip_coef, std::optional<at::TensorList> master_list) {
  const at::TensorList master_params = master_list.value_or(at::TensorList());
  check_adam_step_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state, group_index,
                       amsgrad, master_params);
  const DeviceScalar scale = device_scalar(grad_scale, schedule_state, "schedule_state", "grad_scale");
  const DeviceScalar skip = device_scalar(found_inf, schedule_state, "schedule_state", "found_inf");
  const DeviceScalar clip = device_scalar(clip_coef, schedule_state, "schedule_state", "clip_coef");
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(schedule_state.device().index());
  TableSpec spec;
  spec.slots = {params, grads, exp_avgs, exp_avg_sqs};
  if (amsgrad) {
    spec.slots.push_back(max_exp_avg_sqs);
  }
  spec.steps = steps;
  spec.masters = master_params;
  const TensorTable table = TensorTableCache::instance().get(spec, schedule_state.device().index(), stream);
  const AdamArgs args{step_inputs(schedule_state, group_index, momentum_from_schedule, beta1, scale, skip, clip), beta2,
                      weight_decay, eps, maximize};
  launch_per_tensor(&advance_steps_kernel<AdamTermsOf>, table, stream.stream(), args.in, AdamTermsOf{beta2});

  dispatch_update_types(params[0].scalar_type(), !master_params.empty(), [&](auto scalar, auto master_flag) {
    using scalar_t = decltype(scalar);
    with_bool(amsgrad, [&](auto amsgrad_flag) {
    with_bool(decoupled_weight_decay, [&](auto decoupled_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
    with_bool(clip_coef.has_value(), [&](auto clip_flag) {
      launch_per_chunk(&adam_chunk_kernel<scalar_t, decltype(master_flag)::value, decltype(amsgrad_flag)::value,
                                          decltype(decoupled_flag)::value, decltype(weight_decay_flag)::value,
                                          decltype(unscale_flag)::value, decltype(clip_flag)::value>,
                       table, stream.stream(), args);
    });
    });
    });
    });
    });
  });
}

void sgd_step_cuda(
    at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, at::TensorList steps,
    const at::Tensor& schedule_state, int64_t group_index, double momentum, double dampening,
    double weight_decay, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule,
    const std::optional<at::Tensor>& clip_coef, std::optional<at::TensorList> master_list) {
  const at::TensorList master_params = master_list.value_or(at::TensorList());
  const bool has_momentum = momentum != 0.0 || momentum_from_schedule;
  check_sgd_step_args(params, grads, momentum_buffers, steps, schedule_state, group_index, has_momentum,
                      master_params);
  const DeviceScalar scale = device_scalar(grad_scale, schedule_state, "schedule_state", "grad_scale");
  const DeviceScalar skip = device_scalar(found_inf, schedule_state, "schedule_state", "found_inf");
  const DeviceScalar clip = device_scalar(clip_coef, schedule_state, "schedule_state", "clip_coef");
  if (params.empty()) {
    return;
  }
  const c10::cuda::CUDAGuard guard(schedule_state.device());
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(schedule_state.device().index());
  TableSpec spec;
  spec.slots = {params, grads};
  if (has_momentum) {
    spec.slots.push_back(momentum_buffers);
    spec.steps = steps;
  }
  spec.masters = master_params;
  const TensorTable table = TensorTableCache::instance().get(spec, schedule_state.device().index(), stream);
  const SgdArgs args{step_inputs(schedule_state, group_index, momentum_from_schedule, momentum, scale, skip, clip),
                     dampening, weight_decay, nesterov, maximize};
  if (has_momentum) {
    launch_per_tensor(&advance_steps_kernel<SgdTermsOf>, table, stream.stream(), args.in, SgdTermsOf{});
  }

  dispatch_update_types(params[0].scalar_type(), !master_params.empty(), [&](auto scalar, auto master_flag) {
    using scalar_t = decltype(scalar);
    with_bool(has_momentum, [&](auto momentum_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
    with_bool(clip_coef.has_value(), [&](auto clip_flag) {
      launch_per_chunk(&sgd_chunk_kernel<scalar_t, decltype(master_flag)::value, decltype(momentum_flag)::value,
                                         decltype(weight_decay_flag)::value, decltype(unscale_flag)::value,
                                         decltype(clip_flag)::value>,
                       table, stream.stream(), args);
    });
    });
    });
    });
  });
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
  m.impl("adam_step_", &cuda::adam_step_cuda);
  m.impl("sgd_step_", &cuda::sgd_step_cuda);
  m.impl("schedule_step_", &cuda::schedule_step_cuda);
}

}  // namespace lrsched_fused
