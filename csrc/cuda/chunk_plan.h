#pragma once
// The arithmetic of the CUDA launcher's chunk plan (NOTE: [device tensor
// table] in multi_tensor_launcher.cuh): which chunk of which tensor each block
// updates, and how the table's words are cut into upload launches. Plain
// C10_HOST_DEVICE code with no CUDA header, so the CPU build compiles it too
// and tests/test_chunk_plan.py checks it against brute force on any machine
// (through lrsched_fused._C.testing.chunk_plan).
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace lrsched_fused {
namespace chunk_plan {

constexpr int kBlockThreads = 256;
constexpr int64_t kChunkElements = 16384;  // one block's share of a tensor
// Words one upload launch carries in its arguments: under the classic 4 KB
// argument limit, and under the 32 KB one of CUDA >= 12.1 (Volta and later).
constexpr int kUploadWordsSmall = 496;
constexpr int kUploadWordsLarge = 4000;
constexpr int kEntryWords = 8;  // a table entry: one 64-byte line per tensor

C10_HOST_DEVICE inline int64_t chunks_of(int64_t numel) {
  return (numel + kChunkElements - 1) / kChunkElements;
}

// The part of one tensor a block updates: elements [begin, begin + count).
struct ChunkRef {
  int64_t tensor;
  int64_t begin;
  int count;
};

// Block `chunk`'s part of `tensor`, whose first block is `first_chunk`.
C10_HOST_DEVICE inline ChunkRef chunk_ref(int64_t tensor, int64_t numel, int64_t first_chunk, int64_t chunk) {
  ChunkRef ref;
  ref.tensor = tensor;
  ref.begin = (chunk - first_chunk) * kChunkElements;
  const int64_t left = numel - ref.begin;
  ref.count = static_cast<int>(left < kChunkElements ? left : kChunkElements);
  return ref;
}

// The tensor that owns `chunk`: the last t with first_chunk(t) <= chunk. A
// zero-size tensor has the first chunk of the tensor after it (or the total
// when it is last), so it is never picked. first_chunk(0) == 0 <= chunk.
template <typename FirstChunk>
C10_HOST_DEVICE inline int64_t owner_of_chunk(const FirstChunk& first_chunk, int64_t num_tensors, int64_t chunk) {
  int64_t lo = 0;  // first_chunk(lo) <= chunk
  int64_t hi = num_tensors;  // hi == num_tensors or first_chunk(hi) > chunk
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (first_chunk(mid) <= chunk) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Each tensor's first block and the number of blocks of a call.
struct Plan {
  std::vector<int64_t> first_chunks;
  int64_t num_chunks = 0;
};

inline Plan plan_chunks(const std::vector<int64_t>& numels) {
  Plan plan;
  plan.first_chunks.reserve(numels.size());
  for (const int64_t numel : numels) {
    TORCH_CHECK(numel >= 0, "lrsched_fused: a tensor of ", numel, " elements");
    plan.first_chunks.push_back(plan.num_chunks);
    plan.num_chunks += chunks_of(numel);
  }
  // A grid holds 2^31 - 1 blocks; chunk indices are stored as int32.
  TORCH_CHECK(plan.num_chunks <= std::numeric_limits<int32_t>::max(), "lrsched_fused: one call would need ",
              plan.num_chunks, " blocks of ", kChunkElements,
              " elements, more than a CUDA grid holds; split the param group");
  return plan;
}

// An upload of `count` words at word `offset` of a table buffer, one launch.
struct UploadBatch {
  int64_t offset;
  int count;
};

// `words` words cut into launches of at most `capacity` words each.
inline std::vector<UploadBatch> upload_batches(int64_t words, int capacity) {
  TORCH_CHECK(capacity > 0, "lrsched_fused: upload capacity ", capacity);
  std::vector<UploadBatch> batches;
  for (int64_t offset = 0; offset < words; offset += capacity) {
    const int64_t left = words - offset;
    batches.push_back({offset, static_cast<int>(left < capacity ? left : capacity)});
  }
  return batches;
}

}  // namespace chunk_plan
}  // namespace lrsched_fused
