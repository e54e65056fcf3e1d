// The Python module lrsched_fused._C: the constants the Python layer shares
// with the kernels (state layout, update op declarations, schedule fields),
// the step plan's classes, and, under `_C.testing`, hooks for the tests only.
// The operators themselves are registered through torch.library (csrc/ops.cpp).
#include <torch/extension.h>

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/states_8bit_cpu.h"
#include "cuda/chunk_plan.h"
#include "schedule_math.h"
#include "states_8bit.h"
#include "step_plan_bindings.h"
#include "stochastic_rounding.h"
#include "update_ops.h"

namespace lrsched_fused {
namespace testing {

// The CUDA launcher's plan for tensors of `numels` at `tensors_per_launch`
// tensors per launch, run on the host (tests/test_chunk_plan.py): the
// launches, each tensor's first block within its launch, and per block of
// every launch, in launch order, the tensor (its index in the call), first
// element and element count a kernel block derives from its launch's
// entries (NOTE: [tensors in kernel arguments]); with_blocks=False leaves
// the blocks out (sizes of a grid's blocks).
pybind11::dict chunk_plan_of(const std::vector<int64_t>& numels, int64_t tensors_per_launch, bool with_blocks) {
  namespace plan = lrsched_fused::chunk_plan;
  const plan::LaunchPlan launches = plan::plan_launches(numels, tensors_per_launch);
  std::vector<int64_t> blocks;
  blocks.reserve(with_blocks ? 3 * launches.num_chunks : 0);
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> launch_list;
  for (const plan::Launch& launch : launches.launches) {
    launch_list.emplace_back(launch.first_tensor, launch.num_tensors, launch.first_chunk, launch.num_chunks);
    const auto first_chunk = [&](int64_t i) { return launches.first_chunks[launch.first_tensor + i]; };
    for (int64_t block = 0; with_blocks && block < launch.num_chunks; ++block) {
      const int64_t i = plan::owner_of_chunk(first_chunk, launch.num_tensors, block);
      const int64_t t = launch.first_tensor + i;
      const plan::ChunkRef ref = plan::chunk_ref(i, numels[t], launches.first_chunks[t], block);
      blocks.insert(blocks.end(), {launch.first_tensor + ref.tensor, ref.begin, ref.count});
    }
  }
  pybind11::dict result;
  result["launches"] = launch_list;  // (first tensor, tensors, first chunk, chunks) per launch
  result["first_chunks"] = launches.first_chunks;
  result["num_chunks"] = launches.num_chunks;
  result["blocks"] = blocks;  // flat (tensor, begin, count) per block
  return result;
}

// Philox4x32-10 of (counter, key) (NOTE: [stochastic rounding]), for its known-answer test.
std::vector<int64_t> philox(const std::vector<int64_t>& counter, const std::vector<int64_t>& key) {
  TORCH_CHECK(counter.size() == 4 && key.size() == 2, "philox: 4 counter words and 2 key words");
  PhiloxWords c{};
  for (int i = 0; i < 4; ++i) {
    c.w[i] = static_cast<uint32_t>(counter[i]);
  }
  const PhiloxWords out = philox4x32_10(c, static_cast<uint32_t>(key[0]), static_cast<uint32_t>(key[1]));
  return {out.w[0], out.w[1], out.w[2], out.w[3]};
}

// round_stochastic of each float32 value with its random word (int64 holding a uint32), to `dtype`.
at::Tensor round_stochastic_of(const at::Tensor& values, const at::Tensor& randoms, at::ScalarType dtype) {
  TORCH_CHECK(values.scalar_type() == at::kFloat && randoms.scalar_type() == at::kLong &&
                  values.numel() == randoms.numel(), "round_stochastic: float32 values and int64 words, one each");
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kHalf, "round_stochastic: to bfloat16 or float16");
  const at::Tensor v = values.contiguous().cpu();
  const at::Tensor r = randoms.contiguous().cpu();
  at::Tensor out = at::empty(v.sizes(), v.options().dtype(dtype));
  const float* value = v.const_data_ptr<float>();
  const int64_t* random = r.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < v.numel(); ++i) {
    const auto word = static_cast<uint32_t>(random[i]);
    if (dtype == at::kBFloat16) {
      out.mutable_data_ptr<c10::BFloat16>()[i] = round_stochastic<c10::BFloat16>(value[i], word);
    } else {
      out.mutable_data_ptr<c10::Half>()[i] = round_stochastic<c10::Half>(value[i], word);
    }
  }
  return out;
}

