#pragma once
// The learning-rate schedules, written once for the CPU and the CUDA path.
//
// The state's layout: csrc/state_layout.h (NOTE: [schedule state layout]).
// Each leaf kind, its fields and its hooks: csrc/schedules/*.h (NOTE:
// [schedule kinds]). This file lists the kinds, reads a program and drives
// the leaves as torch's SequentialLR and ChainedScheduler drive theirs.
//
// NOTE: [schedule program]
// What the schedule is (never changes) travels with each op call as a float64
// list of at most kMaxProgramSize values, the "program":
//
//   [combinator, num_leaves, milestones (num_leaves - 1 of them, SequentialLR only),
//    then per leaf: kind, num_fields, fields...]
//
// A plain schedule is one leaf under Combinator::Single; SequentialLR and
// ChainedScheduler combine up to kMaxLeaves leaves. A leaf's fields are
// read once per hook, into its kind's struct (NOTE: [schedule fields]).
//
// The arithmetic follows torch/optim/lr_scheduler.py and transformers'
// optimization.py expression by expression (same operand order, float64), so
// the lrs agree to the last bit on the CPU and to ~1 ulp of cos()/pow() on CUDA.

#include <c10/macros/Macros.h>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "schedules/kind.h"
#include "schedules/torch_absolute.h"
#include "schedules/torch_chainable.h"
#include "schedules/torch_plateau.h"
#include "schedules/transformers.h"
#include "state_layout.h"

namespace lrsched_fused {

// The most values a program may hold, on every device: the CUDA kernel takes
// the program by value in its arguments. Schedules check it when they are built.
constexpr int64_t kMaxProgramSize = 96;

// The leaf kinds: KIND(enumerator, NAME exported as _C.KIND_<NAME>, kind struct).
// Their order is their number in the program.
#define LRSCHED_FOR_EACH_LEAF_KIND(KIND)                                          \
  KIND(Constant, CONSTANT, Constant)                                              \
  KIND(Step, STEP, StepLR)                                                        \
  KIND(Cosine, COSINE, CosineAnnealingLR)                                         \
  KIND(Plateau, PLATEAU, ReduceLROnPlateau)                                       \
  KIND(MultiStep, MULTI_STEP, MultiStepLR)                                        \
  KIND(Exponential, EXPONENTIAL, ExponentialLR)                                   \
  KIND(ConstantFactor, CONSTANT_FACTOR, ConstantLR)                               \
  KIND(Linear, LINEAR, LinearLR)                                                  \
  KIND(Polynomial, POLYNOMIAL, PolynomialLR)                                      \
  KIND(CosineRestarts, COSINE_RESTARTS, CosineAnnealingWarmRestarts)              \
  KIND(OneCycle, ONE_CYCLE, OneCycleLR)                                           \
  KIND(Cyclic, CYCLIC, CyclicLR)                                                  \
  KIND(ConstantWithWarmup, CONSTANT_WITH_WARMUP, ConstantWithWarmup)              \
  KIND(LinearWithWarmup, LINEAR_WITH_WARMUP, LinearWithWarmup)                    \
  KIND(CosineWithWarmup, COSINE_WITH_WARMUP, CosineWithWarmup)                    \
  KIND(CosineWithHardRestarts, COSINE_WITH_HARD_RESTARTS, CosineWithHardRestarts) \
  KIND(PolynomialDecayWithWarmup, POLYNOMIAL_DECAY_WITH_WARMUP, PolynomialDecayWithWarmup) \
  KIND(InverseSqrt, INVERSE_SQRT, InverseSqrt)                                    \
  KIND(CosineWarmupWithMinLr, COSINE_WARMUP_WITH_MIN_LR, CosineWarmupWithMinLr)   \
  KIND(WarmupStableDecay, WARMUP_STABLE_DECAY, WarmupStableDecay)

#define LRSCHED_KIND_ENUMERATOR(Kind, NAME, Schedule) Kind,
enum class ScheduleKind : int64_t { LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_ENUMERATOR) };
#undef LRSCHED_KIND_ENUMERATOR
#define LRSCHED_KIND_ONE(Kind, NAME, Schedule) +1
constexpr int64_t kLastScheduleKind = -1 LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_ONE);
#undef LRSCHED_KIND_ONE

