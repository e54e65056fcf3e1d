// The Python module lrsched_fused._C: the constants the Python layer shares
// with the kernels (state layout, update op declarations, schedule fields),
// the step plan's classes, and, under `_C.testing`, hooks for the tests only.
// The operators themselves are registered through torch.library (csrc/ops.cpp).
#include <torch/extension.h>

#include <map>
#include <string>
#include <vector>

#include "cuda/chunk_plan.h"
#include "schedule_math.h"
#include "step_plan_bindings.h"
#include "update_ops.h"

namespace lrsched_fused {
namespace testing {

// The CUDA launcher's chunk plan for tensors of `numels`, run on the host
// (tests/test_chunk_plan.py): each tensor's first block, and per block the
// tensor, first element and element count a kernel block derives from the
// table; the upload batches of a layout's entries and of a grad array (one
// word per tensor) at `upload_words` words per launch.
pybind11::dict chunk_plan_of(const std::vector<int64_t>& numels, int upload_words) {
  namespace plan = lrsched_fused::chunk_plan;
  const plan::Plan chunks = plan::plan_chunks(numels);
  std::vector<int64_t> blocks;
  blocks.reserve(3 * chunks.num_chunks);
  const auto first_chunk = [&](int64_t t) { return chunks.first_chunks[t]; };
  const int64_t n = static_cast<int64_t>(numels.size());
  for (int64_t chunk = 0; chunk < chunks.num_chunks; ++chunk) {
    const int64_t t = plan::owner_of_chunk(first_chunk, n, chunk);
    const plan::ChunkRef ref = plan::chunk_ref(t, numels[t], chunks.first_chunks[t], chunk);
    blocks.insert(blocks.end(), {ref.tensor, ref.begin, ref.count});
  }
  const auto batches = [&](int64_t words) {
    std::vector<std::pair<int64_t, int>> out;
    for (const plan::UploadBatch& b : plan::upload_batches(words, upload_words)) {
      out.emplace_back(b.offset, b.count);
    }
    return out;
  };
  pybind11::dict result;
  result["first_chunks"] = chunks.first_chunks;
  result["num_chunks"] = chunks.num_chunks;
  result["blocks"] = blocks;  // flat (tensor, begin, count) per block
  result["layout_batches"] = batches(plan::kEntryWords * n);
  result["grad_batches"] = batches(n);
  return result;
}

}  // namespace testing

#ifdef LRSCHED_FUSED_WITH_CUDA
namespace cuda {
std::map<std::string, int64_t> table_cache_stats();       // csrc/cuda/fused_step_cuda.cu
std::map<std::string, int64_t> grad_table_cache_stats();  // csrc/cuda/grad_norm_cuda.cu
}  // namespace cuda
#endif

}  // namespace lrsched_fused

