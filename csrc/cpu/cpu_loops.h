#pragma once
// The CPU kernels' loop machinery, shared by csrc/cpu/fused_step_cpu.cpp and
// csrc/cpu/grad_norm_cpu.cpp: the work split over threads, the instruction-set
// clones, and small helpers around them.
//
// NOTE: [CPU work split]
// The elements of all tensors of a call, laid end to end, are cut into blocks
// of kBlockElements; one parallel region runs over them and every thread takes
// the next free block from an atomic counter until none is left. A block may
// cover the tail of one tensor and the heads of the next ones. So small
// tensors cost no parallel region each (torch's fused CPU optimizers open one
// per tensor), a large tensor is still spread over all threads, and a thread
// that is slowed down (a busy core, unequal tensors) takes fewer blocks instead
// of holding the others at the closing barrier, as a fixed split would.
// A call with fewer than kSerialElements elements runs on the calling thread.
//
// NOTE: [CPU instruction sets]
// The extension is built for the baseline x86-64 ISA (no -march=native, so it
// runs anywhere), where the compiler vectorizes with 16-byte SSE only. The
// per-element loops are therefore compiled twice, as is and for AVX2, and the
// AVX2 version runs when torch reports that capability
// (torch.backends.cpu.get_cpu_capability(); ATEN_CPU_CAPABILITY=default picks
// the baseline). Both versions are the same source: the math of update_math.h
// in plain loops over contiguous storage, with loop-invariant options as
// template parameters. The AVX2 target deliberately leaves out FMA: without
// it the vector instructions round exactly as the scalar ones do, so both
// versions give bit-identical results, equal bit for bit to torch's fused CPU
// kernels run with ATEN_CPU_CAPABILITY=default. (torch's AVX2 kernels contract
// into FMA; against them we differ by rounding, worst seen 1.4e-6 relative on
// an fp32 Adam element where grad + weight_decay * param cancels, see
// benchmarks/check_against_torch.py.) No -ffast-math either. The 8-bit
// states' coding loops have a third version, for AVX-512 (use_avx512_vbmi),
// with FMA in its target: -ffp-contract=off (setup.py) keeps a * b + c two
// roundings there too.
// The AVX-512 version runs at capability AVX512 only, so pinning
// ATEN_CPU_CAPABILITY=avx2 runs (and a test compares) the AVX2 one.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/bit_cast.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) || defined(__clang__)
#define LRSCHED_FUSED_FLATTEN __attribute__((flatten))
#else
#define LRSCHED_FUSED_FLATTEN
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LRSCHED_FUSED_AVX2_CLONE 1
#define LRSCHED_FUSED_TARGET_AVX2 __attribute__((target("avx2"), flatten))
#endif

namespace lrsched_fused {
namespace cpu {


constexpr int64_t kBlockElements = 1 << 16;
constexpr int64_t kSerialElements = 1 << 15;

// The elements of all tensors laid end to end (NOTE: [CPU work split]).
class ElementSpace {
 public:
  explicit ElementSpace(at::TensorList params) : starts_(params.size() + 1, 0) {
    for (size_t i = 0; i < params.size(); ++i) {
      starts_[i + 1] = starts_[i] + params[i].numel();
    }
  }

  // Units of another size per tensor (the 8-bit loops count blocks of
  // elements, so a piece never cuts one).
  explicit ElementSpace(const std::vector<int64_t>& sizes) : starts_(sizes.size() + 1, 0) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      starts_[i + 1] = starts_[i] + sizes[i];
    }
  }

  int64_t size() const { return starts_.back(); }

  // Calls piece(tensor, begin, end) for the part of every tensor inside
  // [first, last) of the concatenated elements, in order.
  template <typename F>
  void for_each_piece(int64_t first, int64_t last, const F& piece) const {
    size_t t = std::upper_bound(starts_.begin(), starts_.end(), first) - starts_.begin() - 1;
    for (; t + 1 < starts_.size() && starts_[t] < last; ++t) {
      const int64_t begin = std::max(first, starts_[t]) - starts_[t];
      const int64_t end = std::min(last, starts_[t + 1]) - starts_[t];
      if (begin < end) {
        piece(t, begin, end);
      }
    }
  }

 private:
  std::vector<int64_t> starts_;
};

// `block` and `serial`: kBlockElements and kSerialElements in the space's units.
template <typename F>
void for_each_piece_in_parallel(const ElementSpace& space, const F& piece, int64_t block = kBlockElements,
                                int64_t serial = kSerialElements) {
  const int64_t total = space.size();
  if (total <= serial || at::get_num_threads() == 1 || at::in_parallel_region()) {
    space.for_each_piece(0, total, piece);
    return;
  }
  const int64_t blocks = (total + block - 1) / block;
  std::atomic<int64_t> next_block{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), blocks);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t b = next_block.fetch_add(1, std::memory_order_relaxed); b < blocks;
         b = next_block.fetch_add(1, std::memory_order_relaxed)) {
      space.for_each_piece(b * block, std::min(total, (b + 1) * block), piece);
    }
  });
}

// NOTE: [CPU instruction sets]: Elements::run and everything it calls (the
// update of update_math.h included) is inlined into both callers (flatten), so
// the loop is compiled for each one's target. Without flatten GCC may keep
// adam_update out of line, compiled for the baseline: a scalar call per
// element, 8x slower (seen with weight decay once -fopenmp was on).
inline bool use_avx2() {
#ifdef LRSCHED_FUSED_AVX2_CLONE
  static const bool value = [] {
    const std::string capability = at::get_cpu_capability();
    return (capability == "AVX2" || capability == "AVX512") && __builtin_cpu_supports("avx2");
  }();
  return value;
#else
  return false;
#endif
}

