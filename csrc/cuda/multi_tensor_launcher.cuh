#pragma once
// The multi-tensor launcher of the CUDA path: it cuts every tensor of a call
// into chunks, keeps a table that tells each block which chunk of which tensor
// it owns, and launches one block per chunk. It knows nothing of the math.
//
// NOTE: [device tensor table]
// torch's multi_tensor_apply passes the tensor addresses as kernel arguments,
// so one launch covers at most ~110 tensors (less for deeper lists) and a
// model with thousands of parameters needs dozens of launches per step. Here
// the per-tensor metadata lives in device memory instead, in two buffers:
//
//   layout (keyed by the parameters, their states and step counters):
//     TensorEntry entries[n]      param and state addresses, step counter,
//                                 numel, the tensor's first chunk
//     double tensor_terms[2n]     what a step's per-tensor kernel computes for
//                                 its block kernel (Adam's bias-corrected step
//                                 size and sqrt(bias_correction2), SGD's
//                                 "momentum buffer is new")
//     int32 chunk_tensors[c]      the tensor of each of the c chunks
//   grad array (keyed by the layout and the grads' addresses):
//     void* grads[n]
//
// A kernel is launched with one block per chunk of all tensors together; a
// block finds its tensor with one load of chunk_tensors (the arithmetic is in
// chunk_plan.h). So a call costs one launch whatever the number of tensors,
// plus one per-tensor launch for kernels with step counters.
//
// Parameters and states do not move during training, so a layout is built
// once and cached. Grads may move every step: an eager loop with
// zero_grad(set_to_none=True) gets new grad tensors from backward, often but
// not always at the old addresses. So the grads are a separate, small array:
// a step whose grads moved reuses the layout and uploads only the n grad
// addresses, in one launch for n <= kUploadWordsLarge. Keys are the full
// content (device, per tensor numel and addresses), so a hit is always
// correct, even when a freed tensor's address is reused. A step whose keys hit
// costs host work proportional to n and no device work beyond the update.
//
// Uploads are kernels that carry up to kUploadWordsLarge words in their
// arguments (32 KB with CUDA >= 12.1 on Volta and later, else 4 KB), not
// host-to-device copies: arguments are copied when the launch is enqueued, so
// no pinned staging buffer must outlive an asynchronous copy, nothing syncs,
// the write is stream-ordered before the first kernel that reads it, and it is
// legal during CUDA graph capture (the words are baked into the graph node).
// A grad array is never rewritten: when the grads move, the eager array is
// replaced by a new one, so a kernel still reading the old one (on this
// stream, or on another stream it was recorded on) is never raced.
//
// Capture and the cache:
//  - a buffer read by a launch that is being captured is held by that graph:
//    a CUDA user object attached to the graph (cudaGraphRetainUserObject)
//    counts the graphs holding it, and the graph executables keep that count
//    up until they are destroyed and their launches have finished. A held
//    buffer is never evicted or freed; once no graph holds it, it is an
//    ordinary cache entry again. So repeated captures of the same tensors
//    reuse the same buffers (the keys hit), and the buffers of graphs the user
//    dropped are freed, not kept forever.
//  - a buffer first needed during capture (e.g. grads set to None before
//    capture, so backward allocates them in the graph's pool) is allocated
//    there and its uploads are recorded into the graph, which rewrites the
//    same bytes on every replay. Its content exists only once a replay has
//    run, so the first eager use (or a later capture) uploads it again.
//    Warming up with the same tensors avoids all of this: a step captured on
//    a cache hit records exactly the update kernels.
// At most kMaxCachedLayouts layouts no graph holds are kept (least recently
// used is freed first), each with at most one grad array no graph holds. A
// buffer read on a stream other than the one it was allocated on is recorded
// on that stream, so the caching allocator does not hand its memory out while
// a kernel may still read it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
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

constexpr int kMaxSlots = 5;  // Adam with amsgrad: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
constexpr int kGradSlot = 1;  // read from TensorTable::grads, not from the entry
constexpr int kTermsPerTensor = 2;
constexpr size_t kMaxCachedLayouts = 64;
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr int kUploadWords = chunk_plan::kUploadWordsLarge;
#else
constexpr int kUploadWords = chunk_plan::kUploadWordsSmall;
#endif

struct TensorEntry {
  // Slot kGradSlot holds the fp32 master weights' address (NOTE: [master
  // weights]), nullptr without them: the grads are in TensorTable::grads.
  void* slots[kMaxSlots];
  double* step;            // the float64 step counter; nullptr without one
  int64_t numel;
  int64_t first_chunk;
};
static_assert(sizeof(TensorEntry) == chunk_plan::kEntryWords * sizeof(int64_t), "TensorEntry is one 64-byte line");

