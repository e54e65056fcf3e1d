#pragma once
// The one vector type of the CUDA kernels: kSize consecutive elements that a
// thread loads or stores as one access (16 bytes for a kernel's widest slot;
// a narrower slot's is 8 or 4 bytes, e.g. bfloat16 states beside float or
// float64 values), aligned to its own size.
#include <cstdint>

namespace lrsched_fused {
namespace cuda {

template <typename T, int kCount = 16 / sizeof(T)>
struct alignas(sizeof(T) * kCount) AlignedVector {
  static constexpr int kSize = kCount;
  T values[kCount];
};

// Whether `p` may be read and written as AlignedVector `Vector`s.
template <typename Vector>
__device__ __forceinline__ bool is_vector_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Vector) == 0;
}

}  // namespace cuda
}  // namespace lrsched_fused
