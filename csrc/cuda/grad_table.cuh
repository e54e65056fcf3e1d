#pragma once
// Device tables of grads alone, for kernels that read every grad of a call
// and write no tensor of it (grad_norm_partial_, NOTE: [grad norm]), and the
// float64 scratch such a kernel reduces into.
//
// NOTE: [grad table]
// The update ops' tables (NOTE: [device tensor table]) are keyed by the
// parameters and hold one dtype. A grad norm runs over the grads of every
// param group together, of mixed dtypes, and knows no parameter. So its table
// is its own, built with the same pieces (chunk plan, upload launches, graph
// holds):
//
//   GradEntry entries[n]    grad address, numel, the grad's first chunk, dtype code
//   int32 chunk_tensors[c]  the grad of each of the c chunks
//
// The key is the full content (device, per grad numel, dtype and address),
// so a hit is always correct. Grads that moved make a new table (one upload
// of 4 words per grad and one indexing launch); the previous one stays
// cached, so a loop whose grads alternate between a few addresses hits. At
// most kMaxCachedGradTables tables no graph holds are kept (least recently
// used freed first). Capture is handled as for the update tables: a table
// read by a captured launch is held by the graph; one first built during
// capture is written by the graph and uploaded again on first eager use.
//
// Scratch, the float64 sums the kernels reduce into, is not part of the
// table: a table is read-only and may be read on several streams at once,
// while scratch is written. Each stream gets one eager scratch buffer, grown
// when a call needs more and otherwise reused, so calls after the first
// allocate nothing; calls on one stream are ordered by it, and calls on two
// streams never share bytes. During capture each graph gets a scratch buffer
// of its own, allocated from the graph's memory pool and held by the graph
// (like a table) until the graph is destroyed, so a replay never races an
// eager call or another graph's replay over the same bytes. (A temporary
// freed at the end of the captured call would stay in the graph's pool too,
// but could be handed to a later allocation of another graph that shares the
// pool and is replayed concurrently; a held buffer is nobody else's.)
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "multi_tensor_launcher.cuh"

namespace lrsched_fused {
namespace cuda {

constexpr size_t kMaxCachedGradTables = 16;

// A grad's dtype as a table stores it.
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

struct GradEntry {
  const void* data;
  int64_t numel;
  int64_t first_chunk;
  int64_t dtype;  // a GradDtype
};
constexpr int kGradEntryWords = 4;
static_assert(sizeof(GradEntry) == kGradEntryWords * sizeof(int64_t), "GradEntry is uploaded as words");

struct GradTable {
  const GradEntry* entries;
  const int32_t* chunk_tensors;
  int64_t num_tensors;
  int64_t num_chunks;
};

class GradTableCache {
 public:
  static GradTableCache& instance() {
    static GradTableCache* cache = new GradTableCache();  // leaked: outlives static destruction
    return *cache;
  }

  // The table of `grads` (dense, on `device`) for a launch on `stream`.
  GradTable table(const std::vector<at::Tensor>& grads, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream) {
    std::vector<int64_t> key;
    key.reserve(1 + grads.size() * kKeyWordsPerGrad);
    key.push_back(device);
    for (const at::Tensor& grad : grads) {
      key.push_back(grad.numel());
      key.push_back(static_cast<int64_t>(grad_dtype(grad.scalar_type())));
      key.push_back(static_cast<int64_t>(reinterpret_cast<uintptr_t>(grad.const_data_ptr())));
    }
    const Capture capture = capture_of(stream.stream());

    std::lock_guard<std::mutex> lock(mutex_);
    auto found = tables_.find(key);
    if (found == tables_.end()) {
      evict_if_full();
      Table fresh = allocate_table(key, device, stream);
      found = tables_.emplace(std::move(key), std::move(fresh)).first;
    }
    Table& entry = found->second;
    entry.last_use = ++clock_;
    if (!entry.buffer.written) {
      write_table(found->first, entry.table, stream.stream());
      entry.buffer.written = !capture.active;
    }
    entry.buffer.use_on(stream, capture);
    return entry.table;
  }

  // `doubles` float64 of scratch for the launches of one call on `stream`
  // (NOTE: [grad table]). The content is undefined.
  double* scratch(int64_t doubles, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream) {
    const Capture capture = capture_of(stream.stream());
    const int64_t bytes = std::max<int64_t>(doubles, 1) * static_cast<int64_t>(sizeof(double));
    std::lock_guard<std::mutex> lock(mutex_);
    drop_released_scratch();
    if (capture.active) {
      // Several calls in one capture on one stream are ordered by the graph
      // and may share one buffer.
      for (CapturedScratch& held : captured_scratch_) {
        if (held.capture_id == capture.id && held.stream == stream && held.bytes >= bytes) {
          return reinterpret_cast<double*>(held.buffer.data());
        }
      }
      captured_scratch_.push_back(CapturedScratch{DeviceBuffer(bytes, device, stream), capture.id, stream, bytes});
      CapturedScratch& fresh = captured_scratch_.back();
      fresh.buffer.use_on(stream, capture);
      ++counters_["captured_scratch_allocations"];
      return reinterpret_cast<double*>(fresh.buffer.data());
    }
    const std::pair<c10::DeviceIndex, c10::StreamId> owner{device, stream.id()};
    auto found = eager_scratch_.find(owner);
    if (found == eager_scratch_.end() || found->second.bytes < bytes) {
      // Replacing a smaller buffer frees it while kernels on `stream` may
      // still use it: safe, the caching allocator hands memory freed on a
      // stream out again only to later work on that stream.
      int64_t rounded = 1024;
      while (rounded < bytes) {
        rounded *= 2;
      }
      eager_scratch_.erase(owner);
      found = eager_scratch_.emplace(owner, EagerScratch{DeviceBuffer(rounded, device, stream), rounded}).first;
      ++counters_["eager_scratch_allocations"];
    }
    return reinterpret_cast<double*>(found->second.buffer.data());
  }

