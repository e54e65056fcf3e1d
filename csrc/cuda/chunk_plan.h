#pragma once
// The arithmetic of the CUDA launcher (NOTE: [tensors in kernel arguments]
// in multi_tensor_launcher.cuh): how a call's tensors are cut into launches,
// and which chunk of which tensor each block of a launch updates. Plain
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
constexpr int64_t kMaxGridBlocks = std::numeric_limits<int32_t>::max();  // gridDim.x

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

// One launch: tensors [first_tensor, first_tensor + num_tensors) of the
// call, one block per chunk of them; its chunks are the call's chunks
// [first_chunk, first_chunk + num_chunks).
struct Launch {
  int64_t first_tensor;
  int64_t num_tensors;
  int64_t first_chunk;
  int64_t num_chunks;
};

// A call's launches, and each tensor's first block within its launch.
struct LaunchPlan {
  std::vector<int64_t> numels;
  std::vector<int64_t> first_chunks;
  std::vector<Launch> launches;
  int64_t num_chunks = 0;  // of all launches together
};

// The tensors of `numels`, in order, cut into launches of at most
// `tensors_per_launch` tensors and kMaxGridBlocks blocks; a tensor is never
// split. No tensors: no launches.
inline LaunchPlan plan_launches(const std::vector<int64_t>& numels, int64_t tensors_per_launch) {
  TORCH_CHECK(tensors_per_launch > 0, "lrsched_fused: ", tensors_per_launch, " tensors per launch");
  LaunchPlan plan;
  plan.numels = numels;
  plan.first_chunks.reserve(numels.size());
  for (size_t t = 0; t < numels.size(); ++t) {
    const int64_t numel = numels[t];
    TORCH_CHECK(numel >= 0, "lrsched_fused: a tensor of ", numel, " elements");
    const int64_t chunks = chunks_of(numel);
    TORCH_CHECK(chunks <= kMaxGridBlocks, "lrsched_fused: a tensor of ", numel, " elements needs ", chunks,
                " blocks of ", kChunkElements, " elements, more than a CUDA grid holds");
    if (plan.launches.empty() || plan.launches.back().num_tensors == tensors_per_launch ||
        plan.launches.back().num_chunks + chunks > kMaxGridBlocks) {
      plan.launches.push_back({static_cast<int64_t>(t), 0, plan.num_chunks, 0});
    }
    Launch& launch = plan.launches.back();
    plan.first_chunks.push_back(launch.num_chunks);
    launch.num_tensors += 1;
    launch.num_chunks += chunks;
    plan.num_chunks += chunks;
  }
  return plan;
}

}  // namespace chunk_plan
}  // namespace lrsched_fused