struct TensorTable {
  const TensorEntry* entries;
  void* const* grads;
  const int32_t* chunk_tensors;
  double* tensor_terms;  // kTermsPerTensor per tensor
  int64_t num_tensors;
  int64_t num_chunks;
};

template <int kCapacity>
struct WordBatch {
  int64_t words[kCapacity];
};
static_assert(sizeof(WordBatch<chunk_plan::kUploadWordsSmall>) + 16 <= 4096, "a small upload fits in 4 KB");
static_assert(sizeof(WordBatch<chunk_plan::kUploadWordsLarge>) + 16 <= 32764, "a large upload fits in 32 KB");

template <int kCapacity>
__global__ void upload_words_kernel(int64_t* destination, int count,
                                    const LRSCHED_FUSED_GRID_CONSTANT WordBatch<kCapacity> batch) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    destination[i] = batch.words[i];
  }
}

// chunk_tensors of a table (TensorTable, or GradTable of grad_table.cuh) from
// its entries' first chunks.
template <typename Table>
__global__ void index_chunks_kernel(Table table) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (chunk < table.num_chunks) {
    const auto first_chunk = [&](int64_t t) { return table.entries[t].first_chunk; };
    const_cast<int32_t*>(table.chunk_tensors)[chunk] =
        static_cast<int32_t>(chunk_plan::owner_of_chunk(first_chunk, table.num_tensors, chunk));
  }
}

