// CPU kernels: one parallel pass over the elements of all tensors of a call.
//
// NOTE: [CPU work split]
// The elements of all tensors of a call, laid end to end, are cut into blocks
// of kBlockElements; one parallel region runs over them and every thread takes
// the next free block from an atomic counter until none is left. A block may
// cover the tail of one tensor and the heads of the next ones. So small
// tensors cost no parallel region each (torch's fused CPU optimizers open one
// per tensor), a large tensor is still spread over all threads, and a thread
// that is slowed down (a busy core, unequal tensors) takes fewer blocks instead
// of holding the others at the closing barrier, as a fixed split would.
// A call with fewer than kSerialElements elements runs on the calling thread.
//
// NOTE: [CPU instruction sets]
// The extension is built for the baseline x86-64 ISA (no -march=native, so it
// runs anywhere), where the compiler vectorizes with 16-byte SSE only. The
// per-element loops are therefore compiled twice, as is and for AVX2, and the
// AVX2 version runs when torch reports that capability
// (torch.backends.cpu.get_cpu_capability(); ATEN_CPU_CAPABILITY=default picks
// the baseline). Both versions are the same source: the math of update_math.h
// in plain loops over contiguous storage, with loop-invariant options as
// template parameters. The AVX2 target deliberately leaves out FMA: without
// it the vector instructions round exactly as the scalar ones do, so both
// versions give bit-identical results, equal bit for bit to torch's fused CPU
// kernels run with ATEN_CPU_CAPABILITY=default. (torch's AVX2 kernels contract
// into FMA; against them we differ by rounding, worst seen 1.4e-6 relative on
// an fp32 Adam element where grad + weight_decay * param cancels, see
// benchmarks/check_against_torch.py.) No -ffast-math either.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"

#if defined(__GNUC__) || defined(__clang__)
#define LRSCHED_FUSED_FLATTEN __attribute__((flatten))
#else
#define LRSCHED_FUSED_FLATTEN
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LRSCHED_FUSED_AVX2_CLONE 1
#define LRSCHED_FUSED_TARGET_AVX2 __attribute__((target("avx2"), flatten))
#endif

namespace lrsched_fused {
namespace {

constexpr int64_t kBlockElements = 1 << 16;
constexpr int64_t kSerialElements = 1 << 15;

// The elements of all tensors laid end to end (NOTE: [CPU work split]).
class ElementSpace {
 public:
  explicit ElementSpace(at::TensorList params) : starts_(params.size() + 1, 0) {
    for (size_t i = 0; i < params.size(); ++i) {
      starts_[i + 1] = starts_[i] + params[i].numel();
    }
  }

  int64_t size() const { return starts_.back(); }

  // Calls piece(tensor, begin, end) for the part of every tensor inside
  // [first, last) of the concatenated elements, in order.
  template <typename F>
  void for_each_piece(int64_t first, int64_t last, const F& piece) const {
    size_t t = std::upper_bound(starts_.begin(), starts_.end(), first) - starts_.begin() - 1;
    for (; t + 1 < starts_.size() && starts_[t] < last; ++t) {
      const int64_t begin = std::max(first, starts_[t]) - starts_[t];
      const int64_t end = std::min(last, starts_[t + 1]) - starts_[t];
      if (begin < end) {
        piece(t, begin, end);
      }
    }
  }

 private:
  std::vector<int64_t> starts_;
};

template <typename F>
void for_each_piece_in_parallel(const ElementSpace& space, const F& piece) {
  const int64_t total = space.size();
  if (total <= kSerialElements || at::get_num_threads() == 1 || at::in_parallel_region()) {
    space.for_each_piece(0, total, piece);
    return;
  }
  const int64_t blocks = (total + kBlockElements - 1) / kBlockElements;
  std::atomic<int64_t> next_block{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), blocks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t b = next_block.fetch_add(1, std::memory_order_relaxed); b < blocks;
         b = next_block.fetch_add(1, std::memory_order_relaxed)) {
      space.for_each_piece(b * kBlockElements, std::min(total, (b + 1) * kBlockElements), piece);
    }
  });
}

