// Operator schemas of the lrsched_fused library and the Python module that
// carries them. Kernels are registered per device: csrc/cpu/, csrc/cuda/.
#include <torch/library.h>
#include <torch/extension.h>

#include <map>
#include <string>
#include <vector>

#include "cuda/chunk_plan.h"
#include "schedule_math.h"
#include "step_plan_bindings.h"
#include "update_ops.h"

#ifdef LRSCHED_FUSED_WITH_CUDA
namespace lrsched_fused {
namespace cuda {
std::map<std::string, int64_t> table_cache_stats();       // csrc/cuda/fused_step_cuda.cu
std::map<std::string, int64_t> grad_table_cache_stats();  // csrc/cuda/grad_norm_cuda.cu
}  // namespace cuda
}  // namespace lrsched_fused
#endif

namespace {

// The CUDA launcher's chunk plan for tensors of `numels`, run on the host
// (tests/test_chunk_plan.py): each tensor's first block, and per block the
// tensor, first element and element count a kernel block derives from the
// table; the upload batches of a layout's entries and of a grad array (one
// word per tensor) at `upload_words` words per launch.
pybind11::dict chunk_plan_for(const std::vector<int64_t>& numels, int upload_words) {
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

}  // namespace

TORCH_LIBRARY(lrsched_fused, m) {
  // The update ops (NOTE: [update op declaration]): one step of one param
  // group's same-dtype tensors, with the group's lr and hyperparameters read
  // from schedule_state (NOTE: [hyperparameters on the device]); each tensor's
  // step counter is incremented. With found_inf != 0 nothing changes.
  lrsched_fused::for_each_update_op([&](auto op) {
    const std::string schema = std::string(decltype(op)::kName) +
                               "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, Tensor schedule_state, "
                               "int group_index, int flags, Tensor? grad_scale=None, Tensor? found_inf=None, "
                               "Tensor? clip_coef=None) -> ()";
    m.def(torch::schema(schema.c_str(), c10::AliasAnalysisKind::FROM_SCHEMA));
  });
  // With clip_coef (gradient clipping, NOTE: [grad norm]) both update ops use
  // grad * clip_coef, rounded to the grad's dtype, and leave the grad unclipped.
  //
  // With the master_weights flag (NOTE: [master weights]) both update ops
  // take bfloat16/float16 params and grads, float32 master_param and states:
  // the update is computed on the master, as for a float32 parameter, and the
  // param is written as the master rounded to nearest, in the same pass.
  //
  // The part of a global grad norm that reads the grads (NOTE: [grad norm]):
  // partial (0-dim float64, on the grads' device) = the sum over grads of
  // ||g||_p ** p, each grad's norm rounded to its dtype first (for p = inf,
  // the max of ||g||_inf). Grads of any floating dtypes; with grad_scale each
  // element is unscaled first, as the update ops unscale it. Deterministic.
  m.def("grad_norm_partial_(Tensor[] grads, float norm_type, Tensor? grad_scale, Tensor(a!) partial) -> ()");
  // The rest of clip_grad_norm_ from `partial` (summed over ranks where the
  // grads are shards): total_norm and clip_coef (0-dim, one floating dtype,
  // the grads' promoted one), rounded as torch's ops round them.
  m.def(
      "clip_coefficient_(Tensor partial, float norm_type, float max_norm, Tensor(a!) total_norm, "
      "Tensor(b!) clip_coef) -> ()");
  // One scheduler.step() on the device, of the schedule `program` (NOTE:
  // [schedule program]). `metric` (one element, any real dtype) feeds
  // ReduceLROnPlateau; with skip_if given and != 0 nothing changes. With
  // initial=True it does what torch's scheduler constructors do instead.
  m.def(
      "schedule_step_(Tensor(a!) schedule_state, float[] program, Tensor? metric=None, "
      "Tensor? skip_if=None, bool initial=False) -> ()");
}

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
  m.def("_chunk_plan", &chunk_plan_for, "test only: the CUDA launcher's chunk plan, computed on the host");
#ifdef LRSCHED_FUSED_WITH_CUDA
  m.def("_cuda_table_cache_stats", &lrsched_fused::cuda::table_cache_stats,
        "test only: counts of the CUDA tensor-table cache (NOTE: [device tensor table])");
  m.def("_cuda_grad_table_cache_stats", &lrsched_fused::cuda::grad_table_cache_stats,
        "test only: counts of the CUDA grad-table cache and grad norm scratch (NOTE: [grad table])");
#endif
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
}