// `words` written at `destination` in stream order, by as few launches as
// the argument limit allows (NOTE: [device tensor table]).
inline void upload_words(int64_t* destination, const std::vector<int64_t>& words, cudaStream_t stream) {
  for (const chunk_plan::UploadBatch& piece : chunk_plan::upload_batches(static_cast<int64_t>(words.size()),
                                                                          kUploadWords)) {
    const int64_t* source = words.data() + piece.offset;
    if (piece.count <= chunk_plan::kUploadWordsSmall) {  // a 4 KB launch: cheaper to enqueue
      WordBatch<chunk_plan::kUploadWordsSmall> batch;
      std::memcpy(batch.words, source, piece.count * sizeof(int64_t));
      upload_words_kernel<<<1, kBlockThreads, 0, stream>>>(destination + piece.offset, piece.count, batch);
    } else {
      auto batch = std::make_unique<WordBatch<kUploadWords>>();
      std::memcpy(batch->words, source, piece.count * sizeof(int64_t));
      upload_words_kernel<<<1, kBlockThreads, 0, stream>>>(destination + piece.offset, piece.count, *batch);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// One block per chunk of the table, on `stream`.
template <typename Kernel, typename... Args>
void launch_per_chunk(Kernel kernel, const TensorTable& table, cudaStream_t stream, const Args&... args) {
  if (table.num_chunks == 0) {
    return;
  }
  kernel<<<static_cast<unsigned int>(table.num_chunks), kBlockThreads, 0, stream>>>(table, args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// One thread per tensor of the table, on `stream`.
template <typename Kernel, typename... Args>
void launch_per_tensor(Kernel kernel, const TensorTable& table, cudaStream_t stream, const Args&... args) {
  if (table.num_tensors == 0) {
    return;
  }
  const int64_t blocks = (table.num_tensors + kBlockThreads - 1) / kBlockThreads;
  kernel<<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(table, args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// What a table is built from: the slot lists in use (all as long as slots[0];
// slots[kGradSlot] are the grads), optionally the step counters and the
// master weights (stored in the entries' slot kGradSlot).
struct TableSpec {
  std::vector<at::TensorList> slots;
  at::TensorList steps;    // empty: no step counters
  at::TensorList masters;  // empty: no master weights
};

// The capture state of a stream, as cudaStreamGetCaptureInfo reports it.
struct Capture {
  bool active = false;
  unsigned long long id = 0;
  cudaGraph_t graph = nullptr;
};

inline Capture capture_of(cudaStream_t stream) {
  Capture capture;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
#if defined(CUDART_VERSION) && CUDART_VERSION >= 13000
  C10_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &status, &capture.id, &capture.graph, nullptr, nullptr, nullptr));
#else
  C10_CUDA_CHECK(cudaStreamGetCaptureInfo_v2(stream, &status, &capture.id, &capture.graph, nullptr, nullptr));
#endif
  capture.active = status == cudaStreamCaptureStatusActive;
  return capture;
}

// The graphs that hold a buffer (NOTE: [device tensor table]). `graphs` is
// also written by the user objects' destructors, on a CUDA-internal thread.
struct GraphHolds {
  std::atomic<int> graphs{0};
  unsigned long long last_capture = std::numeric_limits<unsigned long long>::max();  // under the cache mutex
};

inline std::atomic<uint64_t>& graph_releases() {
  static std::atomic<uint64_t> count{0};
  return count;
}

// A user object's destructor: runs once the graph and every executable made
// from it are destroyed and their launches finished. No CUDA call allowed.
inline void CUDART_CB release_graph_hold(void* data) {
  auto* holds = static_cast<std::shared_ptr<GraphHolds>*>(data);
  (*holds)->graphs.fetch_sub(1);
  delete holds;
  graph_releases().fetch_add(1);
}

// One device allocation of a table: a layout or a grad array.
struct DeviceBuffer {
  at::Tensor storage;  // uint8
  c10::cuda::CUDAStream allocation_stream;
  std::vector<c10::StreamId> recorded_streams;  // other streams that read it
  std::shared_ptr<GraphHolds> holds = std::make_shared<GraphHolds>();
  bool written = false;  // the content exists outside any graph

  DeviceBuffer(int64_t bytes, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream)
      : storage(at::empty({std::max<int64_t>(bytes, 1)},
                          at::TensorOptions().dtype(at::kByte).device(at::Device(at::kCUDA, device)))),
        allocation_stream(stream) {}

  uint8_t* data() const { return static_cast<uint8_t*>(storage.mutable_data_ptr()); }
  bool held_by_graph() const { return holds->graphs.load() > 0; }

  // Keeps the buffer alive for a capturing graph, or for a kernel on `stream`.
  void use_on(const c10::cuda::CUDAStream& stream, const Capture& capture) {
    if (capture.active) {
      hold_for(capture);
    } else if (stream != allocation_stream &&
               std::find(recorded_streams.begin(), recorded_streams.end(), stream.id()) == recorded_streams.end()) {
      storage.record_stream(stream.unwrap());  // once per stream is enough
      recorded_streams.push_back(stream.id());
    }
  }

 private:
  void hold_for(const Capture& capture) {
    if (holds->last_capture == capture.id) {
      return;  // one hold per graph
    }
    holds->last_capture = capture.id;
    auto* data = new std::shared_ptr<GraphHolds>(holds);
    holds->graphs.fetch_add(1);
    cudaUserObject_t object = nullptr;
    const cudaError_t created =
        cudaUserObjectCreate(&object, data, release_graph_hold, 1, cudaUserObjectNoDestructorSync);
    if (created != cudaSuccess) {
      holds->graphs.fetch_sub(1);
      delete data;
      C10_CUDA_CHECK(created);
    }
    const cudaError_t retained = cudaGraphRetainUserObject(capture.graph, object, 1, cudaGraphUserObjectMove);
    if (retained != cudaSuccess) {
      C10_CUDA_CHECK_WARN(cudaUserObjectRelease(object, 1));  // runs release_graph_hold
      C10_CUDA_CHECK(retained);
    }
  }
};

class TensorTableCache {
 public:
  static TensorTableCache& instance() {
    static TensorTableCache* cache = new TensorTableCache();  // leaked: outlives static destruction
    return *cache;
  }

  // The table of `spec` on `device` for a launch on `stream` (see NOTE:
  // [device tensor table]).
  TensorTable get(const TableSpec& spec, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream) {
    TORCH_INTERNAL_ASSERT(spec.slots.size() > kGradSlot && spec.slots.size() <= static_cast<size_t>(kMaxSlots));
    const size_t n = spec.slots[0].size();
    std::vector<int64_t> key;
    key.reserve(2 + n * kLayoutWordsPerTensor);
    key.push_back(device);
    key.push_back(static_cast<int64_t>(spec.slots.size()));
    for (size_t t = 0; t < n; ++t) {
      key.push_back(spec.slots[0][t].numel());
      for (size_t s = 0; s < spec.slots.size(); ++s) {
        if (s != kGradSlot) {
          key.push_back(address_of(spec.slots[s][t].const_data_ptr()));
        } else {
          key.push_back(spec.masters.empty() ? 0 : address_of(spec.masters[t].const_data_ptr()));
        }
      }
      key.push_back(spec.steps.empty() ? 0 : address_of(spec.steps[t].const_data_ptr()));
    }
    std::vector<int64_t> grads;
    grads.reserve(n);
    for (const at::Tensor& grad : spec.slots[kGradSlot]) {
      grads.push_back(address_of(grad.const_data_ptr()));
    }
    const Capture capture = capture_of(stream.stream());

    std::lock_guard<std::mutex> lock(mutex_);
    drop_released();
    auto found = layouts_.find(key);
    if (found == layouts_.end()) {
      evict_if_full();
      Layout fresh = allocate_layout(key, device, stream);
      found = layouts_.emplace(std::move(key), std::move(fresh)).first;
    }
    Layout& layout = found->second;
    layout.last_use = ++clock_;
    if (!layout.buffer.written) {
      write_layout(found->first, layout, stream.stream());
      layout.buffer.written = !capture.active;
    }
    layout.buffer.use_on(stream, capture);
    GradArray& array = grad_array(layout, std::move(grads), device, stream, capture);
    TensorTable table = layout.table;
    table.grads = reinterpret_cast<void* const*>(array.buffer.data());
    return table;
  }

  // Counts for tests (lrsched_fused._C._cuda_table_cache_stats).
  std::map<std::string, int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    drop_released();
    std::map<std::string, int64_t> counts = counters_;
    counts["layouts"] = static_cast<int64_t>(layouts_.size());
    counts["layouts_held_by_graphs"] = 0;
    counts["grad_arrays"] = 0;
    counts["grad_arrays_held_by_graphs"] = 0;
    for (const auto& item : layouts_) {
      counts["layouts_held_by_graphs"] += item.second.buffer.held_by_graph() ? 1 : 0;
      for (const GradArray& array : item.second.grad_arrays) {
        counts["grad_arrays"] += 1;
        counts["grad_arrays_held_by_graphs"] += array.buffer.held_by_graph() ? 1 : 0;
      }
    }
    return counts;
  }

 private:
  // numel, the slot addresses (the master's in the grad's place), the step address
  static constexpr size_t kLayoutWordsPerTensor = 1 + kMaxSlots + 1;

  struct GradArray {
    std::vector<int64_t> addresses;
    DeviceBuffer buffer;
    uint64_t last_use = 0;
  };

  struct Layout {
    DeviceBuffer buffer;  // TensorEntry[n], double tensor_terms[kTermsPerTensor * n], int32 chunk_tensors[c]
    TensorTable table;    // without grads
    std::vector<GradArray> grad_arrays;
    uint64_t last_use = 0;

    bool held_by_graph() const {
      return buffer.held_by_graph() || std::any_of(grad_arrays.begin(), grad_arrays.end(),
                                                   [](const GradArray& a) { return a.buffer.held_by_graph(); });
    }
  };

  static int64_t address_of(const void* p) {
    return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p));
  }

  // The layout key decoded: per tensor numel, slot addresses (the master's,
  // or 0, in the grad slot's place) and the step address; key[1] is the
  // number of slots.
  struct LayoutKeyView {
    const std::vector<int64_t>& key;
    int64_t num_tensors() const { return static_cast<int64_t>((key.size() - 2) / words_per_tensor()); }
    int64_t num_slots() const { return key[1]; }
    size_t words_per_tensor() const { return static_cast<size_t>(num_slots() + 2); }
    const int64_t* tensor(int64_t t) const { return key.data() + 2 + t * words_per_tensor(); }
  };

  Layout allocate_layout(const std::vector<int64_t>& key, c10::DeviceIndex device,
                         const c10::cuda::CUDAStream& stream) {
    const LayoutKeyView view{key};
    const int64_t n = view.num_tensors();
    std::vector<int64_t> numels(n);
    for (int64_t t = 0; t < n; ++t) {
      numels[t] = view.tensor(t)[0];
    }
    const chunk_plan::Plan plan = chunk_plan::plan_chunks(numels);
    const int64_t terms_at = n * static_cast<int64_t>(sizeof(TensorEntry));
    const int64_t chunks_at = terms_at + n * kTermsPerTensor * static_cast<int64_t>(sizeof(double));
    Layout layout{DeviceBuffer(chunks_at + plan.num_chunks * static_cast<int64_t>(sizeof(int32_t)), device, stream),
                  TensorTable{}, {}};
    uint8_t* base = layout.buffer.data();
    layout.table.entries = reinterpret_cast<const TensorEntry*>(base);
    layout.table.tensor_terms = reinterpret_cast<double*>(base + terms_at);
    layout.table.chunk_tensors = reinterpret_cast<const int32_t*>(base + chunks_at);
    layout.table.num_tensors = n;
    layout.table.num_chunks = plan.num_chunks;
    ++counters_["layouts_built"];
    return layout;
  }

  // Uploads the entries, decoded from the key, then indexes the chunks on the device.
  void write_layout(const std::vector<int64_t>& key, const Layout& layout, cudaStream_t stream) {
    const LayoutKeyView view{key};
    const int64_t n = view.num_tensors();
    std::vector<TensorEntry> entries(n);
    int64_t first_chunk = 0;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t* words = view.tensor(t);
      TensorEntry& entry = entries[t];
      entry.numel = words[0];
      int64_t at = 1;
      for (int s = 0; s < kMaxSlots; ++s) {
        const bool stored = s < view.num_slots();
        entry.slots[s] = stored ? reinterpret_cast<void*>(static_cast<uintptr_t>(words[at++])) : nullptr;
      }
      entry.step = reinterpret_cast<double*>(static_cast<uintptr_t>(words[at]));
      entry.first_chunk = first_chunk;
      first_chunk += chunk_plan::chunks_of(entry.numel);
    }
    std::vector<int64_t> image(n * chunk_plan::kEntryWords);
    std::memcpy(image.data(), entries.data(), image.size() * sizeof(int64_t));
    upload_words(reinterpret_cast<int64_t*>(const_cast<TensorEntry*>(layout.table.entries)), image, stream);
    if (layout.table.num_chunks > 0) {
      const int64_t blocks = (layout.table.num_chunks + kBlockThreads - 1) / kBlockThreads;
      index_chunks_kernel<<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(layout.table);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    ++counters_["layout_writes"];
  }

  // The grad array of `layout` with these addresses, uploaded if needed.
  GradArray& grad_array(Layout& layout, std::vector<int64_t> addresses, c10::DeviceIndex device,
                        const c10::cuda::CUDAStream& stream, const Capture& capture) {
    auto& arrays = layout.grad_arrays;
    auto found = std::find_if(arrays.begin(), arrays.end(),
                              [&](const GradArray& a) { return a.addresses == addresses; });
    if (found == arrays.end()) {
      if (!capture.active) {  // the new array replaces the eager one
        arrays.erase(std::remove_if(arrays.begin(), arrays.end(),
                                    [](const GradArray& a) { return !a.buffer.held_by_graph(); }),
                     arrays.end());
      }
      const int64_t bytes = static_cast<int64_t>(addresses.size() * sizeof(int64_t));
      arrays.push_back(GradArray{std::move(addresses), DeviceBuffer(bytes, device, stream)});
      found = arrays.end() - 1;
    }
    GradArray& array = *found;
    array.last_use = ++clock_;
    if (!array.buffer.written) {
      upload_words(reinterpret_cast<int64_t*>(array.buffer.data()), array.addresses, stream.stream());
      array.buffer.written = !capture.active;
      ++counters_["grad_uploads"];
    }
    array.buffer.use_on(stream, capture);
    return array;
  }

  // After a graph was destroyed: of the grad arrays no graph holds, each
  // layout keeps only the most recently used.
  void drop_released() {
    const uint64_t releases = graph_releases().load();
    if (releases == releases_seen_) {
      return;
    }
    releases_seen_ = releases;
    for (auto& item : layouts_) {
      auto& arrays = item.second.grad_arrays;
      uint64_t newest = 0;
      for (const GradArray& a : arrays) {
        if (!a.buffer.held_by_graph()) {
          newest = std::max(newest, a.last_use);
        }
      }
      arrays.erase(std::remove_if(arrays.begin(), arrays.end(),
                                  [&](const GradArray& a) { return !a.buffer.held_by_graph() && a.last_use != newest; }),
                   arrays.end());
    }
  }

  void evict_if_full() {
    size_t unheld = 0;
    auto oldest = layouts_.end();
    for (auto it = layouts_.begin(); it != layouts_.end(); ++it) {
      if (it->second.held_by_graph()) {
        continue;
      }
      ++unheld;
      if (oldest == layouts_.end() || it->second.last_use < oldest->second.last_use) {
        oldest = it;
      }
    }
    if (unheld >= kMaxCachedLayouts) {
      layouts_.erase(oldest);
      ++counters_["evictions"];
    }
  }

  struct KeyHash {
    size_t operator()(const std::vector<int64_t>& key) const {
      uint64_t h = 0xcbf29ce484222325ull;
      for (const int64_t word : key) {
        h ^= static_cast<uint64_t>(word);
        h *= 0x100000001b3ull;
        h ^= h >> 29;
      }
      return static_cast<size_t>(h);
    }
  };

  std::mutex mutex_;
  uint64_t clock_ = 0;
  uint64_t releases_seen_ = 0;
  std::map<std::string, int64_t> counters_{
      {"layouts_built", 0}, {"layout_writes", 0}, {"grad_uploads", 0}, {"evictions", 0}};
  std::unordered_map<std::vector<int64_t>, Layout, KeyHash> layouts_;
};

}  // namespace cuda
}  // namespace lrsched_fused