// Every listed kind has every hook (NOTE: [schedule kinds]), with its signature.
namespace detail {
template <typename Schedule, typename = void>
struct HasConstruct : std::false_type {};
template <typename Schedule>
struct HasConstruct<Schedule, std::void_t<decltype(std::declval<const Schedule&>().construct(
                                  std::declval<const LeafState&>()))>> : std::true_type {};
template <typename Schedule, typename = void>
struct HasInitial : std::false_type {};
template <typename Schedule>
struct HasInitial<Schedule, std::void_t<decltype(std::declval<const Schedule&>().initial(
                                std::declval<const LeafState&>()))>> : std::true_type {};
template <typename Schedule, typename = void>
struct HasStep : std::false_type {};
template <typename Schedule>
struct HasStep<Schedule, std::void_t<decltype(std::declval<const Schedule&>().step(
                             std::declval<const LeafState&>(), 0.0, 0.0))>> : std::true_type {};
template <typename Schedule, typename = void>
struct HasRestart : std::false_type {};
template <typename Schedule>
struct HasRestart<Schedule, std::void_t<decltype(std::declval<const Schedule&>().restart(
                                std::declval<const LeafState&>(), 0.0))>> : std::true_type {};
}  // namespace detail

#define LRSCHED_CHECK_KIND(Kind, NAME, Schedule)                                                          \
  static_assert(detail::HasConstruct<Schedule>::value,                                                    \
                #Schedule " has no hook construct(const LeafState&) (NOTE: [schedule kinds])");           \
  static_assert(detail::HasInitial<Schedule>::value,                                                      \
                #Schedule " has no hook initial(const LeafState&) (NOTE: [schedule kinds])");             \
  static_assert(detail::HasStep<Schedule>::value,                                                         \
                #Schedule " has no hook step(const LeafState&, double epoch, double metric) "             \
                          "(NOTE: [schedule kinds])");                                                    \
  static_assert(detail::HasRestart<Schedule>::value,                                                      \
                #Schedule " has no hook restart(const LeafState&, double metric) (NOTE: [schedule kinds])");
LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_CHECK_KIND)
#undef LRSCHED_CHECK_KIND

enum class Combinator : int64_t { Single = 0, Sequential = 1, Chained = 2 };
constexpr int64_t kLastCombinator = static_cast<int64_t>(Combinator::Chained);

// The number of fields of a kind; -1 for MultiStep, which takes its milestones and gamma.
inline int64_t num_fields(ScheduleKind kind) {
  switch (kind) {
#define LRSCHED_KIND_COUNT(Kind, NAME, Schedule) \
  case ScheduleKind::Kind:                       \
    return Schedule::kCount;
    LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_COUNT)
#undef LRSCHED_KIND_COUNT
  }
  return 0;
}

// One leaf of a program: its kind, its fields' program values, its slice of the state.
struct Leaf {
  ScheduleKind kind;
  const double* values;
  int64_t num_values;
  LeafState state;

  // Calls hook(schedule) with the leaf's kind struct, its fields read. The
  // kind was checked on the host (check_schedule_program), so every value
  // has its case.
  template <typename Hook>
  C10_HOST_DEVICE void visit(const Hook& hook) const {
    switch (kind) {
#define LRSCHED_KIND_CASE(Kind, NAME, Schedule) \
  case ScheduleKind::Kind: {                    \
    Schedule schedule{};                        \
    schedule.read_fields(values, num_values);   \
    hook(schedule);                             \
    return;                                     \
  }
      LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_CASE)
#undef LRSCHED_KIND_CASE
    }
  }

  // The hooks, with the leaf's last_epoch kept here (NOTE: [schedule kinds]).
  C10_HOST_DEVICE void construct() const {
    state[layout::kLeafLastEpoch] = 0.0;
    visit([&](const auto& schedule) { schedule.construct(state); });
  }
  C10_HOST_DEVICE void initial() const {
    visit([&](const auto& schedule) { schedule.initial(state); });
  }
  C10_HOST_DEVICE void step(double metric) const {
    const double epoch = state[layout::kLeafLastEpoch] += 1.0;
    visit([&](const auto& schedule) { schedule.step(state, epoch, metric); });
  }
  C10_HOST_DEVICE void restart(double metric) const {
    state[layout::kLeafLastEpoch] = 0.0;
    visit([&](const auto& schedule) { schedule.restart(state, metric); });
  }
};