// NOTE: [CPU instruction sets]: Elements::run and everything it calls (the
// update of update_math.h included) is inlined into both callers (flatten), so
// the loop is compiled for each one's target. Without flatten GCC may keep
// adam_update out of line, compiled for the baseline: a scalar call per
// element, 8x slower (seen with weight decay once -fopenmp was on).
bool use_avx2() {
#ifdef LRSCHED_FUSED_AVX2_CLONE
  static const bool value = [] {
    const std::string capability = at::get_cpu_capability();
    return (capability == "AVX2" || capability == "AVX512") && __builtin_cpu_supports("avx2");
  }();
  return value;
#else
  return false;
#endif
}

template <typename Elements, typename... Args>
LRSCHED_FUSED_FLATTEN void run_baseline(const Args&... args) {
  Elements::run(args...);
}

#ifdef LRSCHED_FUSED_AVX2_CLONE
template <typename Elements, typename... Args>
LRSCHED_FUSED_TARGET_AVX2 void run_avx2(const Args&... args) {
  Elements::run(args...);
}
#endif

template <typename Elements, typename... Args>
void run_elements(bool avx2, const Args&... args) {
#ifdef LRSCHED_FUSED_AVX2_CLONE
  if (avx2) {
    run_avx2<Elements>(args...);
    return;
  }
#endif
  run_baseline<Elements>(args...);
}

double read_double(const at::Tensor& t) {
  double value = 0;
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, t.scalar_type(), "read_double", [&] {
    value = static_cast<double>(*t.const_data_ptr<scalar_t>());
  });
  return value;
}

bool step_is_skipped(const std::optional<at::Tensor>& found_inf) {
  return found_inf.has_value() && read_double(*found_inf) != 0.0;
}

// Calls f(std::bool_constant<value>{}) so that `value` becomes a template argument.
template <typename F>
void with_bool(bool value, const F& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// The data pointers of one slot (empty for an unused slot), read once before
// the parallel region.
template <typename T>
std::vector<T*> data_pointers(at::TensorList list) {
  std::vector<T*> pointers;
  pointers.reserve(list.size());
  for (const at::Tensor& t : list) {
    pointers.push_back(t.mutable_data_ptr<T>());
  }
  return pointers;
}

template <typename T>
T* offset_or_null(const std::vector<T*>& pointers, size_t tensor, int64_t begin) {
  return pointers.empty() ? nullptr : pointers[tensor] + begin;
}

#if defined(__GNUC__) || defined(__clang__)
#define LRSCHED_FUSED_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define LRSCHED_FUSED_ALWAYS_INLINE inline
#endif

// opmath_t -> scalar_t for the stores. For bfloat16 this is c10's
// round-to-nearest-even with NaN -> 0x7FC0, written as a select instead of
// c10's early return: the same bits, but a form the vectorizer takes (with
// c10's branch the bf16 Adam loop stayed scalar, 6x slower than fp32).
template <typename scalar_t, typename opmath_t>
LRSCHED_FUSED_ALWAYS_INLINE scalar_t to_storage(opmath_t value) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const uint32_t bits = c10::bit_cast<uint32_t>(value);
    const uint32_t rounded = (bits + ((bits >> 16) & 1) + UINT32_C(0x7FFF)) >> 16;
    const uint16_t stored = value != value ? UINT16_C(0x7FC0) : static_cast<uint16_t>(rounded);
    return c10::BFloat16(stored, c10::BFloat16::from_bits());
  } else {
    return static_cast<scalar_t>(value);
  }
}

