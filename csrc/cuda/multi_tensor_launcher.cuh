#pragma once
// The multi-tensor launcher of the CUDA path: it cuts every tensor of a call
// into chunks, keeps a table that tells each block which chunk of which tensor
// it owns, and launches one block per chunk. It knows nothing of the math.
//
// NOTE: [device tensor table]
// torch's multi_tensor_apply passes the tensor addresses as kernel arguments,
// so one launch covers at most ~110 tensors (less for deeper lists) and a
// model with thousands of parameters needs dozens of launches per step. Here
// the per-tensor metadata lives in device memory instead, in one table per
// distinct list of tensors:
//
//   TensorEntry entries[n]     slot addresses (param, grad, exp_avg, ...),
//                              numel, the step counter's address
//   int64_t first_chunks[n]    exclusive prefix sum of the chunk counts
//
// A kernel is launched with one block per chunk of all tensors together; a
// block finds its tensor by a binary search of `first_chunks` (the last
// tensor whose first chunk is <= blockIdx.x, which skips zero-size tensors).
// So a call costs one launch whatever the number of tensors.
//
// Parameters do not move during training, so the table is built once and
// cached: the cache key is the whole table content (device, and per tensor its
// numel, slot addresses and step address), so a hit is always correct, even
// when a freed tensor's address is reused. A step whose key hits costs host
// work proportional to the number of tensors and no device work; after the
// first step no step allocates or uploads anything.
//
// The table is written by a tiny kernel that carries up to kEntriesPerFill
// entries in its arguments, not by a host-to-device copy: kernel arguments
// are copied when the launch is enqueued, so there is no pinned staging
// buffer whose lifetime must outlast an asynchronous copy, nothing syncs, and
// the write is stream-ordered before the first kernel that reads the table.
// It is also legal during CUDA graph capture. Capture and the cache:
//  - a table used while a stream is capturing is pinned: never evicted, never
//    freed, since the graph keeps its address for every replay;
//  - a table first needed during capture (e.g. grads set to None before
//    capture, so backward allocates them in the graph's pool) is allocated
//    there and its fill kernels are recorded into the graph, which then
//    rewrites the same bytes on every replay. Such a table's content exists
//    only once a replay has run, so the first eager use (or a later capture)
//    fills it again. Warming up with the same tensors avoids all of this: a
//    step captured on a cache hit records exactly the update kernels.
// At most kMaxCachedTables unpinned tables are kept (least recently used is
// freed first). A table read on a stream other than the one it was allocated
// on is recorded on that stream, so the caching allocator does not hand its
// memory out while a kernel may still read it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace lrsched_fused {
namespace cuda {

constexpr int kMaxSlots = 5;  // Adam with amsgrad: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
constexpr int kBlockThreads = 256;
constexpr int kILP = 4;  // elements in flight per thread and slot
constexpr int64_t kChunkElements = 16 * kBlockThreads * kILP;  // 16384: 16 ILP rounds per block
constexpr int kEntriesPerFill = 48;  // 48 * (64 + 8) bytes of arguments, under the 4 KiB limit
constexpr size_t kMaxCachedTables = 64;

struct TensorEntry {
  void* slots[kMaxSlots];  // unused slots are nullptr
  double* step;            // the float64 step counter (Adam, SGD with momentum); nullptr without one
  int64_t numel;
};

struct TensorTable {
  const TensorEntry* entries;
  const int64_t* first_chunks;
  int64_t num_tensors;
  int64_t num_chunks;
};

// The part of one tensor a block updates: elements [begin, begin + count).
struct ChunkRef {
  int64_t tensor;
  int64_t begin;
  int count;
};

__device__ inline ChunkRef locate_chunk(const TensorTable& table, int64_t chunk) {
  // Invariant: first_chunks[lo] <= chunk (first_chunks[0] == 0), and hi is
  // num_tensors or first_chunks[hi] > chunk.
  int64_t lo = 0;
  int64_t hi = table.num_tensors;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (table.first_chunks[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  ChunkRef ref;
  ref.tensor = lo;
  ref.begin = (chunk - table.first_chunks[lo]) * kChunkElements;
  const int64_t left = table.entries[lo].numel - ref.begin;
  ref.count = static_cast<int>(left < kChunkElements ? left : kChunkElements);
  return ref;
}

struct FillBatch {
  TensorEntry entries[kEntriesPerFill];
  int64_t first_chunks[kEntriesPerFill];
};

// Kernel arguments are limited to 4 KiB (without the CUDA 12.1 large-argument opt-in).
static_assert(sizeof(FillBatch) + 2 * sizeof(void*) + sizeof(int64_t) + sizeof(int) <= 4096,
              "fill_table_kernel's arguments must fit in 4 KiB");

__global__ void fill_table_kernel(TensorEntry* entries, int64_t* first_chunks, int64_t offset, int count,
                                  FillBatch batch) {
  const int i = threadIdx.x;
  if (i < count) {
    entries[offset + i] = batch.entries[i];
    first_chunks[offset + i] = batch.first_chunks[i];
  }
}

// One block per chunk of the table, on `stream`; kernel(table, args).
template <typename Args>
void launch_per_chunk(void (*kernel)(TensorTable, Args), const TensorTable& table, const Args& args,
                      cudaStream_t stream) {
  if (table.num_chunks == 0) {
    return;
  }
  kernel<<<static_cast<unsigned int>(table.num_chunks), kBlockThreads, 0, stream>>>(table, args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// One thread per tensor of the table, on `stream`; kernel(table, args).
template <typename Args>
void launch_per_tensor(void (*kernel)(TensorTable, Args), const TensorTable& table, const Args& args,
                       cudaStream_t stream) {
  if (table.num_tensors == 0) {
    return;
  }
  const int64_t blocks = (table.num_tensors + kBlockThreads - 1) / kBlockThreads;
  kernel<<<static_cast<unsigned int>(blocks), kBlockThreads, 0, stream>>>(table, args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// What a table is built from: the slot lists in use (all as long as
// slots[0]), and optionally the step counters.
struct TableSpec {
  std::vector<at::TensorList> slots;
  at::TensorList steps;  // empty: no step counters
};

class TensorTableCache {
 public:
  static TensorTableCache& instance() {
    static TensorTableCache* cache = new TensorTableCache();  // leaked: outlives static destruction
    return *cache;
  }

  // The table of `spec` on the current device and stream `stream`: a cached
  // one when the key matches, else a new one (see NOTE: [device tensor table]).
  TensorTable get(const TableSpec& spec, c10::DeviceIndex device, const c10::cuda::CUDAStream& stream) {
    const size_t n = spec.slots.empty() ? 0 : spec.slots[0].size();
    TORCH_INTERNAL_ASSERT(spec.slots.size() <= static_cast<size_t>(kMaxSlots));
    std::vector<int64_t> key;
    key.reserve(1 + n * kWordsPerTensor);
    key.push_back(device);
    for (size_t t = 0; t < n; ++t) {
      key.push_back(spec.slots[0][t].numel());
      for (int s = 0; s < kMaxSlots; ++s) {
        const bool used = static_cast<size_t>(s) < spec.slots.size();
        key.push_back(used ? address_of(spec.slots[s][t].data_ptr()) : 0);
      }
      key.push_back(spec.steps.empty() ? 0 : address_of(spec.steps[t].data_ptr()));
    }

    cudaStreamCaptureStatus capture_status = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream.stream(), &capture_status));
    const bool capturing = capture_status != cudaStreamCaptureStatusNone;

    std::lock_guard<std::mutex> lock(mutex_);
    auto found = tables_.find(key);
    if (found == tables_.end()) {
      evict_if_full();
      CachedTable fresh = allocate(key, device, stream);
      found = tables_.emplace(std::move(key), std::move(fresh)).first;
    }
    CachedTable& cached = found->second;
    cached.last_use = ++clock_;
    if (!cached.written) {
      fill(found->first, cached.table, stream.stream());
      cached.written = !capturing;
    }
    if (capturing) {
      cached.pinned = true;
    } else if (!cached.pinned && stream != cached.allocation_stream) {
      const c10::StreamId id = stream.id();
      if (std::find(cached.recorded_streams.begin(), cached.recorded_streams.end(), id) ==
          cached.recorded_streams.end()) {
        cached.storage.record_stream(stream.unwrap());  // once per stream is enough
        cached.recorded_streams.push_back(id);
      }
    }
    return cached.table;
  }

 private:
  static constexpr size_t kWordsPerTensor = 1 + kMaxSlots + 1;  // numel, slots, step

  struct CachedTable {
    at::Tensor storage;  // uint8: TensorEntry[n], then int64_t first_chunks[n]
    TensorTable table;
    c10::cuda::CUDAStream allocation_stream;
    std::vector<c10::StreamId> recorded_streams;  // other streams that read it
    uint64_t last_use = 0;
    bool pinned = false;   // read by a captured graph: never freed
    bool written = false;  // the content exists outside any graph
  };

  static int64_t address_of(const void* p) {
    return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p));
  }

  static const int64_t* tensor_words(const std::vector<int64_t>& key, int64_t t) {
    return key.data() + 1 + t * static_cast<int64_t>(kWordsPerTensor);
  }

  static int64_t chunks_of(int64_t numel) {
    return (numel + kChunkElements - 1) / kChunkElements;
  }

  static CachedTable allocate(const std::vector<int64_t>& key, c10::DeviceIndex device,
                              const c10::cuda::CUDAStream& stream) {
    const int64_t n = static_cast<int64_t>((key.size() - 1) / kWordsPerTensor);
    int64_t chunks = 0;
    for (int64_t t = 0; t < n; ++t) {
      chunks += chunks_of(tensor_words(key, t)[0]);
    }
    TORCH_CHECK(chunks <= std::numeric_limits<int32_t>::max(), "lrsched_fused: one call would need ", chunks,
                " blocks of ", kChunkElements, " elements, more than a CUDA grid holds; split the param group");
    const int64_t bytes = n * static_cast<int64_t>(sizeof(TensorEntry) + sizeof(int64_t));
    at::Tensor storage = at::empty({bytes > 0 ? bytes : 1},
                                   at::TensorOptions().dtype(at::kByte).device(at::Device(at::kCUDA, device)));
    auto* base = static_cast<uint8_t*>(storage.mutable_data_ptr());
    CachedTable cached{storage, TensorTable{}, stream, {}};
    cached.table.entries = reinterpret_cast<const TensorEntry*>(base);
    cached.table.first_chunks = reinterpret_cast<const int64_t*>(base + n * sizeof(TensorEntry));
    cached.table.num_tensors = n;
    cached.table.num_chunks = chunks;
    return cached;
  }

  // Writes the table content, decoded from the key, with fill_table_kernel
  // launches on `stream`.
  static void fill(const std::vector<int64_t>& key, const TensorTable& table, cudaStream_t stream) {
    auto* entries = const_cast<TensorEntry*>(table.entries);
    auto* first_chunks = const_cast<int64_t*>(table.first_chunks);
    FillBatch batch{};
    int64_t chunks = 0;
    for (int64_t begin = 0; begin < table.num_tensors; begin += kEntriesPerFill) {
      const int count = static_cast<int>(std::min<int64_t>(kEntriesPerFill, table.num_tensors - begin));
      for (int i = 0; i < count; ++i) {
        const int64_t* words = tensor_words(key, begin + i);
        TensorEntry& entry = batch.entries[i];
        entry.numel = words[0];
        for (int s = 0; s < kMaxSlots; ++s) {
          entry.slots[s] = reinterpret_cast<void*>(static_cast<uintptr_t>(words[1 + s]));
        }
        entry.step = reinterpret_cast<double*>(static_cast<uintptr_t>(words[1 + kMaxSlots]));
        batch.first_chunks[i] = chunks;
        chunks += chunks_of(entry.numel);
      }
      fill_table_kernel<<<1, kEntriesPerFill, 0, stream>>>(entries, first_chunks, begin, count, batch);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }

  void evict_if_full() {
    size_t unpinned = 0;
    auto oldest = tables_.end();
    for (auto it = tables_.begin(); it != tables_.end(); ++it) {
      if (it->second.pinned) {
        continue;
      }
      ++unpinned;
      if (oldest == tables_.end() || it->second.last_use < oldest->second.last_use) {
        oldest = it;
      }
    }
    if (unpinned >= kMaxCachedTables) {
      tables_.erase(oldest);
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
  std::unordered_map<std::vector<int64_t>, CachedTable, KeyHash> tables_;
};

}  // namespace cuda
}  // namespace lrsched_fused