  // Counts for tests (lrsched_fused._C._cuda_grad_table_cache_stats).
  std::map<std::string, int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    drop_released_scratch();
    std::map<std::string, int64_t> counts = counters_;
    counts["grad_tables"] = static_cast<int64_t>(tables_.size());
    counts["grad_tables_held_by_graphs"] = 0;
    for (const auto& item : tables_) {
      counts["grad_tables_held_by_graphs"] += item.second.buffer.held_by_graph() ? 1 : 0;
    }
    counts["captured_scratch_held"] = static_cast<int64_t>(captured_scratch_.size());
    counts["eager_scratch_buffers"] = static_cast<int64_t>(eager_scratch_.size());
    return counts;
  }

 private:
  struct Table {
    DeviceBuffer buffer;  // GradEntry[n], int32 chunk_tensors[c]
    GradTable table;
    uint64_t last_use = 0;
  };

  struct EagerScratch {
    DeviceBuffer buffer;
    int64_t bytes;
  };

  struct CapturedScratch {
    DeviceBuffer buffer;
    unsigned long long capture_id;
    c10::cuda::CUDAStream stream;
    int64_t bytes;
  };

  // The key decoded: after the device, per grad numel, dtype code and address.
  static constexpr size_t kKeyWordsPerGrad = 3;
  static const int64_t* key_entry(const std::vector<int64_t>& key, int64_t t) {
    return key.data() + 1 + t * kKeyWordsPerGrad;
  }
  static int64_t key_tensors(const std::vector<int64_t>& key) {
    return static_cast<int64_t>((key.size() - 1) / kKeyWordsPerGrad);
  }

  Table allocate_table(const std::vector<int64_t>& key, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream) {
    const int64_t n = key_tensors(key);
    std::vector<int64_t> numels(n);
    for (int64_t t = 0; t < n; ++t) {
      numels[t] = key_entry(key, t)[0];
    }
    const chunk_plan::Plan plan = chunk_plan::plan_chunks(numels);
    const int64_t chunks_at = n * static_cast<int64_t>(sizeof(GradEntry));
    Table fresh{DeviceBuffer(chunks_at + plan.num_chunks * static_cast<int64_t>(sizeof(int32_t)), device, stream),
                GradTable{}};
    uint8_t* base = fresh.buffer.data();
    fresh.table.entries = reinterpret_cast<const GradEntry*>(base);
    fresh.table.chunk_tensors = reinterpret_cast<const int32_t*>(base + chunks_at);
    fresh.table.num_tensors = n;
    fresh.table.num_chunks = plan.num_chunks;
    ++counters_["grad_tables_built"];
    return fresh;
  }

  // Uploads the entries, decoded from the key, then indexes the chunks on the device.
  void write_table(const std::vector<int64_t>& key, const GradTable& table, cudaStream_t stream) {
    const int64_t n = key_tensors(key);
    std::vector<int64_t> image;
    image.reserve(n * kGradEntryWords);
    int64_t first_chunk = 0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t* words = key_entry(key, t);
      image.insert(image.end(), {words[2], words[0], first_chunk, words[1]});  // GradEntry's field order
      first_chunk += chunk_plan::chunks_of(words[0]);
    }
    upload_words(reinterpret_cast<int64_t*>(const_cast<GradEntry*>(table.entries)), image, stream);
    if (table.num_chunks > 0) {
      const int64_t blocks = (table.num_chunks + kBlockThreads - 1) / kBlockThreads;
      index_chunks_kernel<<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(table);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    ++counters_["grad_table_writes"];
  }

  // Frees the scratch of graphs that were destroyed (their destructors ran on
  // a CUDA thread, where no tensor may be freed).
  void drop_released_scratch() {
    captured_scratch_.erase(std::remove_if(captured_scratch_.begin(), captured_scratch_.end(),
                                           [](const CapturedScratch& s) { return !s.buffer.held_by_graph(); }),
                            captured_scratch_.end());
  }

  void evict_if_full() {
    size_t unheld = 0;
    auto oldest = tables_.end();
    for (auto it = tables_.begin(); it != tables_.end(); ++it) {
      if (it->second.buffer.held_by_graph()) {
        continue;
      }
      ++unheld;
      if (oldest == tables_.end() || it->second.last_use < oldest->second.last_use) {
        oldest = it;
      }
    }
    if (unheld >= kMaxCachedGradTables) {
      tables_.erase(oldest);
      ++counters_["grad_table_evictions"];
    }
  }

  std::mutex mutex_;
  uint64_t clock_ = 0;
  std::map<std::string, int64_t> counters_{{"grad_tables_built", 0},
                                           {"grad_table_writes", 0},
                                           {"grad_table_evictions", 0},
                                           {"eager_scratch_allocations", 0},
                                           {"captured_scratch_allocations", 0}};
  std::map<std::vector<int64_t>, Table> tables_;  // few entries: an ordered map needs no hash
  std::map<std::pair<c10::DeviceIndex, c10::StreamId>, EagerScratch> eager_scratch_;
  std::vector<CapturedScratch> captured_scratch_;
};

}  // namespace cuda
}  // namespace lrsched_fused