// n consecutive elements of one tensor: the loop each instruction set compiles.
template <typename scalar_t, bool kAmsgrad, bool kDecoupled, bool kWeightDecay, bool kUnscale>
struct AdamElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, scalar_t* __restrict__ exp_avg,
      scalar_t* __restrict__ exp_avg_sq, scalar_t* __restrict__ max_exp_avg_sq, int64_t n,
      const AdamCoefficients<opmath_t>& coefficients) {
    // A local copy (the stores cannot alias it) whose lerp form is a constant
    // in each loop, so the loops carry no select on it.
    AdamCoefficients<opmath_t> c = coefficients;
    if (c.lerp_weight_is_small) {
      c.lerp_weight_is_small = true;
      loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, c);
    } else {
      c.lerp_weight_is_small = false;
      loop(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, c);
    }
  }

  static LRSCHED_FUSED_ALWAYS_INLINE void loop(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, scalar_t* __restrict__ exp_avg,
      scalar_t* __restrict__ exp_avg_sq, scalar_t* __restrict__ max_exp_avg_sq, int64_t n,
      const AdamCoefficients<opmath_t>& c) {
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = param[i];
      opmath_t g = grad[i];
      opmath_t m = exp_avg[i];
      opmath_t v = exp_avg_sq[i];
      opmath_t v_max = kAmsgrad ? opmath_t(max_exp_avg_sq[i]) : opmath_t(0);
      adam_update<opmath_t, kAmsgrad, kDecoupled, kWeightDecay, kUnscale>(p, g, m, v, v_max, c);
      param[i] = to_storage<scalar_t>(p);
      exp_avg[i] = to_storage<scalar_t>(m);
      exp_avg_sq[i] = to_storage<scalar_t>(v);
      if constexpr (kAmsgrad) {
        max_exp_avg_sq[i] = to_storage<scalar_t>(v_max);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

template <typename scalar_t, bool kMomentum, bool kWeightDecay, bool kUnscale>
struct SgdElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(
      scalar_t* __restrict__ param, scalar_t* __restrict__ grad, scalar_t* __restrict__ momentum_buffer,
      int64_t n, bool first_step, const SgdCoefficients<opmath_t>& coefficients) {
    const SgdCoefficients<opmath_t> c = coefficients;
    for (int64_t i = 0; i < n; ++i) {
      opmath_t p = param[i];
      opmath_t g = grad[i];
      opmath_t b = kMomentum ? opmath_t(momentum_buffer[i]) : opmath_t(0);
      sgd_update<opmath_t, kMomentum, kWeightDecay, kUnscale>(p, g, b, first_step, c);
      param[i] = to_storage<scalar_t>(p);
      if constexpr (kMomentum) {
        momentum_buffer[i] = to_storage<scalar_t>(b);
      }
      if constexpr (kUnscale) {
        grad[i] = to_storage<scalar_t>(g);
      }
    }
  }
};

void adam_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
    at::TensorList max_exp_avg_sqs, at::TensorList steps, const at::Tensor& schedule_state,
    int64_t group_index, double beta1, double beta2, double weight_decay, double eps, bool amsgrad,
    bool maximize, bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule) {
  check_adam_step_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state, group_index,
                       amsgrad);
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double* schedule = schedule_state.const_data_ptr<double>();
  const double lr = schedule[layout::lr_offset(group_index)];
  if (momentum_from_schedule) {
    beta1 = schedule[layout::momentum_offset(group_index)];
  }
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const ElementSpace space(params);
  const bool avx2 = use_avx2();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "adam_step_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    std::vector<AdamCoefficients<opmath_t>> coefficients;
    coefficients.reserve(params.size());
    for (const at::Tensor& step : steps) {
      double& count = *step.mutable_data_ptr<double>();
      count += 1;
      coefficients.push_back(make_adam_coefficients<opmath_t>(lr, beta1, beta2, weight_decay, eps, maximize, scale,
                                                              adam_step_terms(lr, beta1, beta2, count)));
    }
    const auto param_data = data_pointers<scalar_t>(params);
    const auto grad_data = data_pointers<scalar_t>(grads);
    const auto exp_avg_data = data_pointers<scalar_t>(exp_avgs);
    const auto exp_avg_sq_data = data_pointers<scalar_t>(exp_avg_sqs);
    const auto max_exp_avg_sq_data = data_pointers<scalar_t>(amsgrad ? max_exp_avg_sqs : at::TensorList());
    with_bool(amsgrad, [&](auto amsgrad_flag) {
    with_bool(decoupled_weight_decay, [&](auto decoupled_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
      using Elements = AdamElements<scalar_t, decltype(amsgrad_flag)::value, decltype(decoupled_flag)::value,
                                    decltype(weight_decay_flag)::value, decltype(unscale_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin, exp_avg_data[t] + begin,
                               exp_avg_sq_data[t] + begin, offset_or_null(max_exp_avg_sq_data, t, begin),
                               end - begin, coefficients[t]);
      });
    });
    });
    });
    });
  });
}

