// CPU kernels: one parallel pass over the chunks of all tensors of a call.
//
// NOTE: [CPU chunking]
// Every tensor is cut into chunks of at most kChunkElements; the chunks of all
// tensors form one list that at::parallel_for splits across threads. Small
// tensors therefore cost no parallel region each (torch's fused CPU optimizers
// open one per tensor), and a large one is still spread over all threads. The
// per-element math is the shared header's, in plain loops over contiguous
// storage that the compiler vectorizes; loop-invariant options are template
// parameters so the inner loops have no branches.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "../schedule_math.h"
#include "../update_math.h"

namespace lrsched_fused {
namespace {

constexpr int64_t kChunkElements = 1 << 15;

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

std::vector<Chunk> split_into_chunks(at::TensorList params) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel();
    for (int64_t begin = 0; begin < n; begin += kChunkElements) {
      chunks.push_back({static_cast<int64_t>(i), begin, std::min(n, begin + kChunkElements)});
    }
  }
  return chunks;
}

template <typename F>
void for_each_chunk(const std::vector<Chunk>& chunks, const F& body) {
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      body(chunks[c]);
    }
  });
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

template <typename T>
T* data_or_null(at::TensorList list, size_t i) {
  return list.empty() ? nullptr : list[i].mutable_data_ptr<T>();
}

void adam_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
    at::TensorList max_exp_avg_sqs, at::TensorList steps, const at::Tensor& schedule_state,
    int64_t group_index, double beta1, double beta2, double weight_decay, double eps, bool amsgrad,
    bool maximize, bool decoupled_weight_decay, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf) {
  check_group_index(schedule_state, group_index);
  check_params(params, schedule_state);
  check_slot(params, grads, "grads");
  check_slot(params, exp_avgs, "exp_avgs");
  check_slot(params, exp_avg_sqs, "exp_avg_sqs");
  if (amsgrad) {
    check_slot(params, max_exp_avg_sqs, "max_exp_avg_sqs");
  }
  check_steps(params, steps);
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double lr = schedule_state.const_data_ptr<double>()[layout::lr_offset(group_index)];
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const std::vector<Chunk> chunks = split_into_chunks(params);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "adam_step_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    std::vector<AdamCoefficients<opmath_t>> coefficients;
    coefficients.reserve(params.size());
    for (const at::Tensor& step : steps) {
      double& count = *step.mutable_data_ptr<double>();
      count += 1;
      coefficients.push_back(make_adam_coefficients<opmath_t>(
          lr, beta1, beta2, weight_decay, eps, maximize, scale, count));
    }
    with_bool(amsgrad, [&](auto amsgrad_flag) {
    with_bool(decoupled_weight_decay, [&](auto decoupled_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
      constexpr bool kAmsgrad = decltype(amsgrad_flag)::value;
      constexpr bool kUnscale = decltype(unscale_flag)::value;
      for_each_chunk(chunks, [&](const Chunk& chunk) {
        const size_t t = static_cast<size_t>(chunk.tensor);
        scalar_t* param = params[t].mutable_data_ptr<scalar_t>();
        scalar_t* grad = grads[t].mutable_data_ptr<scalar_t>();
        scalar_t* exp_avg = exp_avgs[t].mutable_data_ptr<scalar_t>();
        scalar_t* exp_avg_sq = exp_avg_sqs[t].mutable_data_ptr<scalar_t>();
        scalar_t* max_exp_avg_sq = kAmsgrad ? max_exp_avg_sqs[t].mutable_data_ptr<scalar_t>() : nullptr;
        const AdamCoefficients<opmath_t> c = coefficients[t];
        for (int64_t i = chunk.begin; i < chunk.end; ++i) {
          opmath_t p = param[i];
          opmath_t g = grad[i];
          opmath_t m = exp_avg[i];
          opmath_t v = exp_avg_sq[i];
          opmath_t v_max = kAmsgrad ? opmath_t(max_exp_avg_sq[i]) : opmath_t(0);
          adam_update<opmath_t, kAmsgrad, decltype(decoupled_flag)::value, decltype(weight_decay_flag)::value,
                      kUnscale>(p, g, m, v, v_max, c);
          param[i] = static_cast<scalar_t>(p);
          exp_avg[i] = static_cast<scalar_t>(m);
          exp_avg_sq[i] = static_cast<scalar_t>(v);
          if constexpr (kAmsgrad) {
            max_exp_avg_sq[i] = static_cast<scalar_t>(v_max);
          }
          if constexpr (kUnscale) {
            grad[i] = static_cast<scalar_t>(g);
          }
        }
      });
    });
    });
    });
    });
  });
}

