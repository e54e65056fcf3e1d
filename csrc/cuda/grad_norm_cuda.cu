// CUDA kernel of grad_norm_partial_ (NOTE: [grad norm] in
// csrc/grad_norm_math.h, whose math it uses; csrc/cpu/grad_norm_cpu.cpp is the
// reference) and its registration.
//
// NOTE: [grad norm on CUDA]
// The grads are cut into launches like an update's tensors (NOTE: [tensors
// in kernel arguments]; up to 1015 grads per launch, of any dtypes). Per
// launch of grads, two kernels, then one for the call: 2B + 1 launches for B
// launches of grads, 3 for up to 1015 grads.
//
//   1. one block per chunk of the launch's grads: each thread sums the norm
//      terms of its elements in float64, the block combines its threads in a
//      fixed tree and writes the chunk's sum to its own scratch slot;
//   2. one warp per grad of the launch: combines the grad's chunk sums
//      (lanes in a fixed stride, then a fixed shuffle tree), takes the p-th
//      root, rounds the norm to the grad's dtype and writes its p-th power to
//      the grad's scratch slot;
//   3. one block: combines the terms of all grads (threads in a fixed stride,
//      then a fixed tree) and writes `partial`.
//
// Deterministic: which thread reads which element, and the order every sum
// is formed in, depend on the grads' sizes alone (not on alignment: a
// misaligned grad is read element by element in the same order in which an
// aligned one is read by 16-byte vectors; not on the cut into launches: a
// chunk and a grad's chunks are the same in any launch), and there are no
// atomics. The result equals the CPU kernel's up to the order of the float64
// sums (and the compiler's fused multiply-adds in them).
//
// No host sync: grad_scale is read in the kernels, every launch goes to the
// current stream, so a call can be captured in a CUDA graph. The scratch
// (a float64 per chunk and per grad) is a temporary of torch's caching
// allocator on the current stream, freed when the call returns: the
// allocator hands it out again only to work ordered after these kernels on
// that stream, and during capture it comes from the graph's private pool, as
// any temporary of a captured torch op does.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "../grad_norm_math.h"
#include "../op_checks.h"
#include "aligned_vector.cuh"
#include "device_scalar.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

// A grad's dtype as a GradEntry stores it.
enum class GradDtype : int64_t { Double = 0, Float = 1, Half = 2, BFloat16 = 3 };

inline GradDtype grad_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble:
      return GradDtype::Double;
    case at::kFloat:
      return GradDtype::Float;
    case at::kHalf:
      return GradDtype::Half;
    case at::kBFloat16:
      return GradDtype::BFloat16;
    default:
      TORCH_CHECK(false, "lrsched_fused: a grad of dtype ", dtype, "; accepted: float64, float32, float16, bfloat16");
  }
}

// Calls f(scalar_t{}) with the C++ type of a GradDtype code.
template <typename F>
__device__ __forceinline__ void with_grad_dtype(int64_t dtype, const F& f) {
  switch (static_cast<GradDtype>(dtype)) {
    case GradDtype::Double:
      f(double{});
      break;
    case GradDtype::Float:
      f(float{});
      break;
    case GradDtype::Half:
      f(c10::Half{});
      break;
    default:
      f(c10::BFloat16{});
  }
}

using GradBatch = TensorBatch<GradEntry>;

constexpr int kWarpsPerBlock = kBlockThreads / C10_WARP_SIZE;

// The value whose norm term is taken: the element itself, or with kUnscale
// the element unscaled in opmath_t and rounded to scalar_t, as the update
// kernels store an unscaled grad (and as the CPU kernel computes it).
template <typename scalar_t, bool kUnscale>
__device__ __forceinline__ double element_value(scalar_t g, at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  if constexpr (kUnscale) {
    return static_cast<double>(static_cast<opmath_t>(static_cast<scalar_t>(static_cast<opmath_t>(g) / scale)));
  } else {
    return static_cast<double>(g);
  }
}

