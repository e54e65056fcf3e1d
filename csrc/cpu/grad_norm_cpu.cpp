// CPU kernels of grad_norm_partial_ and clip_coefficient_ (NOTE: [grad norm] in
// csrc/grad_norm_math.h).
//
// Each grad is cut into blocks of kBlockElements; the blocks of all grads are
// the work items of one parallel region (threads take the next free item, as
// in NOTE: [CPU work split]), and each item's sum lands in its own slot. The
// slots of a grad are then added in order. The items depend on the sizes
// alone, and the loop over a block keeps kLanes independent sums that are
// added in a fixed order, so the result has the same bits for any number of
// threads and for both instruction-set clones (no FMA, no reassociation).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "../dispatch.h"
#include "../grad_norm_math.h"
#include "../op_checks.h"
#include "cpu_loops.h"

namespace lrsched_fused {
namespace {

using namespace cpu;  // NOLINT: the loop machinery of cpu_loops.h

constexpr int kLanes = 8;

// The sum of the norm terms of n consecutive elements (each unscaled first
// when kUnscale, and rounded to scalar_t as the update ops store it).
template <typename scalar_t, NormKind kKind, bool kUnscale>
struct NormTermsOfElements {
  using opmath_t = at::opmath_type<scalar_t>;
  static LRSCHED_FUSED_ALWAYS_INLINE void run(const scalar_t* __restrict__ grad, int64_t n, double p,
                                              opmath_t scale, double* out) {
    const NormOrder order{kKind, p};
    double lanes[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        lanes[k] = norm_combine(order, lanes[k], norm_term(order, value(grad[i + k], scale)));
      }
    }
    for (int k = 0; i < n; ++i, ++k) {
      lanes[k] = norm_combine(order, lanes[k], norm_term(order, value(grad[i], scale)));
    }
    double sum = lanes[0];
    for (int k = 1; k < kLanes; ++k) {
      sum = norm_combine(order, sum, lanes[k]);
    }
    *out = sum;
  }

  static LRSCHED_FUSED_ALWAYS_INLINE double value(scalar_t g, opmath_t scale) {
    if constexpr (kUnscale) {
      return static_cast<double>(static_cast<opmath_t>(to_storage<scalar_t>(static_cast<opmath_t>(g) / scale)));
    } else {
      return static_cast<double>(g);
    }
  }
};

// One work item: elements [begin, end) of grad `tensor`.
struct NormItem {
  size_t tensor;
  int64_t begin;
  int64_t end;
};

void grad_norm_partial_cpu(at::TensorList grads_in, double norm_type, const std::optional<at::Tensor>& grad_scale,
                           const at::Tensor& partial) {
  check_grad_norm_args(grads_in, norm_type, partial);
  check_scalar_tensor(grad_scale, "grad_scale");
  const NormOrder order = norm_order(norm_type);
  // The kernel walks storage: the norm does not depend on the order of the
  // elements, so any dense layout will do; anything else is copied.
  std::vector<at::Tensor> grads(grads_in.begin(), grads_in.end());
  for (at::Tensor& g : grads) {
    if (!g.is_non_overlapping_and_dense()) {
      g = g.contiguous();
    }
  }
  std::vector<NormItem> items;
  std::vector<size_t> first_item(grads.size() + 1, 0);
  for (size_t t = 0; t < grads.size(); ++t) {
    first_item[t] = items.size();
    const int64_t n = grads[t].numel();
    for (int64_t begin = 0; begin < n; begin += kBlockElements) {
      items.push_back({t, begin, std::min(n, begin + kBlockElements)});
    }
  }
  first_item[grads.size()] = items.size();

  const double scale = grad_scale.has_value() ? read_double(*grad_scale) : 1.0;
  const bool avx2 = use_avx2();
  std::vector<double> item_sums(items.size(), 0.0);
  const auto run_item = [&](size_t k) {
    const NormItem& item = items[k];
    const at::Tensor& g = grads[item.tensor];
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "grad_norm_partial_cpu", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const scalar_t* data = g.const_data_ptr<scalar_t>() + item.begin;
      with_bool(grad_scale.has_value(), [&](auto unscale_flag) {
        constexpr bool kUnscale = decltype(unscale_flag)::value;
        const auto run = [&](auto kind) {
          run_elements<NormTermsOfElements<scalar_t, decltype(kind)::value, kUnscale>>(
              avx2, data, item.end - item.begin, norm_type, static_cast<opmath_t>(scale), &item_sums[k]);
        };
        switch (order.kind) {
          case NormKind::One:
            run(std::integral_constant<NormKind, NormKind::One>{});
            break;
          case NormKind::Two:
            run(std::integral_constant<NormKind, NormKind::Two>{});
            break;
          case NormKind::Inf:
            run(std::integral_constant<NormKind, NormKind::Inf>{});
            break;
          default:
            run(std::integral_constant<NormKind, NormKind::Other>{});
        }
      });
    });
  };
  int64_t total_elements = 0;
  for (const at::Tensor& g : grads) {
    total_elements += g.numel();
  }
  if (total_elements <= kSerialElements || at::get_num_threads() == 1 || at::in_parallel_region()) {
    for (size_t k = 0; k < items.size(); ++k) {
      run_item(k);
    }
  } else {
    std::atomic<size_t> next_item{0};
    const int64_t workers = std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(items.size()));
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      for (size_t k = next_item.fetch_add(1, std::memory_order_relaxed); k < items.size();
           k = next_item.fetch_add(1, std::memory_order_relaxed)) {
        run_item(k);
      }
    });
  }

  double result = 0.0;
  for (size_t t = 0; t < grads.size(); ++t) {
    double sum = 0.0;
    for (size_t k = first_item[t]; k < first_item[t + 1]; ++k) {
      sum = norm_combine(order, sum, item_sums[k]);
    }
    // The grad's norm in its dtype, as torch._foreach_norm returns it.
    double norm = norm_root(order, sum);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[t].scalar_type(), "grad_norm_round", [&] {
      norm = static_cast<double>(static_cast<scalar_t>(norm));
    });
    result = norm_combine(order, result, norm_term(order, norm));
  }
  *partial.mutable_data_ptr<double>() = result;
}

void clip_coefficient_cpu(const at::Tensor& partial, double norm_type, double max_norm, const at::Tensor& total_norm,
                          const at::Tensor& clip_coef) {
  check_clip_coefficient_args(partial, norm_type, max_norm, total_norm, clip_coef);
  const double sum = *partial.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, total_norm.scalar_type(), "clip_coefficient_cpu", [&] {
    const auto result = clip_coefficient<scalar_t, at::opmath_type<scalar_t>>(norm_order(norm_type), sum, max_norm);
    *total_norm.mutable_data_ptr<scalar_t>() = result.total_norm;
    *clip_coef.mutable_data_ptr<scalar_t>() = result.clip_coef;
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lrsched_fused, CPU, m) {
  m.impl("grad_norm_partial_", &grad_norm_partial_cpu);
  m.impl("clip_coefficient_", &clip_coefficient_cpu);
}

}  // namespace lrsched_fused