// Reads a program (NOTE: [schedule program]); it was checked on the host.
struct Program {
  const double* values;

  C10_HOST_DEVICE Combinator combinator() const { return static_cast<Combinator>(static_cast<int64_t>(values[0])); }
  C10_HOST_DEVICE int64_t num_leaves() const { return static_cast<int64_t>(values[1]); }
  C10_HOST_DEVICE int64_t num_milestones() const {
    return combinator() == Combinator::Sequential ? num_leaves() - 1 : 0;
  }
  C10_HOST_DEVICE double milestone(int64_t i) const { return values[2 + i]; }
  C10_HOST_DEVICE Leaf leaf(int64_t index, double* state, int64_t num_groups) const {
    int64_t at = 2 + num_milestones();
    for (int64_t l = 0; l < index; ++l) {
      at += 2 + static_cast<int64_t>(values[at + 1]);
    }
    return Leaf{static_cast<ScheduleKind>(static_cast<int64_t>(values[at])), values + at + 2,
                static_cast<int64_t>(values[at + 1]),
                LeafState{state + layout::leaf_offset(index), state, num_groups}};
  }

  // SequentialLR: the index of the leaf in charge at `epoch` (bisect_right).
  C10_HOST_DEVICE int64_t sequential_index(double epoch) const {
    int64_t index = 0;
    while (index < num_milestones() && milestone(index) <= epoch) {
      ++index;
    }
    return index;
  }
};

// What torch's constructors do, from a state whose group slots hold each
// group's lr (== base_lr), momentum and the schedule's per-group constants:
// every leaf's construction, then the initial step of the leaf in charge
// (SequentialLR, which resets the lrs to initial_lr first) or of each leaf in
// order (a single schedule, ChainedScheduler).
C10_HOST_DEVICE inline void initialize_schedule(double* state, int64_t num_groups, Program program) {
  state[layout::kLastEpoch] = 0.0;
  const int64_t leaves = program.num_leaves();
  for (int64_t l = 0; l < leaves; ++l) {
    program.leaf(l, state, num_groups).construct();
  }
  if (program.combinator() == Combinator::Sequential) {
    program.leaf(program.sequential_index(0.0), state, num_groups).initial();
    return;
  }
  for (int64_t l = 0; l < leaves; ++l) {
    program.leaf(l, state, num_groups).initial();
  }
}

// One scheduler.step() of the whole schedule. `metric` is read only by
// ReduceLROnPlateau leaves.
C10_HOST_DEVICE inline void advance_schedule(double* state, int64_t num_groups, Program program, double metric) {
  const double epoch = state[layout::kLastEpoch] += 1.0;
  if (program.combinator() == Combinator::Sequential) {
    const int64_t index = program.sequential_index(epoch);
    const Leaf leaf = program.leaf(index, state, num_groups);
    if (index > 0 && program.milestone(index - 1) == epoch) {
      leaf.restart(metric);  // torch's _update_lr(0) of the incoming scheduler
    } else {
      leaf.step(metric);
    }
    return;
  }
  for (int64_t l = 0; l < program.num_leaves(); ++l) {  // Single, Chained: every leaf in order
    program.leaf(l, state, num_groups).step(metric);
  }
}

}  // namespace lrsched_fused