// The 8-bit states' coding loops have a third version, for AVX-512 with its
// byte permutes (VBMI): a gather of 16 table entries per 16 values and the
// map read through permutes, where the AVX2 version needs two gathers per 8
// and a gather per 8 (csrc/cpu/states_8bit_cpu.cpp). Explicit intrinsics, no
// contraction: its codes equal the other versions' bit for bit. It runs when
// torch reports AVX512 and the CPU has the four extensions it uses.
inline bool cpu_has_avx512_vbmi() {
#ifdef LRSCHED_FUSED_AVX2_CLONE
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

inline bool use_avx512_vbmi() {
  static const bool value = at::get_cpu_capability() == "AVX512" && cpu_has_avx512_vbmi();
  return value;
}

template <typename Elements, typename... Args>
LRSCHED_FUSED_FLATTEN void run_baseline(const Args&... args) {
  Elements::run(args...);
}

#ifdef LRSCHED_FUSED_AVX2_CLONE
template <typename Elements, typename... Args>
LRSCHED_FUSED_TARGET_AVX2 void run_avx2(const Args&... args) {
  Elements::run(args...);
}
#endif

template <typename Elements, typename... Args>
void run_elements(bool avx2, const Args&... args) {
#ifdef LRSCHED_FUSED_AVX2_CLONE
  if (avx2) {
    run_avx2<Elements>(args...);
    return;
  }
#endif
  run_baseline<Elements>(args...);
}

inline double read_double(const at::Tensor& t) {
  double value = 0;
  AT_DISPATCH_ALL_TYPES_AND3(at::kHalf, at::kBFloat16, at::kBool, t.scalar_type(), "read_double", [&] {
    value = static_cast<double>(*t.const_data_ptr<scalar_t>());
  });
  return value;
}

inline bool step_is_skipped(const std::optional<at::Tensor>& found_inf) {
  return found_inf.has_value() && read_double(*found_inf) != 0.0;
}

// The data pointers of one slot (empty for an unused slot), read once before
// the parallel region.
template <typename T>
std::vector<T*> data_pointers(at::TensorList list) {
  std::vector<T*> pointers;
  pointers.reserve(list.size());
  for (const at::Tensor& t : list) {
    pointers.push_back(t.mutable_data_ptr<T>());
  }
  return pointers;
}

template <typename T>
T* offset_or_null(const std::vector<T*>& pointers, size_t tensor, int64_t begin) {
  return pointers.empty() ? nullptr : pointers[tensor] + begin;
}

#if defined(__GNUC__) || defined(__clang__)
#define LRSCHED_FUSED_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define LRSCHED_FUSED_ALWAYS_INLINE inline
#endif

// NOTE: [CPU loop specialization]
// The kernels take a call's options as runtime values (NOTE: [kernel
// instantiations]). On the CPU two of them are still pinned per loop:
// Elements::loop<kUnscale, kClip> sets them as constants in a local copy of
// the coefficients, reached through always-inlined templates only (no lambda:
// a closure holding the copy's address keeps it in memory, and the loop is
// not vectorized). A GradScaler's unscale stores the grad back (a conditional
// store is not vectorized), and clipping rounds the grad through c10's
// 16-bit conversion (a branch, not vectorized when computed speculatively).
// Stochastic rounding is a template parameter of the Elements themselves (a
// loop of its own, with the Philox rounds). The other options (weight decay
// on, the lerp form, nesterov, a momentum buffer's first step) are tested per
// element as numbers (NOTE: [switches as numbers] in csrc/update_math.h): with
// -fno-trapping-math (setup.py) GCC turns them into vector selects. Measured
// with `python3 benchmarks/bench.py` (2 cores, small-many, torch-fused time /
// ours): every option tested in the loop as a bool, fp32 SGD 0.51 and
// bf16+master Adam 0.50; all four pinned, 1.34 and 1.19 (fp32 SGD, bf16 Adam);
// unscale and clipping pinned with the rest as numbers, 1.46 and 1.02 (bool
// switches instead: bf16 Adam 0.26, not vectorized).
template <typename Elements, size_t N, bool... kPinned, typename... Args>
LRSCHED_FUSED_ALWAYS_INLINE void run_pinned(const std::array<bool, N>& flags, const Args&... args) {
  if constexpr (sizeof...(kPinned) == N) {
    Elements::template loop<kPinned...>(args...);
  } else if (flags[sizeof...(kPinned)]) {
    run_pinned<Elements, N, kPinned..., true>(flags, args...);
  } else {
    run_pinned<Elements, N, kPinned..., false>(flags, args...);
  }
}

// opmath_t -> scalar_t for the stores. For bfloat16 this is c10's
// round-to-nearest-even with NaN -> 0x7FC0, written as a select instead of
// c10's early return: the same bits, but a form the vectorizer takes (with
// c10's branch the bf16 Adam loop stayed scalar, 6x slower than fp32).
template <typename scalar_t, typename opmath_t>
LRSCHED_FUSED_ALWAYS_INLINE scalar_t to_storage(opmath_t value) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && !std::is_same_v<opmath_t, float>) {
    return to_storage<scalar_t>(static_cast<float>(value));  // via float, as c10's conversion of a double
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const uint32_t bits = c10::bit_cast<uint32_t>(value);
    const uint32_t rounded = (bits + ((bits >> 16) & 1) + UINT32_C(0x7FFF)) >> 16;
    const uint16_t stored = value != value ? UINT16_C(0x7FC0) : static_cast<uint16_t>(rounded);
    return c10::BFloat16(stored, c10::BFloat16::from_bits());
  } else {
    return static_cast<scalar_t>(value);
  }
}

}  // namespace cpu
}  // namespace lrsched_fused