void sgd_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, at::TensorList steps,
    const at::Tensor& schedule_state, int64_t group_index, double momentum, double dampening,
    double weight_decay, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf, bool momentum_from_schedule) {
  const bool has_momentum = momentum != 0.0 || momentum_from_schedule;
  check_sgd_step_args(params, grads, momentum_buffers, steps, schedule_state, group_index, has_momentum);
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double* schedule = schedule_state.const_data_ptr<double>();
  const double lr = schedule[layout::lr_offset(group_index)];
  if (momentum_from_schedule) {
    momentum = schedule[layout::momentum_offset(group_index)];
  }
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const ElementSpace space(params);
  const bool avx2 = use_avx2();
  // A momentum buffer has no history while its step counter is 0 (every
  // earlier step was skipped, or none ran): it then becomes the gradient.
  std::vector<char> is_first(params.size(), 0);
  for (size_t i = 0; has_momentum && i < params.size(); ++i) {
    double& count = *steps[i].mutable_data_ptr<double>();
    is_first[i] = count == 0.0;
    count += 1;
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "sgd_step_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const SgdCoefficients<opmath_t> c =
        make_sgd_coefficients<opmath_t>(lr, momentum, dampening, weight_decay, nesterov, maximize, scale);
    const auto param_data = data_pointers<scalar_t>(params);
    const auto grad_data = data_pointers<scalar_t>(grads);
    const auto buffer_data = data_pointers<scalar_t>(has_momentum ? momentum_buffers : at::TensorList());
    with_bool(has_momentum, [&](auto momentum_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
      using Elements = SgdElements<scalar_t, decltype(momentum_flag)::value, decltype(weight_decay_flag)::value,
                                   decltype(unscale_flag)::value>;
      for_each_piece_in_parallel(space, [&](size_t t, int64_t begin, int64_t end) {
        run_elements<Elements>(avx2, param_data[t] + begin, grad_data[t] + begin,
                               offset_or_null(buffer_data, t, begin), end - begin, is_first[t] != 0, c);
      });
    });
    });
    });
  });
}

void schedule_step_cpu(
    const at::Tensor& schedule_state, c10::ArrayRef<double> program, const std::optional<at::Tensor>& metric,
    const std::optional<at::Tensor>& skip_if, bool initial) {
  const int64_t groups = num_schedule_groups(schedule_state);
  const Program checked = check_schedule_program(program, metric.has_value() || initial);
  check_scalar_tensor(metric, "metric");
  check_scalar_tensor(skip_if, "skip_if");
  for (const auto* t : {&metric, &skip_if}) {
    TORCH_CHECK(!t->has_value() || (*t)->device().is_cpu(), "metric and skip_if must be on the CPU, like ",
                "schedule_state");
  }
  if (step_is_skipped(skip_if)) {
    return;
  }
  double* state = schedule_state.mutable_data_ptr<double>();
  if (initial) {
    initialize_schedule(state, groups, checked);
    return;
  }
  advance_schedule(state, groups, checked, metric.has_value() ? read_double(*metric) : 0.0);
}

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, CPU, m) {
  m.impl("adam_step_", &adam_step_cpu);
  m.impl("sgd_step_", &sgd_step_cpu);
  m.impl("schedule_step_", &schedule_step_cpu);
}

}  // namespace lrsched_fused