// This thread's sum of the norm terms of its elements among `count` at
// `grad`. Thread k takes the 16-byte groups k, k + kBlockThreads, ... and
// their elements in order. An aligned grad loads each full group as one
// vector (a chunk starts kChunkElements elements in, so its alignment is the
// grad's), a misaligned one and the last, partial group go element by
// element: the same values in the same order either way. kILP groups are
// loaded before any is summed, to keep more loads in flight.
template <typename scalar_t, NormKind kKind, bool kUnscale>
__device__ __forceinline__ double thread_norm_sum(const scalar_t* __restrict__ grad, int count, double p,
                                                  double scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vector = AlignedVector<scalar_t>;  // 16 bytes
  constexpr int kSize = Vector::kSize;
  constexpr int kILP = 4;
  const NormOrder order{kKind, p};
  const opmath_t unscale_by = static_cast<opmath_t>(scale);
  const bool aligned = is_vector_aligned<Vector>(grad);
  const int groups = (count + kSize - 1) / kSize;
  double sum = 0.0;
  for (int start = threadIdx.x; start < groups; start += kBlockThreads * kILP) {
    Vector loaded[kILP];
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int first = (start + k * kBlockThreads) * kSize;
      const int valid = count - first;
      if (aligned && valid >= kSize) {
        loaded[k] = reinterpret_cast<const Vector*>(grad)[first / kSize];
      } else {
#pragma unroll
        for (int e = 0; e < kSize; ++e) {
          loaded[k].values[e] = e < valid ? grad[first + e] : scalar_t(0);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kILP; ++k) {
      const int valid = count - (start + k * kBlockThreads) * kSize;
#pragma unroll
      for (int e = 0; e < kSize; ++e) {
        if (e < valid) {
          sum = norm_combine(order, sum, norm_term(order, element_value<scalar_t, kUnscale>(loaded[k].values[e],
                                                                                            unscale_by)));
        }
      }
    }
  }
  return sum;
}

// The combination of every thread's `value`, in a fixed tree; the result is
// returned to every thread.
__device__ double block_combine(NormOrder order, double value) {
  __shared__ double values[kBlockThreads];
  values[threadIdx.x] = value;
  __syncthreads();
  for (int width = kBlockThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) {
      values[threadIdx.x] = norm_combine(order, values[threadIdx.x], values[threadIdx.x + width]);
    }
    __syncthreads();
  }
  return values[0];
}

// The part of a grad one block reads, found by thread 0.
struct GradChunk {
  const void* data;  // the chunk's first element
  int count;
  int64_t dtype;
  double scale;
};

// Launch 1 (NOTE: [grad norm on CUDA]): chunk_sums[chunk] = the combined norm
// terms of the block's chunk of the launch.
template <NormKind kKind, bool kUnscale>
__global__ void __launch_bounds__(kBlockThreads)
    grad_norm_chunk_kernel(const LRSCHED_FUSED_GRID_CONSTANT GradBatch batch, double p, DeviceScalar grad_scale,
                           double* chunk_sums) {
  __shared__ GradChunk chunk;
  if (threadIdx.x == 0) {
    const chunk_plan::ChunkRef ref = block_chunk(batch);
    const GradEntry& entry = batch.entries[ref.tensor];
    with_grad_dtype(entry.dtype, [&](auto zero) {
      using scalar_t = decltype(zero);
      chunk.data = static_cast<const scalar_t*>(entry.data) + ref.begin;
    });
    chunk.count = ref.count;
    chunk.dtype = entry.dtype;
    chunk.scale = kUnscale ? load_scalar(grad_scale) : 1.0;
  }
  __syncthreads();
  double sum = 0.0;
  with_grad_dtype(chunk.dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    sum = thread_norm_sum<scalar_t, kKind, kUnscale>(static_cast<const scalar_t*>(chunk.data), chunk.count, p,
                                                     chunk.scale);
  });
  sum = block_combine(NormOrder{kKind, p}, sum);
  if (threadIdx.x == 0) {
    chunk_sums[blockIdx.x] = sum;
  }
}

// Launch 2: grad_terms[t] = norm_term(rounded norm of grad t of the launch),
// one warp per grad; chunk_sums are the launch's.
__global__ void __launch_bounds__(kBlockThreads)
    grad_norm_tensor_kernel(const LRSCHED_FUSED_GRID_CONSTANT GradBatch batch, NormOrder order,
                            const double* chunk_sums, double* grad_terms) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / C10_WARP_SIZE;
  if (t >= batch.num_tensors) {
    return;  // the whole warp: t is the same in every lane
  }
  const int lane = static_cast<int>(threadIdx.x % C10_WARP_SIZE);
  const GradEntry& entry = batch.entries[t];
  const int64_t chunks = chunk_plan::chunks_of(entry.numel);
  double sum = 0.0;
  for (int64_t c = lane; c < chunks; c += C10_WARP_SIZE) {
    sum = norm_combine(order, sum, chunk_sums[entry.first_chunk + c]);
  }
  for (int offset = C10_WARP_SIZE / 2; offset > 0; offset /= 2) {
    sum = norm_combine(order, sum, __shfl_down_sync(0xffffffffu, sum, offset));
  }
  if (lane == 0) {
    // The grad's norm in its dtype, as torch._foreach_norm returns it.
    double norm = norm_root(order, sum);
    with_grad_dtype(entry.dtype, [&](auto zero) {
      using scalar_t = decltype(zero);
      norm = static_cast<double>(static_cast<scalar_t>(norm));
    });
    grad_terms[t] = norm_term(order, norm);
  }
}