void sgd_step_cpu(
    at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, c10::List<bool> first_step,
    const at::Tensor& schedule_state, int64_t group_index, double momentum, double dampening,
    double weight_decay, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
    const std::optional<at::Tensor>& found_inf) {
  check_group_index(schedule_state, group_index);
  check_params(params, schedule_state);
  check_slot(params, grads, "grads");
  const bool has_momentum = momentum != 0.0;
  if (has_momentum) {
    check_slot(params, momentum_buffers, "momentum_buffers");
    TORCH_CHECK(first_step.size() == params.size(), "first_step has ", first_step.size(), " entries, expected ",
                params.size());
  }
  check_scalar_tensor(grad_scale, "grad_scale");
  check_scalar_tensor(found_inf, "found_inf");
  if (params.empty() || step_is_skipped(found_inf)) {
    return;
  }
  const double lr = schedule_state.const_data_ptr<double>()[layout::lr_offset(group_index)];
  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const std::vector<Chunk> chunks = split_into_chunks(params);
  std::vector<char> is_first(params.size(), 0);
  for (size_t i = 0; has_momentum && i < params.size(); ++i) {
    is_first[i] = first_step.get(i);
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[0].scalar_type(), "sgd_step_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const SgdCoefficients<opmath_t> c =
        make_sgd_coefficients<opmath_t>(lr, momentum, dampening, weight_decay, nesterov, maximize, scale);
    with_bool(has_momentum, [&](auto momentum_flag) {
    with_bool(weight_decay != 0.0, [&](auto weight_decay_flag) {
    with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
      constexpr bool kMomentum = decltype(momentum_flag)::value;
      constexpr bool kUnscale = decltype(unscale_flag)::value;
      for_each_chunk(chunks, [&](const Chunk& chunk) {
        const size_t t = static_cast<size_t>(chunk.tensor);
        scalar_t* param = params[t].mutable_data_ptr<scalar_t>();
        scalar_t* grad = grads[t].mutable_data_ptr<scalar_t>();
        scalar_t* buffer = kMomentum ? momentum_buffers[t].mutable_data_ptr<scalar_t>() : nullptr;
        const bool first = is_first[t] != 0;
        for (int64_t i = chunk.begin; i < chunk.end; ++i) {
          opmath_t p = param[i];
          opmath_t g = grad[i];
          opmath_t b = kMomentum ? opmath_t(buffer[i]) : opmath_t(0);
          sgd_update<opmath_t, kMomentum, decltype(weight_decay_flag)::value, kUnscale>(p, g, b, first, c);
          param[i] = static_cast<scalar_t>(p);
          if constexpr (kMomentum) {
            buffer[i] = static_cast<scalar_t>(b);
          }
          if constexpr (kUnscale) {
            grad[i] = static_cast<scalar_t>(g);
          }
        }
      });
    });
    });
    });
  });
}

void schedule_step_cpu(
    const at::Tensor& schedule_state, int64_t kind, c10::ArrayRef<double> hyperparameters,
    const std::optional<at::Tensor>& metric, const std::optional<at::Tensor>& skip_if) {
  const int64_t groups = num_schedule_groups(schedule_state);
  TORCH_CHECK(kind >= 0 && kind <= static_cast<int64_t>(ScheduleKind::Plateau), "unknown schedule kind ", kind);
  const auto schedule_kind = static_cast<ScheduleKind>(kind);
  TORCH_CHECK(static_cast<int64_t>(hyperparameters.size()) == num_hyperparameters(schedule_kind),
              "schedule kind ", kind, " takes ", num_hyperparameters(schedule_kind), " hyperparameters, got ",
              hyperparameters.size());
  check_scalar_tensor(metric, "metric");
  check_scalar_tensor(skip_if, "skip_if");
  TORCH_CHECK(schedule_kind != ScheduleKind::Plateau || metric.has_value(), "ReduceLROnPlateau needs a metric");
  for (const auto* t : {&metric, &skip_if}) {
    TORCH_CHECK(!t->has_value() || (*t)->device().is_cpu(), "metric and skip_if must be on the CPU, like ",
                "schedule_state");
  }
  if (step_is_skipped(skip_if)) {
    return;
  }
  const double metric_value = metric.has_value() ? read_double(*metric) : 0.0;
  advance_schedule(schedule_state.mutable_data_ptr<double>(), groups, schedule_kind, hyperparameters.data(),
                   metric_value);
}

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, CPU, m) {
  m.impl("adam_step_", &adam_step_cpu);
  m.impl("sgd_step_", &sgd_step_cpu);
  m.impl("schedule_step_", &schedule_step_cpu);
}

}  // namespace lrsched_fused