// The 8-bit codes of normalized values x (NOTE: [8-bit states]) with the
// `signed_map` or the unsigned one, by `method`: "search" (nearest_code's
// binary search), "table" (the CPU's search table, NOTE: [8-bit search
// table]) or the kernels' coding loops "baseline", "avx2", "avx512" (coding x
// against an absmax of 1); None where this CPU cannot run that loop.
std::optional<at::Tensor> codes_8bit(const at::Tensor& values, bool signed_map, const std::string& method) {
  TORCH_CHECK(values.scalar_type() == at::kFloat, "codes_8bit: float32 values");
  namespace q = lrsched_fused::states_8bit;
  const q::MapKind kind = signed_map ? q::MapKind::Signed : q::MapKind::Unsigned;
  const at::Tensor x = values.contiguous().cpu();
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kByte));
  const float* value = x.const_data_ptr<float>();
  uint8_t* code = out.mutable_data_ptr<uint8_t>();
  if (method == "search" || method == "table") {
    for (int64_t i = 0; i < x.numel(); ++i) {
      code[i] = static_cast<uint8_t>(method == "table" ? cpu::search_table(kind).code(value[i])
                                                       : q::nearest_code(q::host_map(kind), value[i]));
    }
    return out;
  }
  const std::map<std::string, cpu::CodingIsa> loops{
      {"baseline", cpu::CodingIsa::Baseline}, {"avx2", cpu::CodingIsa::Avx2}, {"avx512", cpu::CodingIsa::Avx512}};
  const auto loop = loops.find(method);
  TORCH_CHECK(loop != loops.end(), "codes_8bit: method must be search, table, baseline, avx2 or avx512, got ", method);
  std::optional<at::Tensor> result;
  if (cpu::code_values(loop->second, value, 1.0f, kind, code, x.numel())) {
    result = out;
  }
  return result;
}

// The coding loops' version the kernels run on this machine (NOTE: [CPU instruction sets]).
std::string coding_isa_8bit() {
  switch (cpu::coding_isa()) {
    case cpu::CodingIsa::Avx512:
      return "avx512";
    case cpu::CodingIsa::Avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

}  // namespace testing

#ifdef LRSCHED_FUSED_WITH_CUDA
namespace cuda {
std::map<std::string, int64_t> tensors_per_launch();  // csrc/cuda/fused_step_cuda.cu
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
  m.attr("ROUNDING_SEED") = layout::kRoundingSeed;
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
    py::dict coded;  // with states_8bit: each coded slot's map, each absmax slot's coded slot
    for (const lrsched_fused::StateSlot& slot : Op::kStates) {
      states.append(py::make_tuple(slot.name, slot.needs_flag));
      using lrsched_fused::SlotKind;
      if (slot.kind == SlotKind::State || slot.kind == SlotKind::SecondMoment) {
        coded[py::str(slot.name)] = slot.kind == SlotKind::State ? "signed" : "unsigned";
      } else if (slot.kind == SlotKind::Absmax) {
        coded[py::str(slot.name)] = Op::kStates[slot.coded].name;
      }
    }
    update_ops[py::str(Op::kName)] =
        py::dict(py::arg("flags") = flags, py::arg("states") = states, py::arg("coded") = coded,
                 py::arg("not_8bit") = Op::kNot8Bit);
  });
  m.attr("UPDATE_OPS") = update_ops;
  namespace q = lrsched_fused::states_8bit;  // NOTE: [8-bit states]
  m.attr("STATES_8BIT") = py::dict(
      py::arg("block") = q::kBlock, py::arg("min_elements") = q::kMinElements,
      py::arg("signed_map") = std::vector<float>(q::kSignedMap, q::kSignedMap + q::kCodes),
      py::arg("unsigned_map") = std::vector<float>(q::kUnsignedMap, q::kUnsignedMap + q::kCodes));
  m.attr("FIRST_LEAF") = layout::kFirstLeaf;
  namespace plan = lrsched_fused::chunk_plan;
  m.attr("CHUNK_ELEMENTS") = plan::kChunkElements;
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
  testing.def("chunk_plan", &lrsched_fused::testing::chunk_plan_of, py::arg("numels"),
              py::arg("tensors_per_launch"), py::arg("with_blocks") = true,
              "the CUDA launcher's launches and chunk plan, computed on the host");
  testing.def("philox", &lrsched_fused::testing::philox, py::arg("counter"), py::arg("key"),
              "Philox4x32-10 of a 4-word counter and a 2-word key (NOTE: [stochastic rounding])");
  testing.def("round_stochastic", &lrsched_fused::testing::round_stochastic_of, py::arg("values"),
              py::arg("randoms"), py::arg("dtype"), "float32 values rounded stochastically with the given words");
  testing.def("codes_8bit", &lrsched_fused::testing::codes_8bit, py::arg("values"), py::arg("signed_map"),
              py::arg("method"), "the 8-bit codes of normalized float32 values (NOTE: [8-bit states])");
  testing.def("coding_isa_8bit", &lrsched_fused::testing::coding_isa_8bit,
              "the 8-bit coding loops' version the kernels run here: baseline, avx2 or avx512");
#ifdef LRSCHED_FUSED_WITH_CUDA
  testing.def("cuda_tensors_per_launch", &lrsched_fused::cuda::tensors_per_launch,
              "the tensors one CUDA launch carries, per kind of launch (NOTE: [tensors in kernel arguments])");
#endif
}