namespace {
template <size_t N>
py::tuple field_names(const std::array<const char*, N>& names) {
  py::tuple result(N);
  for (size_t i = 0; i < N; ++i) {
    result[i] = py::str(names[i]);
  }
  return result;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  lrsched_fused::bind_step_plan(m);
  namespace layout = lrsched_fused::layout;
  m.attr("LAST_EPOCH") = layout::kLastEpoch;
  m.attr("MAX_LEAVES") = layout::kMaxLeaves;
  m.attr("LEAF_STRIDE") = layout::kLeafStride;
  m.attr("HEADER_SIZE") = layout::kHeaderSize;
  m.attr("LEAF_LAST_EPOCH") = layout::kLeafLastEpoch;
  m.attr("PLATEAU_BEST") = layout::kPlateauBest;
  m.attr("PLATEAU_BAD_EPOCHS") = layout::kPlateauBadEpochs;
  m.attr("PLATEAU_COOLDOWN") = layout::kPlateauCooldown;
  m.attr("RESTARTS_T_CUR") = layout::kRestartsTCur;
  m.attr("RESTARTS_T_I") = layout::kRestartsTI;
  m.attr("GROUP_LR") = layout::kGroupLr;
  m.attr("GROUP_BASE_LR") = layout::kGroupBaseLr;
  m.attr("GROUP_MOMENTUM") = layout::kGroupMomentum;
  m.attr("GROUP_MIN_LR") = layout::kGroupMinLr;
  m.attr("GROUP_MAX_LR") = layout::kGroupMaxLr;
  m.attr("GROUP_FINAL_LR") = layout::kGroupFinalLr;
  m.attr("GROUP_BASE_MOMENTUM") = layout::kGroupBaseMomentum;
  m.attr("GROUP_MAX_MOMENTUM") = layout::kGroupMaxMomentum;
  m.attr("GROUP_WEIGHT_DECAY") = layout::kGroupWeightDecay;
  m.attr("GROUP_BETA2") = layout::kGroupBeta2;
  m.attr("GROUP_EPS") = layout::kGroupEps;
  m.attr("GROUP_DAMPENING") = layout::kGroupDampening;
  m.attr("GROUP_STRIDE") = layout::kGroupStride;
  // Each update op's declaration (NOTE: [update op declaration]): its flag
  // bits by name, and its state slots in order as (name, flag bit needed or 0).
  py::dict update_ops;
  lrsched_fused::for_each_update_op([&](auto op) {
    using Op = decltype(op);
    py::dict flags;
    for (size_t i = 0; i < Op::kFlagNames.size(); ++i) {
      flags[py::str(Op::kFlagNames[i])] = int64_t{1} << i;
    }
    py::list states;
    for (const lrsched_fused::StateSlot& slot : Op::kStates) {
      states.append(py::make_tuple(slot.name, slot.needs_flag));
    }
    update_ops[py::str(Op::kName)] = py::dict(py::arg("flags") = flags, py::arg("states") = states);
  });
  m.attr("UPDATE_OPS") = update_ops;
  m.attr("FIRST_LEAF") = layout::kFirstLeaf;
  namespace plan = lrsched_fused::chunk_plan;
  m.attr("CHUNK_ELEMENTS") = plan::kChunkElements;
  m.attr("UPLOAD_WORDS_SMALL") = plan::kUploadWordsSmall;
  m.attr("UPLOAD_WORDS_LARGE") = plan::kUploadWordsLarge;
  m.attr("MAX_PROGRAM_SIZE") = lrsched_fused::kMaxProgramSize;
  // Each leaf kind's number, and its field names in program order (NOTE: [schedule fields]).
  using lrsched_fused::ScheduleKind;
  py::dict schedule_fields;
#define LRSCHED_EXPORT_KIND(Kind, NAME, Schedule)                                    \
  m.attr("KIND_" #NAME) = static_cast<int64_t>(ScheduleKind::Kind);                  \
  schedule_fields[py::int_(static_cast<int64_t>(ScheduleKind::Kind))] = field_names(lrsched_fused::Schedule::kNames);
  LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_EXPORT_KIND)
#undef LRSCHED_EXPORT_KIND
  m.attr("SCHEDULE_FIELDS") = schedule_fields;
  using lrsched_fused::Combinator;
  m.attr("COMBINATOR_SINGLE") = static_cast<int64_t>(Combinator::Single);
  m.attr("COMBINATOR_SEQUENTIAL") = static_cast<int64_t>(Combinator::Sequential);
  m.attr("COMBINATOR_CHAINED") = static_cast<int64_t>(Combinator::Chained);

  // Hooks for the tests, not an API.
  py::module testing = m.def_submodule("testing", "hooks for lrsched_fused's tests only, not an API");
  testing.def("chunk_plan", &lrsched_fused::testing::chunk_plan_of,
              "the CUDA launcher's chunk plan, computed on the host");
#ifdef LRSCHED_FUSED_WITH_CUDA
  testing.def("cuda_table_cache_stats", &lrsched_fused::cuda::table_cache_stats,
              "counts of the CUDA tensor-table cache (NOTE: [device tensor table])");
  testing.def("cuda_grad_table_cache_stats", &lrsched_fused::cuda::grad_table_cache_stats,
              "counts of the CUDA grad-table cache and grad norm scratch (NOTE: [grad table])");
#endif
}