// Launch 3: *partial = the combined terms of all grads (0 without grads).
__global__ void __launch_bounds__(kBlockThreads) grad_norm_total_kernel(const double* grad_terms,
                                                                        int64_t num_grads, NormOrder order,
                                                                        double* partial) {
  double sum = 0.0;
  for (int64_t t = threadIdx.x; t < num_grads; t += kBlockThreads) {
    sum = norm_combine(order, sum, grad_terms[t]);
  }
  sum = block_combine(order, sum);
  if (threadIdx.x == 0) {
    *partial = sum;
  }
}

// Launch 1 for the norm order's kind.
template <bool kUnscale>
void launch_chunk_kernel(const GradBatch& batch, int64_t num_chunks, NormOrder order, DeviceScalar grad_scale,
                         double* chunk_sums, cudaStream_t stream) {
  const auto launch = [&](auto kind) {
    grad_norm_chunk_kernel<decltype(kind)::value, kUnscale>
        <<<static_cast<unsigned int>(num_chunks), kBlockThreads, 0, stream>>>(batch, order.p, grad_scale,
                                                                             chunk_sums);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  switch (order.kind) {
    case NormKind::One:
      launch(std::integral_constant<NormKind, NormKind::One>{});
      break;
    case NormKind::Two:
      launch(std::integral_constant<NormKind, NormKind::Two>{});
      break;
    case NormKind::Inf:
      launch(std::integral_constant<NormKind, NormKind::Inf>{});
      break;
    default:
      launch(std::integral_constant<NormKind, NormKind::Other>{});
  }
}

void grad_norm_partial_cuda(at::TensorList grads_in, double norm_type, const std::optional<at::Tensor>& grad_scale,
                            const at::Tensor& partial) {
  check_grad_norm_args(grads_in, norm_type, partial);
  const DeviceScalar scale = device_scalar(grad_scale, partial, "partial", "grad_scale");  // check_scalar_tensor too
  const NormOrder order = norm_order(norm_type);
  const c10::cuda::CUDAGuard guard(partial.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(partial.device().index()).stream();
  double* result = partial.mutable_data_ptr<double>();
  if (grads_in.empty()) {
    grad_norm_total_kernel<<<1, kBlockThreads, 0, stream>>>(nullptr, 0, order, result);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  // The kernels walk storage: the norm does not depend on the order of the
  // elements, so any dense layout will do; anything else is copied.
  std::vector<at::Tensor> grads(grads_in.begin(), grads_in.end());
  for (at::Tensor& g : grads) {
    if (!g.is_non_overlapping_and_dense()) {
      g = g.contiguous();
    }
  }
  std::vector<int64_t> numels;
  numels.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    numels.push_back(g.numel());
  }
  static_assert(fits_in_arguments<GradEntry, double, DeviceScalar, double*>(), "a grad norm launch's arguments fit");
  const chunk_plan::LaunchPlan plan = launches_of<GradEntry>(numels);
  const int64_t num_grads = static_cast<int64_t>(grads.size());
  const at::Tensor scratch = at::empty({plan.num_chunks + num_grads}, partial.options());
  double* chunk_sums = scratch.mutable_data_ptr<double>();
  double* grad_terms = chunk_sums + plan.num_chunks;
  const auto fill = [&](GradEntry& entry, int64_t t) {
    entry.data = grads[t].const_data_ptr();
    entry.dtype = static_cast<int64_t>(grad_dtype(grads[t].scalar_type()));
  };
  for_each_launch<GradEntry>(plan, fill, [&](const GradBatch& batch, const chunk_plan::Launch& launch) {
    double* launch_sums = chunk_sums + launch.first_chunk;
    if (launch.num_chunks > 0) {
      if (grad_scale.has_value()) {
        launch_chunk_kernel<true>(batch, launch.num_chunks, order, scale, launch_sums, stream);
      } else {
        launch_chunk_kernel<false>(batch, launch.num_chunks, order, scale, launch_sums, stream);
      }
    }
    const int64_t blocks = (launch.num_tensors + kWarpsPerBlock - 1) / kWarpsPerBlock;
    grad_norm_tensor_kernel<<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(
        batch, order, launch_sums, grad_terms + launch.first_tensor);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  grad_norm_total_kernel<<<1, kBlockThreads, 0, stream>>>(grad_terms, num_grads, order, result);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  m.impl("grad_norm_partial_", &cuda::grad_norm_partial_cuda);
}

}  // namespace lrsched_fused
