#pragma once
// The multi-tensor launcher of the CUDA path: it cuts a call's tensors into
// launches and every tensor into chunks, one block per chunk, and hands each
// launch its tensors in its kernel arguments. It knows nothing of the math.
//
// NOTE: [tensors in kernel arguments]
// A launch carries the metadata of its tensors in one kernel argument, a
// TensorBatch of up to kCapacity entries, one per tensor: its slot addresses
// (param, grad, states), the fp32 master weights' address (nullptr without,
// NOTE: [master weights]), its float64 step counter's address (nullptr
// without), its first element's global index (stochastic rounding's, NOTE:
// [stochastic rounding]; 0 without), its numel and its first chunk within the
// launch. The argument is __grid_constant__, read in place, never copied to
// local memory. CUDA >= 12.1 on Volta and later takes 32764 bytes of
// arguments, so a launch carries 580 tensors of plain SGD (56-byte entries),
// 507 of SGD with momentum (64), 451 of Adam (72), 406 of Adam with amsgrad
// (80) and 1015 grads of a grad norm (32); older toolkits' 4 KB carry 68, 59,
// 53, 47 and 119.
//
// The host cuts a call's tensors, in order, into launches of at most that
// many tensors (chunk_plan.h, checked against brute force by
// tests/test_chunk_plan.py). A tensor is never split, however large: a block
// finds its tensor by a binary search over the launch's first chunks, so
// every chunk of every tensor belongs to exactly one block of one launch. So
// a call of n tensors costs B = ceil(n / kCapacity) update launches (for
// Adam, and SGD with momentum or stochastic rounding, each followed by a
// launch that advances the step counters), and host work linear in n: an
// entry written per tensor and each launch's argument block (up to 32 KB)
// copied by the driver when it is enqueued. A model of 10,000 parameter
// tensors in one group steps Adam in 2 x 23 launches; torch's
// multi_tensor_apply takes 36 tensors per Adam launch, ~280 launches.
//
// Why arguments and not a device-side table cached across calls (the design
// before this one, which did one launch per call whatever n): arguments are
// copied when the launch is enqueued, so nothing must outlive a launch,
// nothing is allocated or uploaded, nothing syncs, each launch is
// stream-ordered like any other, and a CUDA graph bakes them into its kernel
// nodes (a replay reads the tensors at the addresses of the capture, as every
// captured kernel does). The cache needed keys, LRU eviction, graph user
// objects holding its buffers, uploads, and a second array for grads that
// moved; the arguments cost a launch per 406 to 580 tensors. For a first
// run on a GPU the simpler launcher is the safer one.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "chunk_plan.h"

#if defined(__CUDACC_VER_MAJOR__) && (__CUDACC_VER_MAJOR__ > 11 || __CUDACC_VER_MINOR__ >= 7)
#define LRSCHED_FUSED_GRID_CONSTANT __grid_constant__  // indexed in place, not copied to local memory
#else
#define LRSCHED_FUSED_GRID_CONSTANT
#endif

namespace lrsched_fused {
namespace cuda {

using chunk_plan::kBlockThreads;
using chunk_plan::kChunkElements;

// The bytes of a kernel's arguments (NOTE: [tensors in kernel arguments]),
// and what a kernel takes besides its TensorBatch.
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr size_t kArgumentBytes = 32764;
#else
constexpr size_t kArgumentBytes = 4096;
#endif
constexpr size_t kOtherArgumentBytes = 256;

// An update kernel's tensor: slots[s] is slot s (param, grad, then the op's
// states in the kernel's order).
template <int kDepth>
struct UpdateEntry {
  void* slots[kDepth];
  float* master;  // the fp32 master weights (NOTE: [master weights]); nullptr without
  double* step;   // the float64 step counter; nullptr without
  int64_t element_offset;  // the first element's global index (NOTE: [stochastic rounding]); 0 without
  int64_t numel;
  int64_t first_chunk;  // within the launch
};

// A grad norm kernel's grad (NOTE: [grad norm on CUDA]).
struct GradEntry {
  const void* data;
  int64_t dtype;  // a GradDtype (grad_norm_cuda.cu)
  int64_t numel;
  int64_t first_chunk;  // within the launch
};

// The tensors of one launch, passed by value (LRSCHED_FUSED_GRID_CONSTANT).
template <typename Entry>
struct TensorBatch {
  static constexpr int64_t kCapacity =
      static_cast<int64_t>((kArgumentBytes - kOtherArgumentBytes - sizeof(int64_t)) / sizeof(Entry));
  int64_t num_tensors;
  Entry entries[kCapacity];
};

// The arguments of a kernel that takes a TensorBatch and `Others` fit.
template <typename Entry, typename... Others>
constexpr bool fits_in_arguments() {
  return sizeof(TensorBatch<Entry>) + (((sizeof(Others) + 7) / 8 * 8) + ... + 0) <= kArgumentBytes;
}

// The launches of tensors of `numels` taking Entry (NOTE: [tensors in kernel arguments]).
template <typename Entry>
chunk_plan::LaunchPlan launches_of(const std::vector<int64_t>& numels) {
  return chunk_plan::plan_launches(numels, TensorBatch<Entry>::kCapacity);
}

// For each launch of `plan`: fills its batch, fill(entry, t) for each of its
// tensors t (numel and first chunk are set here), then calls
// launch(batch, launch).
template <typename Entry, typename Fill, typename Launch>
void for_each_launch(const chunk_plan::LaunchPlan& plan, const Fill& fill, const Launch& launch) {
  if (plan.launches.empty()) {
    return;
  }
  const auto batch = std::make_unique<TensorBatch<Entry>>();  // up to 32 KB: not on the stack
  for (const chunk_plan::Launch& piece : plan.launches) {
    batch->num_tensors = piece.num_tensors;
    for (int64_t i = 0; i < piece.num_tensors; ++i) {
      const int64_t t = piece.first_tensor + i;
      Entry& entry = batch->entries[i];
      fill(entry, t);
      entry.numel = plan.numels[t];
      entry.first_chunk = plan.first_chunks[t];
    }
    launch(*batch, piece);
  }
}

// The block's chunk of its launch: its tensor's index in the batch, and its
// part of that tensor.
template <typename Entry>
__device__ __forceinline__ chunk_plan::ChunkRef block_chunk(const TensorBatch<Entry>& batch) {
  const auto first_chunk = [&](int64_t t) { return batch.entries[t].first_chunk; };
  const int64_t t = chunk_plan::owner_of_chunk(first_chunk, batch.num_tensors, blockIdx.x);
  return chunk_plan::chunk_ref(t, batch.entries[t].numel, batch.entries[t].first_chunk, blockIdx.x);
}

}  // namespace cuda
}  // namespace lrsched_fused
