// CUDA kernel of grad_norm_partial_ (NOTE: [grad norm] in
// csrc/grad_norm_math.h, whose math it uses; csrc/cpu/grad_norm_cpu.cpp is the
// reference) and its registration.
//
// NOTE: [grad norm on CUDA]
// Three launches per call, whatever the number and dtypes of the grads (plus
// the table's uploads when the grads are new, NOTE: [grad table]):
//
//   1. one block per chunk of the grads table (the launcher's chunk plan):
//      each thread sums the norm terms of its elements in float64, the block
//      combines its threads in a fixed tree and writes the chunk's sum to its
//      own scratch slot;
//   2. one warp per grad: combines the grad's chunk sums (lanes in a fixed
//      stride, then a fixed shuffle tree), takes the p-th root, rounds the
//      norm to the grad's dtype (read from the table) and writes its p-th
//      power to the grad's scratch slot;
//   3. one block: combines the grads' terms (threads in a fixed stride, then
//      a fixed tree) and writes `partial`.
//
// Deterministic: which thread reads which element, and the order every sum
// is formed in, depend on the grads' sizes alone (not on alignment: a
// misaligned grad is read element by element in the same order in which an
// aligned one is read by 16-byte vectors), and there are no atomics. The
// result equals the CPU kernel's up to the order of the float64 sums (and
// the compiler's fused multiply-adds in them).
//
// No host sync: grad_scale is read in the kernels, every launch goes to the
// current stream, so a call can be captured in a CUDA graph; the scratch it
// writes is the stream's own, or during capture the graph's own (NOTE: [grad
// table]).
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "../grad_norm_math.h"
#include "../op_checks.h"
#include "device_scalar.cuh"
#include "grad_table.cuh"
#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = kBlockThreads / C10_WARP_SIZE;

// 16 bytes of consecutive elements: what one thread loads at once.
template <typename scalar_t>
struct alignas(16) GradVector {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t values[kSize];
};

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
  using Vector = GradVector<scalar_t>;
  constexpr int kSize = Vector::kSize;
  constexpr int kILP = 4;
  const NormOrder order{kKind, p};
  const opmath_t unscale_by = static_cast<opmath_t>(scale);
  const bool aligned = reinterpret_cast<uintptr_t>(grad) % sizeof(Vector) == 0;
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
// terms of the block's chunk.
template <NormKind kKind, bool kUnscale>
__global__ void __launch_bounds__(kBlockThreads) grad_norm_chunk_kernel(GradTable table, double p,
                                                                        DeviceScalar grad_scale,
                                                                        double* chunk_sums) {
  __shared__ GradChunk chunk;
  if (threadIdx.x == 0) {
    const int64_t t = table.chunk_tensors[blockIdx.x];
    const GradEntry& entry = table.entries[t];
    const chunk_plan::ChunkRef ref = chunk_plan::chunk_ref(t, entry.numel, entry.first_chunk, blockIdx.x);
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

// Launch 2: grad_terms[t] = norm_term(rounded norm of grad t), one warp per grad.
__global__ void __launch_bounds__(kBlockThreads) grad_norm_tensor_kernel(GradTable table, NormOrder order,
                                                                         const double* chunk_sums,
                                                                         double* grad_terms) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / C10_WARP_SIZE;
  if (t >= table.num_tensors) {
    return;  // the whole warp: t is the same in every lane
  }
  const int lane = static_cast<int>(threadIdx.x % C10_WARP_SIZE);
  const GradEntry entry = table.entries[t];
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
void launch_chunk_kernel(const GradTable& table, NormOrder order, DeviceScalar grad_scale, double* chunk_sums,
                         cudaStream_t stream) {
  const auto launch = [&](auto kind) {
    grad_norm_chunk_kernel<decltype(kind)::value, kUnscale>
        <<<static_cast<unsigned int>(table.num_chunks), kBlockThreads, 0, stream>>>(table, order.p, grad_scale,
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
  const c10::DeviceIndex device = partial.device().index();
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device);
  double* result = partial.mutable_data_ptr<double>();
  if (grads_in.empty()) {
    grad_norm_total_kernel<<<1, kBlockThreads, 0, stream.stream()>>>(nullptr, 0, order, result);
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
  GradTableCache& cache = GradTableCache::instance();
  const GradTable table = cache.table(grads, device, stream);
  double* chunk_sums = cache.scratch(table.num_chunks + table.num_tensors, device, stream);
  double* grad_terms = chunk_sums + table.num_chunks;

  if (table.num_chunks > 0) {
    if (grad_scale.has_value()) {
      launch_chunk_kernel<true>(table, order, scale, chunk_sums, stream.stream());
    } else {
      launch_chunk_kernel<false>(table, order, scale, chunk_sums, stream.stream());
    }
  }
  const int64_t tensor_blocks = (table.num_tensors + kWarpsPerBlock - 1) / kWarpsPerBlock;
  grad_norm_tensor_kernel<<<static_cast<unsigned int>(tensor_blocks), kBlockThreads, 0, stream.stream()>>>(
      table, order, chunk_sums, grad_terms);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  grad_norm_total_kernel<<<1, kBlockThreads, 0, stream.stream()>>>(grad_terms, table.num_tensors, order, result);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::map<std::string, int64_t> grad_table_cache_stats() {
  return GradTableCache::instance().stats();
}

}  // namespace cuda

TORCH_LIBRARY_IMPL(lrsched_fused, CUDA, m) {
  m.impl("grad_norm_partial_", &cuda::grad_norm_partial_cuda);
}

}  // namespace lrsched_fused
