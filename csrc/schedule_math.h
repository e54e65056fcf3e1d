#pragma once
// The learning-rate schedules, written once for the CPU and the CUDA path.
//
// The state's layout: csrc/state_layout.h (NOTE: [schedule state layout]).
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
// decoded once, into its kind's struct (NOTE: [schedule fields]).
//
// The arithmetic below follows torch/optim/lr_scheduler.py and transformers'
// optimization.py expression by expression (same operand order, float64), so
// the lrs agree to the last bit on the CPU and to ~1 ulp of cos()/pow() on CUDA.

#include <c10/macros/Macros.h>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "state_layout.h"

namespace lrsched_fused {


// The most values a program may hold, on every device: the CUDA kernel takes
// the program by value in its arguments. Schedules check it when they are built.
constexpr int64_t kMaxProgramSize = 96;

// The choices of the string-valued fields, in the order of the Python
// schedules' choice lists (lrsched_fused/schedules.py).
enum class PlateauMode : int64_t { Min, Max };
enum class ThresholdMode : int64_t { Rel, Abs };
enum class AnnealStrategy : int64_t { Cos, Linear };
enum class CyclicMode : int64_t { Triangular, Triangular2, ExpRange };
enum class WsdShape : int64_t { Linear, Cosine, OneMinusSqrt };  // "linear", "cosine", "1-sqrt"

// NOTE: [schedule fields]
// Each leaf kind's fields are declared once, as a list below: the program
// carries them in that order, `decode` reads them into the kind's struct (the
// only place that reads a leaf's values by position), and their names are
// exported to Python (_C.SCHEDULE_FIELDS), where each schedule is a frozen
// dataclass declaring the same fields in the same order
// (tests/test_schedules.py ties the two). Counts and steps are
// float64, as Python computes with them. A Python None travels as NaN; the
// math says what it stands for (`is_none`).

namespace detail {
template <typename T>
C10_HOST_DEVICE constexpr T decode_field(double value) {
  if constexpr (std::is_enum_v<T>) {
    return static_cast<T>(static_cast<int64_t>(value));
  } else if constexpr (std::is_same_v<T, bool>) {
    return value != 0.0;
  } else {
    return value;
  }
}
}  // namespace detail

#define LRSCHED_FIELD_MEMBER(type, name) type name;
#define LRSCHED_FIELD_ONE(type, name) +1
#define LRSCHED_FIELD_NAME(type, name) #name,
#define LRSCHED_FIELD_DECODE(type, name) fields.name = detail::decode_field<type>(values[at++]);

// A struct with the listed fields, their count and names, and `decode` from a leaf's program values.
#define LRSCHED_DEFINE_FIELDS(Struct, FIELDS)                                          \
  struct Struct {                                                                      \
    FIELDS(LRSCHED_FIELD_MEMBER)                                                       \
    static constexpr int64_t kCount = 0 FIELDS(LRSCHED_FIELD_ONE);                     \
    static constexpr std::array<const char*, kCount> kNames{{FIELDS(LRSCHED_FIELD_NAME)}}; \
    C10_HOST_DEVICE static Struct decode(const double* values, int64_t /*count*/) {    \
      Struct fields{};                                                                 \
      int64_t at = 0;                                                                  \
      FIELDS(LRSCHED_FIELD_DECODE)                                                     \
      return fields;                                                                   \
    }                                                                                  \
  };

// torch.optim.lr_scheduler's schedules
#define LRSCHED_STEP_FIELDS(FIELD) FIELD(double, step_size) FIELD(double, gamma)
#define LRSCHED_COSINE_FIELDS(FIELD) FIELD(double, T_max) FIELD(double, eta_min)
#define LRSCHED_PLATEAU_FIELDS(FIELD)                                                          \
  FIELD(PlateauMode, mode) FIELD(double, factor) FIELD(double, patience) FIELD(double, threshold) \
  FIELD(ThresholdMode, threshold_mode) FIELD(double, cooldown) FIELD(double, eps)
#define LRSCHED_EXPONENTIAL_FIELDS(FIELD) FIELD(double, gamma)
#define LRSCHED_CONSTANT_FACTOR_FIELDS(FIELD) FIELD(double, factor) FIELD(double, total_iters)
#define LRSCHED_LINEAR_FIELDS(FIELD) FIELD(double, start_factor) FIELD(double, end_factor) FIELD(double, total_iters)
#define LRSCHED_POLYNOMIAL_FIELDS(FIELD) FIELD(double, total_iters) FIELD(double, power)
#define LRSCHED_COSINE_RESTARTS_FIELDS(FIELD) FIELD(double, T_0) FIELD(double, T_mult) FIELD(double, eta_min)
#define LRSCHED_ONE_CYCLE_FIELDS(FIELD)                                                                 \
  FIELD(double, total_steps) FIELD(double, pct_start) FIELD(AnnealStrategy, anneal_strategy)             \
  FIELD(bool, cycle_momentum) FIELD(double, div_factor) FIELD(double, final_div_factor) FIELD(bool, three_phase)
#define LRSCHED_CYCLIC_FIELDS(FIELD)                                                    \
  FIELD(double, step_size_up) FIELD(double, step_size_down) /* None: step_size_up */    \
  FIELD(CyclicMode, mode) FIELD(double, gamma) FIELD(bool, cycle_momentum)
// transformers' get_scheduler schedules (LambdaLR of the step)
#define LRSCHED_CONSTANT_WITH_WARMUP_FIELDS(FIELD) FIELD(double, num_warmup_steps)
#define LRSCHED_LINEAR_WITH_WARMUP_FIELDS(FIELD) FIELD(double, num_warmup_steps) FIELD(double, num_training_steps)
#define LRSCHED_COSINE_WITH_WARMUP_FIELDS(FIELD)                                        \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles) \
  FIELD(double, min_lr_rate) FIELD(double, min_lr) /* None: min_lr_rate applies */
#define LRSCHED_COSINE_WITH_HARD_RESTARTS_FIELDS(FIELD) \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles)
#define LRSCHED_POLYNOMIAL_DECAY_WITH_WARMUP_FIELDS(FIELD)                                   \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, lr_end)    \
  FIELD(double, power) FIELD(double, lr_init) /* None: the group's initial lr */
#define LRSCHED_INVERSE_SQRT_FIELDS(FIELD) \
  FIELD(double, num_warmup_steps) FIELD(double, timescale) /* None: num_warmup_steps or 10_000 */
#define LRSCHED_COSINE_WARMUP_WITH_MIN_LR_FIELDS(FIELD)                                          \
  FIELD(double, num_warmup_steps) FIELD(double, num_training_steps) FIELD(double, num_cycles)    \
  FIELD(double, min_lr_rate) FIELD(double, min_lr) FIELD(double, warmup_lr_rate) /* None: (step + 1) / W */
#define LRSCHED_WARMUP_STABLE_DECAY_FIELDS(FIELD)                                                   \
  FIELD(double, num_warmup_steps) FIELD(double, num_decay_steps) FIELD(double, num_training_steps)  \
  FIELD(double, num_stable_steps) /* None: num_training_steps - num_warmup_steps - num_decay_steps */ \
  FIELD(WsdShape, warmup_type) FIELD(WsdShape, decay_type) FIELD(double, min_lr_ratio) FIELD(double, num_cycles)

LRSCHED_DEFINE_FIELDS(StepFields, LRSCHED_STEP_FIELDS)
LRSCHED_DEFINE_FIELDS(CosineFields, LRSCHED_COSINE_FIELDS)
LRSCHED_DEFINE_FIELDS(PlateauFields, LRSCHED_PLATEAU_FIELDS)
LRSCHED_DEFINE_FIELDS(ExponentialFields, LRSCHED_EXPONENTIAL_FIELDS)
LRSCHED_DEFINE_FIELDS(ConstantFactorFields, LRSCHED_CONSTANT_FACTOR_FIELDS)
LRSCHED_DEFINE_FIELDS(LinearFields, LRSCHED_LINEAR_FIELDS)
LRSCHED_DEFINE_FIELDS(PolynomialFields, LRSCHED_POLYNOMIAL_FIELDS)
LRSCHED_DEFINE_FIELDS(CosineRestartsFields, LRSCHED_COSINE_RESTARTS_FIELDS)
LRSCHED_DEFINE_FIELDS(OneCycleFields, LRSCHED_ONE_CYCLE_FIELDS)
LRSCHED_DEFINE_FIELDS(CyclicFields, LRSCHED_CYCLIC_FIELDS)
LRSCHED_DEFINE_FIELDS(ConstantWithWarmupFields, LRSCHED_CONSTANT_WITH_WARMUP_FIELDS)
LRSCHED_DEFINE_FIELDS(LinearWithWarmupFields, LRSCHED_LINEAR_WITH_WARMUP_FIELDS)
LRSCHED_DEFINE_FIELDS(CosineWithWarmupFields, LRSCHED_COSINE_WITH_WARMUP_FIELDS)
LRSCHED_DEFINE_FIELDS(CosineWithHardRestartsFields, LRSCHED_COSINE_WITH_HARD_RESTARTS_FIELDS)
LRSCHED_DEFINE_FIELDS(PolynomialDecayWithWarmupFields, LRSCHED_POLYNOMIAL_DECAY_WITH_WARMUP_FIELDS)
LRSCHED_DEFINE_FIELDS(InverseSqrtFields, LRSCHED_INVERSE_SQRT_FIELDS)
LRSCHED_DEFINE_FIELDS(CosineWarmupWithMinLrFields, LRSCHED_COSINE_WARMUP_WITH_MIN_LR_FIELDS)
LRSCHED_DEFINE_FIELDS(WarmupStableDecayFields, LRSCHED_WARMUP_STABLE_DECAY_FIELDS)

// A constant lr (schedule=None) has no fields.
struct ConstantFields {
  static constexpr int64_t kCount = 0;
  static constexpr std::array<const char*, 0> kNames{};
  C10_HOST_DEVICE static ConstantFields decode(const double* /*values*/, int64_t /*count*/) {
    return ConstantFields{};
  }
};

// MultiStepLR's milestones are as many as the program says: milestones..., gamma.
struct MultiStepFields {
  const double* milestones;  // sorted, a repeated one repeated
  int64_t num_milestones;
  double gamma;
  static constexpr int64_t kCount = -1;  // variable
  static constexpr std::array<const char*, 2> kNames{{"milestones", "gamma"}};
  C10_HOST_DEVICE static MultiStepFields decode(const double* values, int64_t count) {
    return MultiStepFields{values, count - 1, values[count - 1]};
  }
};

// The leaf kinds: KIND(enumerator, NAME exported as _C.KIND_<NAME>, union member, fields struct).
// Their order is their number in the program.
#define LRSCHED_FOR_EACH_LEAF_KIND(KIND)                                                         \
  KIND(Constant, CONSTANT, constant, ConstantFields)                                             \
  KIND(Step, STEP, step, StepFields)                                                             \
  KIND(Cosine, COSINE, cosine, CosineFields)                                                     \
  KIND(Plateau, PLATEAU, plateau, PlateauFields)                                                 \
  KIND(MultiStep, MULTI_STEP, multi_step, MultiStepFields)                                       \
  KIND(Exponential, EXPONENTIAL, exponential, ExponentialFields)                                 \
  KIND(ConstantFactor, CONSTANT_FACTOR, constant_factor, ConstantFactorFields)                   \
  KIND(Linear, LINEAR, linear, LinearFields)                                                     \
  KIND(Polynomial, POLYNOMIAL, polynomial, PolynomialFields)                                     \
  KIND(CosineRestarts, COSINE_RESTARTS, cosine_restarts, CosineRestartsFields)                   \
  KIND(OneCycle, ONE_CYCLE, one_cycle, OneCycleFields)                                           \
  KIND(Cyclic, CYCLIC, cyclic, CyclicFields)                                                     \
  KIND(ConstantWithWarmup, CONSTANT_WITH_WARMUP, constant_with_warmup, ConstantWithWarmupFields) \
  KIND(LinearWithWarmup, LINEAR_WITH_WARMUP, linear_with_warmup, LinearWithWarmupFields)         \
  KIND(CosineWithWarmup, COSINE_WITH_WARMUP, cosine_with_warmup, CosineWithWarmupFields)         \
  KIND(CosineWithHardRestarts, COSINE_WITH_HARD_RESTARTS, cosine_with_hard_restarts,             \
       CosineWithHardRestartsFields)                                                             \
  KIND(PolynomialDecayWithWarmup, POLYNOMIAL_DECAY_WITH_WARMUP, polynomial_decay_with_warmup,    \
       PolynomialDecayWithWarmupFields)                                                          \
  KIND(InverseSqrt, INVERSE_SQRT, inverse_sqrt, InverseSqrtFields)                               \
  KIND(CosineWarmupWithMinLr, COSINE_WARMUP_WITH_MIN_LR, cosine_warmup_with_min_lr,              \
       CosineWarmupWithMinLrFields)                                                              \
  KIND(WarmupStableDecay, WARMUP_STABLE_DECAY, warmup_stable_decay, WarmupStableDecayFields)

#define LRSCHED_KIND_ENUMERATOR(Kind, NAME, member, Fields) Kind,
enum class ScheduleKind : int64_t { LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_ENUMERATOR) };
#undef LRSCHED_KIND_ENUMERATOR
#define LRSCHED_KIND_ONE(Kind, NAME, member, Fields) +1
constexpr int64_t kLastScheduleKind = -1 LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_ONE);
#undef LRSCHED_KIND_ONE

enum class Combinator : int64_t { Single = 0, Sequential = 1, Chained = 2 };
constexpr int64_t kLastCombinator = static_cast<int64_t>(Combinator::Chained);

// The number of fields of a kind; -1 for MultiStep, which takes its milestones and gamma.
inline int64_t num_fields(ScheduleKind kind) {
  switch (kind) {
#define LRSCHED_KIND_COUNT(Kind, NAME, member, Fields) \
  case ScheduleKind::Kind:                             \
    return Fields::kCount;
    LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_COUNT)
#undef LRSCHED_KIND_COUNT
  }
  return 0;
}

// The decoded fields of one leaf: the member of its kind.
union LeafFields {
#define LRSCHED_KIND_MEMBER(Kind, NAME, member, Fields) Fields member;
  LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_MEMBER)
#undef LRSCHED_KIND_MEMBER
};

C10_HOST_DEVICE inline LeafFields decode_fields(ScheduleKind kind, const double* values, int64_t count) {
  LeafFields fields{};
  switch (kind) {
#define LRSCHED_KIND_DECODE(Kind, NAME, member, Fields) \
  case ScheduleKind::Kind:                              \
    fields.member = Fields::decode(values, count);      \
    break;
    LRSCHED_FOR_EACH_LEAF_KIND(LRSCHED_KIND_DECODE)
#undef LRSCHED_KIND_DECODE
  }
  return fields;
}

// One leaf of a program, decoded, with its slice of the state.
struct Leaf {
  ScheduleKind kind;
  LeafFields fields;
  double* state;  // the leaf's kLeafStride slots
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
  C10_HOST_DEVICE Leaf leaf(int64_t index, double* state) const {
    int64_t at = 2 + num_milestones();
    for (int64_t l = 0; l < index; ++l) {
      at += 2 + static_cast<int64_t>(values[at + 1]);
    }
    const auto kind = static_cast<ScheduleKind>(static_cast<int64_t>(values[at]));
    return Leaf{kind, decode_fields(kind, values + at + 2, static_cast<int64_t>(values[at + 1])),
                state + layout::leaf_offset(index)};
  }
};

namespace detail {

constexpr double kPi = 3.141592653589793;  // == math.pi

// Python's truth value of `a % b == 0` for integral a, b: the sign convention of
// the remainder does not change whether it is zero.
C10_HOST_DEVICE inline bool divides(double divisor, double value) {
  return ::fmod(value, divisor) == 0.0;
}

// Python's max(a, b): a unless b is greater (max(0.0, -0.0) is 0.0).
C10_HOST_DEVICE inline double py_max(double a, double b) {
  return b > a ? b : a;
}

// Python's float a % b: the remainder takes the sign of b.
C10_HOST_DEVICE inline double py_mod(double a, double b) {
  const double remainder = ::fmod(a, b);
  if (remainder == 0.0) {
    return ::copysign(0.0, b);
  }
  return (remainder < 0.0) != (b < 0.0) ? remainder + b : remainder;
}

// A field given as None in Python, which travels as NaN (NOTE: [schedule fields]).
C10_HOST_DEVICE inline bool is_none(double field) {
  return field != field;
}

C10_HOST_DEVICE inline double* group_slots(double* state, int64_t group) {
  return state + layout::group_offset(group);
}

// How many of MultiStepLR's sorted milestones are == epoch, or <= epoch.
C10_HOST_DEVICE inline int64_t count_milestones(const MultiStepFields& fields, double epoch, bool up_to) {
  int64_t count = 0;
  for (int64_t i = 0; i < fields.num_milestones; ++i) {
    const double m = fields.milestones[i];
    count += up_to ? (m <= epoch) : (m == epoch);
  }
  return count;
}

C10_HOST_DEVICE inline void scale_lrs(double* state, int64_t num_groups, double factor) {
  for (int64_t g = 0; g < num_groups; ++g) {
    double& lr = group_slots(state, g)[layout::kGroupLr];
    lr = lr * factor;
  }
}

// torch's recursive CosineAnnealingLR (no clamping past T_max: period 2 * T_max).
C10_HOST_DEVICE inline void cosine_annealing_step(const CosineFields& fields, double* state, int64_t num_groups,
                                                  double epoch) {
  const double t_max = fields.T_max;
  const double eta_min = fields.eta_min;
  if (divides(2.0 * t_max, epoch - 1.0 - t_max)) {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = group_slots(state, g);
      slots[layout::kGroupLr] = slots[layout::kGroupLr] +
          (slots[layout::kGroupBaseLr] - eta_min) * (1.0 - ::cos(kPi / t_max)) / 2.0;
    }
    return;
  }
  const double ratio = (1.0 + ::cos(kPi * epoch / t_max)) / (1.0 + ::cos(kPi * (epoch - 1.0) / t_max));
  for (int64_t g = 0; g < num_groups; ++g) {
    double& lr = group_slots(state, g)[layout::kGroupLr];
    lr = ratio * (lr - eta_min) + eta_min;
  }
}

// torch's ReduceLROnPlateau.step(metric). A NaN metric compares false, so it is
// a bad epoch, as in torch.
C10_HOST_DEVICE inline void plateau_step(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  const PlateauFields& fields = leaf.fields.plateau;
  double& best = leaf.state[layout::kPlateauBest];
  double& bad_epochs = leaf.state[layout::kPlateauBadEpochs];
  double& cooldown_counter = leaf.state[layout::kPlateauCooldown];

  const bool rel = fields.threshold_mode == ThresholdMode::Rel;
  bool is_better;
  if (fields.mode == PlateauMode::Min) {
    is_better = rel ? metric < best * (1.0 - fields.threshold) : metric < best - fields.threshold;
  } else {
    is_better = rel ? metric > best * (fields.threshold + 1.0) : metric > best + fields.threshold;
  }
  if (is_better) {
    best = metric;
    bad_epochs = 0.0;
  } else {
    bad_epochs += 1.0;
  }
  if (cooldown_counter > 0.0) {
    cooldown_counter -= 1.0;
    bad_epochs = 0.0;
  }
  if (bad_epochs > fields.patience) {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = group_slots(state, g);
      const double old_lr = slots[layout::kGroupLr];
      const double scaled = old_lr * fields.factor;
      const double min_lr = slots[layout::kGroupMinLr];
      const double new_lr = scaled < min_lr ? min_lr : scaled;  // Python's max(scaled, min_lr)
      if (old_lr - new_lr > fields.eps) {
        slots[layout::kGroupLr] = new_lr;
      }
    }
    cooldown_counter = fields.cooldown;
    bad_epochs = 0.0;
  }
}

// CosineAnnealingWarmRestarts.get_lr(): absolute, from base_lr, T_cur and T_i.
C10_HOST_DEVICE inline void cosine_restarts_lrs(const Leaf& leaf, double* state, int64_t num_groups) {
  const double eta_min = leaf.fields.cosine_restarts.eta_min;
  const double t_cur = leaf.state[layout::kRestartsTCur];
  const double t_i = leaf.state[layout::kRestartsTI];
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    slots[layout::kGroupLr] =
        eta_min + (slots[layout::kGroupBaseLr] - eta_min) * (1.0 + ::cos(kPi * t_cur / t_i)) / 2.0;
  }
}

C10_HOST_DEVICE inline double one_cycle_anneal(bool linear, double start, double end, double pct) {
  if (linear) {
    return (end - start) * pct + start;
  }
  const double cos_out = ::cos(kPi * pct) + 1.0;
  return end + (start - end) / 2.0 * cos_out;
}

// OneCycleLR.get_lr() at step `step_num`: lr (and momentum) of every group.
C10_HOST_DEVICE inline void one_cycle_lrs(const OneCycleFields& fields, double* state, int64_t num_groups,
                                          double step_num) {
  const double total_steps = fields.total_steps;
  const double pct_start = fields.pct_start;
  const bool linear = fields.anneal_strategy == AnnealStrategy::Linear;
  // The phases: end_step, and the group slots the lr and momentum go from and to.
  const int64_t num_phases = fields.three_phase ? 3 : 2;
  double end_steps[3];
  int64_t lr_from[3], lr_to[3], momentum_from[3], momentum_to[3];
  using namespace layout;
  end_steps[0] = pct_start * total_steps - 1.0;
  lr_from[0] = kGroupBaseLr, lr_to[0] = kGroupMaxLr;
  momentum_from[0] = kGroupMaxMomentum, momentum_to[0] = kGroupBaseMomentum;
  if (fields.three_phase) {
    end_steps[1] = 2.0 * pct_start * total_steps - 2.0;
    lr_from[1] = kGroupMaxLr, lr_to[1] = kGroupBaseLr;
    momentum_from[1] = kGroupBaseMomentum, momentum_to[1] = kGroupMaxMomentum;
    end_steps[2] = total_steps - 1.0;
    lr_from[2] = kGroupBaseLr, lr_to[2] = kGroupFinalLr;
    momentum_from[2] = kGroupMaxMomentum, momentum_to[2] = kGroupMaxMomentum;
  } else {
    end_steps[1] = total_steps - 1.0;
    lr_from[1] = kGroupMaxLr, lr_to[1] = kGroupFinalLr;
    momentum_from[1] = kGroupBaseMomentum, momentum_to[1] = kGroupMaxMomentum;
  }
  double start_step = 0.0;
  int64_t phase = 0;
  for (; phase < num_phases - 1 && !(step_num <= end_steps[phase]); ++phase) {
    start_step = end_steps[phase];
  }
  const double pct = (step_num - start_step) / (end_steps[phase] - start_step);
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    slots[kGroupLr] = one_cycle_anneal(linear, slots[lr_from[phase]], slots[lr_to[phase]], pct);
    if (fields.cycle_momentum) {
      slots[kGroupMomentum] = one_cycle_anneal(linear, slots[momentum_from[phase]], slots[momentum_to[phase]], pct);
    }
  }
}

// CyclicLR.get_lr() at `epoch`: lr (and momentum) of every group.
C10_HOST_DEVICE inline void cyclic_lrs(const CyclicFields& fields, double* state, int64_t num_groups, double epoch) {
  const double step_size_up = fields.step_size_up;
  const double step_size_down = is_none(fields.step_size_down) ? step_size_up : fields.step_size_down;
  const double total_size = step_size_up + step_size_down;
  const double step_ratio = step_size_up / total_size;
  const double cycle = ::floor(1.0 + epoch / total_size);
  const double x = 1.0 + epoch / total_size - cycle;
  const double scale_factor = x <= step_ratio ? x / step_ratio : (x - 1.0) / (step_ratio - 1.0);
  double scale;  // torch's scale_fn: by cycle for the triangular modes, by iteration for exp_range
  switch (fields.mode) {
    case CyclicMode::Triangular:
      scale = 1.0;
      break;
    case CyclicMode::Triangular2:
      scale = 1.0 / ::pow(2.0, cycle - 1.0);
      break;
    default:
      scale = ::pow(fields.gamma, epoch);
      break;
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    const double base_lr = slots[layout::kGroupBaseLr];
    const double base_height = (slots[layout::kGroupMaxLr] - base_lr) * scale_factor;
    slots[layout::kGroupLr] = base_lr + base_height * scale;
    if (fields.cycle_momentum) {
      const double max_momentum = slots[layout::kGroupMaxMomentum];
      const double momentum_height = (max_momentum - slots[layout::kGroupBaseMomentum]) * scale_factor;
      slots[layout::kGroupMomentum] = max_momentum - momentum_height * scale;
    }
  }
}

// ---------------------------------------------------------------------------
// NOTE: [transformers schedules]
// transformers.get_scheduler's schedules are LambdaLR(optimizer, lr_lambda):
// lr = initial_lr * lr_lambda(last_epoch), absolute from the group's initial
// lr at every step. Each function below is the lr_lambda of
// transformers/optimization.py (`_get_*_lr_lambda`), with its Python
// operations in the same order: int arithmetic on step counts is exact in
// float64, `float(a) / float(max(1, b))` is a / py_max(1.0, b), `max(0, f)`
// is py_max(0.0, f) (the product with the lr is the same), and `x ** p`,
// `math.cos`, `math.sqrt` are the C library's pow, cos, sqrt, as CPython's.
// A lambda that transformers builds from `optimizer.defaults["lr"]`
// (PolynomialDecayWithWarmup's lr_init, a min_lr given absolutely) takes the
// group's initial lr instead unless the field is given; the two are equal when
// the groups use the optimizer's lr.

C10_HOST_DEVICE inline double linear_warmup(double step, double num_warmup_steps) {
  return step / py_max(1.0, num_warmup_steps);
}

// A factor in [0, 1] rescaled to end at `floor` instead of 0, clipped at 0.
C10_HOST_DEVICE inline double rescaled_to_floor(double factor, double floor) {
  return py_max(0.0, factor * (1.0 - floor) + floor);
}

// The progress of the decay after the warmup: float(step - W) / float(max(1, T - W)).
C10_HOST_DEVICE inline double decay_progress(double step, double num_warmup_steps, double num_training_steps) {
  return (step - num_warmup_steps) / py_max(1.0, num_training_steps - num_warmup_steps);
}

// 0.5 * (1 + cos(2 pi num_cycles progress)): from 1 at progress 0; to 0 at progress 1 for num_cycles 0.5.
C10_HOST_DEVICE inline double cosine_wave(double num_cycles, double progress) {
  return 0.5 * (1.0 + ::cos(kPi * num_cycles * 2.0 * progress));
}

C10_HOST_DEVICE inline double resolved_min_lr_rate(double min_lr_rate, double min_lr, double initial_lr) {
  return is_none(min_lr) ? min_lr_rate : min_lr / initial_lr;
}

C10_HOST_DEVICE inline double linear_with_warmup_lambda(const LinearWithWarmupFields& f, double step) {
  if (step < f.num_warmup_steps) {
    return linear_warmup(step, f.num_warmup_steps);
  }
  return py_max(0.0, (f.num_training_steps - step) / py_max(1.0, f.num_training_steps - f.num_warmup_steps));
}

C10_HOST_DEVICE inline double cosine_with_warmup_lambda(const CosineWithWarmupFields& f, double step,
                                                        double initial_lr) {
  if (step < f.num_warmup_steps) {
    return linear_warmup(step, f.num_warmup_steps);
  }
  const double progress = decay_progress(step, f.num_warmup_steps, f.num_training_steps);
  return rescaled_to_floor(cosine_wave(f.num_cycles, progress),
                           resolved_min_lr_rate(f.min_lr_rate, f.min_lr, initial_lr));
}

C10_HOST_DEVICE inline double cosine_with_hard_restarts_lambda(const CosineWithHardRestartsFields& f, double step) {
  if (step < f.num_warmup_steps) {
    return linear_warmup(step, f.num_warmup_steps);
  }
  const double progress = decay_progress(step, f.num_warmup_steps, f.num_training_steps);
  if (progress >= 1.0) {
    return 0.0;
  }
  return py_max(0.0, 0.5 * (1.0 + ::cos(kPi * py_mod(f.num_cycles * progress, 1.0))));
}

C10_HOST_DEVICE inline double polynomial_decay_with_warmup_lambda(const PolynomialDecayWithWarmupFields& f,
                                                                  double step, double initial_lr) {
  const double lr_init = is_none(f.lr_init) ? initial_lr : f.lr_init;
  if (step < f.num_warmup_steps) {
    return linear_warmup(step, f.num_warmup_steps);
  }
  if (step > f.num_training_steps) {
    return f.lr_end / lr_init;
  }
  const double lr_range = lr_init - f.lr_end;
  const double decay_steps = f.num_training_steps - f.num_warmup_steps;
  const double pct_remaining = 1.0 - (step - f.num_warmup_steps) / decay_steps;
  const double decay = lr_range * ::pow(pct_remaining, f.power) + f.lr_end;
  return decay / lr_init;
}

C10_HOST_DEVICE inline double inverse_sqrt_lambda(const InverseSqrtFields& f, double step) {
  if (step < f.num_warmup_steps) {
    return linear_warmup(step, f.num_warmup_steps);
  }
  const double timescale =
      is_none(f.timescale) ? (f.num_warmup_steps != 0.0 ? f.num_warmup_steps : 10000.0) : f.timescale;
  const double shift = timescale - f.num_warmup_steps;
  return 1.0 / ::sqrt((step + shift) / timescale);
}

// Its lambda converts the counts with float() first, hence the + 1.0 terms.
C10_HOST_DEVICE inline double cosine_warmup_with_min_lr_lambda(const CosineWarmupWithMinLrFields& f, double step,
                                                               double initial_lr) {
  if (step < f.num_warmup_steps) {
    if (is_none(f.warmup_lr_rate)) {
      return (step + 1.0) / py_max(1.0, f.num_warmup_steps);
    }
    return f.warmup_lr_rate + (1.0 - f.warmup_lr_rate) * step / py_max(1.0, f.num_warmup_steps - 1.0);
  }
  const double progress = (step - f.num_warmup_steps + 1.0) / py_max(1.0, f.num_training_steps - f.num_warmup_steps);
  return rescaled_to_floor(cosine_wave(f.num_cycles, progress),
                           resolved_min_lr_rate(f.min_lr_rate, f.min_lr, initial_lr));
}

C10_HOST_DEVICE inline double warmup_stable_decay_lambda(const WarmupStableDecayFields& f, double step) {
  const double warmup = f.num_warmup_steps;
  const double stable = is_none(f.num_stable_steps) ? f.num_training_steps - warmup - f.num_decay_steps
                                                    : f.num_stable_steps;
  if (step < warmup) {
    const double progress = step / py_max(1.0, warmup);
    double factor;
    switch (f.warmup_type) {
      case WsdShape::Linear:
        factor = progress;
        break;
      case WsdShape::Cosine:
        factor = 0.5 * (1.0 - ::cos(kPi * progress));
        break;
      default:
        factor = 1.0 - ::sqrt(1.0 - progress);
        break;
    }
    return rescaled_to_floor(factor, f.min_lr_ratio);
  }
  if (step < warmup + stable) {
    return 1.0;
  }
  if (step < warmup + stable + f.num_decay_steps) {
    const double progress = (step - warmup - stable) / py_max(1.0, f.num_decay_steps);
    double factor;
    switch (f.decay_type) {
      case WsdShape::Linear:
        factor = 1.0 - progress;
        break;
      case WsdShape::Cosine:
        factor = cosine_wave(f.num_cycles, progress);
        break;
      default:
        factor = 1.0 - ::sqrt(progress);
        break;
    }
    return rescaled_to_floor(factor, f.min_lr_ratio);
  }
  return f.min_lr_ratio;
}

// Sets *factor to the lr_lambda of a transformers schedule at `step`, for a
// group whose initial lr is `initial_lr`; false for the other kinds.
C10_HOST_DEVICE inline bool transformers_lambda(const Leaf& leaf, double step, double initial_lr, double* factor) {
  const LeafFields& f = leaf.fields;
  switch (leaf.kind) {
    case ScheduleKind::ConstantWithWarmup:
      *factor = step < f.constant_with_warmup.num_warmup_steps
          ? linear_warmup(step, f.constant_with_warmup.num_warmup_steps) : 1.0;
      return true;
    case ScheduleKind::LinearWithWarmup:
      *factor = linear_with_warmup_lambda(f.linear_with_warmup, step);
      return true;
    case ScheduleKind::CosineWithWarmup:
      *factor = cosine_with_warmup_lambda(f.cosine_with_warmup, step, initial_lr);
      return true;
    case ScheduleKind::CosineWithHardRestarts:
      *factor = cosine_with_hard_restarts_lambda(f.cosine_with_hard_restarts, step);
      return true;
    case ScheduleKind::PolynomialDecayWithWarmup:
      *factor = polynomial_decay_with_warmup_lambda(f.polynomial_decay_with_warmup, step, initial_lr);
      return true;
    case ScheduleKind::InverseSqrt:
      *factor = inverse_sqrt_lambda(f.inverse_sqrt, step);
      return true;
    case ScheduleKind::CosineWarmupWithMinLr:
      *factor = cosine_warmup_with_min_lr_lambda(f.cosine_warmup_with_min_lr, step, initial_lr);
      return true;
    case ScheduleKind::WarmupStableDecay:
      *factor = warmup_stable_decay_lambda(f.warmup_stable_decay, step);
      return true;
    default:
      return false;
  }
}

// LambdaLR.get_lr() at `step` for a transformers schedule: base_lr * lr_lambda(step).
// Returns false, changing nothing, for the other kinds.
C10_HOST_DEVICE inline bool transformers_lrs(const Leaf& leaf, double* state, int64_t num_groups, double step) {
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    const double base_lr = slots[layout::kGroupBaseLr];
    double factor;
    if (!transformers_lambda(leaf, step, base_lr, &factor)) {
      return false;
    }
    slots[layout::kGroupLr] = base_lr * factor;
  }
  return true;
}

// get_lr() at last_epoch 0 of the leaves that set the lr absolutely (no-op for the others).
C10_HOST_DEVICE inline void absolute_lrs_at_zero(const Leaf& leaf, double* state, int64_t num_groups) {
  switch (leaf.kind) {
    case ScheduleKind::CosineRestarts:
      cosine_restarts_lrs(leaf, state, num_groups);
      break;
    case ScheduleKind::OneCycle:
      one_cycle_lrs(leaf.fields.one_cycle, state, num_groups, 0.0);
      break;
    case ScheduleKind::Cyclic:
      cyclic_lrs(leaf.fields.cyclic, state, num_groups, 0.0);
      break;
    default:
      transformers_lrs(leaf, state, num_groups, 0.0);
      break;
  }
}

// What a leaf's torch constructor leaves in the scheduler's own state (before
// its initial step touches the lrs), plus OneCycleLR's per-group setup.
C10_HOST_DEVICE inline void construct_leaf(const Leaf& leaf, double* state, int64_t num_groups) {
  leaf.state[layout::kLeafLastEpoch] = 0.0;
  switch (leaf.kind) {
    case ScheduleKind::Plateau:  // mode_worse
      leaf.state[layout::kPlateauBest] = leaf.fields.plateau.mode == PlateauMode::Max ? -INFINITY : INFINITY;
      leaf.state[layout::kPlateauBadEpochs] = 0.0;
      leaf.state[layout::kPlateauCooldown] = 0.0;
      break;
    case ScheduleKind::CosineRestarts:
      leaf.state[layout::kRestartsTCur] = 0.0;
      leaf.state[layout::kRestartsTI] = leaf.fields.cosine_restarts.T_0;
      break;
    case ScheduleKind::OneCycle:
      for (int64_t g = 0; g < num_groups; ++g) {
        double* slots = group_slots(state, g);
        slots[layout::kGroupBaseLr] = slots[layout::kGroupMaxLr] / leaf.fields.one_cycle.div_factor;
        slots[layout::kGroupFinalLr] = slots[layout::kGroupBaseLr] / leaf.fields.one_cycle.final_div_factor;
      }
      break;
    default:
      break;
  }
}

// The lr change of a leaf's initial step (torch's _initial_step: get_lr() at
// last_epoch 0 in initial mode).
C10_HOST_DEVICE inline void initial_leaf_lrs(const Leaf& leaf, double* state, int64_t num_groups) {
  switch (leaf.kind) {
    case ScheduleKind::MultiStep: {
      const MultiStepFields& fields = leaf.fields.multi_step;
      const int64_t count = count_milestones(fields, 0.0, false);
      if (count > 0) {
        scale_lrs(state, num_groups, ::pow(fields.gamma, static_cast<double>(count)));
      }
      break;
    }
    case ScheduleKind::ConstantFactor:
      scale_lrs(state, num_groups, leaf.fields.constant_factor.factor);
      break;
    case ScheduleKind::Linear:
      scale_lrs(state, num_groups, leaf.fields.linear.start_factor);
      break;
    default:
      absolute_lrs_at_zero(leaf, state, num_groups);
      break;
  }
}

// One scheduler.step() of a leaf (ReduceLROnPlateau: step(metric)).
C10_HOST_DEVICE inline void step_leaf(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  if (leaf.kind == ScheduleKind::Plateau) {
    leaf.state[layout::kLeafLastEpoch] += 1.0;
    plateau_step(leaf, state, num_groups, metric);
    return;
  }
  if (leaf.kind == ScheduleKind::CosineRestarts) {  // its own step(): T_cur, T_i, then the absolute lr
    leaf.state[layout::kLeafLastEpoch] += 1.0;
    double& t_cur = leaf.state[layout::kRestartsTCur];
    double& t_i = leaf.state[layout::kRestartsTI];
    t_cur = t_cur + 1.0;
    if (t_cur >= t_i) {
      t_cur = ::fmod(t_cur, t_i);
      t_i = t_i * leaf.fields.cosine_restarts.T_mult;
    }
    cosine_restarts_lrs(leaf, state, num_groups);
    return;
  }
  const double epoch = leaf.state[layout::kLeafLastEpoch] += 1.0;
  const LeafFields& f = leaf.fields;
  switch (leaf.kind) {
    case ScheduleKind::Step:
      if (epoch != 0.0 && divides(f.step.step_size, epoch)) {
        scale_lrs(state, num_groups, f.step.gamma);
      }
      break;
    case ScheduleKind::MultiStep: {
      const int64_t count = count_milestones(f.multi_step, epoch, false);
      if (count > 0) {
        scale_lrs(state, num_groups, ::pow(f.multi_step.gamma, static_cast<double>(count)));
      }
      break;
    }
    case ScheduleKind::Cosine:
      cosine_annealing_step(f.cosine, state, num_groups, epoch);
      break;
    case ScheduleKind::Exponential:
      scale_lrs(state, num_groups, f.exponential.gamma);
      break;
    case ScheduleKind::ConstantFactor:
      if (epoch == f.constant_factor.total_iters) {
        scale_lrs(state, num_groups, 1.0 / f.constant_factor.factor);
      }
      break;
    case ScheduleKind::Linear: {
      const double start = f.linear.start_factor, end = f.linear.end_factor, total_iters = f.linear.total_iters;
      if (!(epoch > total_iters)) {
        scale_lrs(state, num_groups,
                  1.0 + (end - start) / (total_iters * start + (epoch - 1.0) * (end - start)));
      }
      break;
    }
    case ScheduleKind::Polynomial: {
      const double total_iters = f.polynomial.total_iters, power = f.polynomial.power;
      if (!(epoch > total_iters)) {
        scale_lrs(state, num_groups,
                  ::pow((1.0 - epoch / total_iters) / (1.0 - (epoch - 1.0) / total_iters), power));
      }
      break;
    }
    case ScheduleKind::OneCycle:
      // torch raises past total_steps; the device cannot, so the lr holds its last value.
      if (!(epoch > f.one_cycle.total_steps)) {
        one_cycle_lrs(f.one_cycle, state, num_groups, epoch);
      }
      break;
    case ScheduleKind::Cyclic:
      cyclic_lrs(f.cyclic, state, num_groups, epoch);
      break;
    default:
      transformers_lrs(leaf, state, num_groups, epoch);
      break;
  }
}

// SequentialLR's hand-over at a milestone: torch's scheduler._update_lr(0),
// i.e. last_epoch = 0 and the closed form at 0 where the scheduler has one.
// A ReduceLROnPlateau leaf (beyond torch) takes its first step(metric) instead.
C10_HOST_DEVICE inline void restart_leaf(const Leaf& leaf, double* state, int64_t num_groups, double metric) {
  if (leaf.kind == ScheduleKind::Plateau) {
    step_leaf(leaf, state, num_groups, metric);
    return;
  }
  leaf.state[layout::kLeafLastEpoch] = 0.0;
  const LeafFields& f = leaf.fields;
  for (int64_t g = 0; g < num_groups; ++g) {
    double* slots = group_slots(state, g);
    const double base_lr = slots[layout::kGroupBaseLr];
    double& lr = slots[layout::kGroupLr];
    switch (leaf.kind) {
      case ScheduleKind::Step:         // base_lr * gamma ** (0 // step_size)
      case ScheduleKind::Exponential:  // base_lr * gamma ** 0
      case ScheduleKind::Polynomial:   // base_lr * (1.0 - 0 / total_iters) ** power
        lr = base_lr * 1.0;
        break;
      case ScheduleKind::MultiStep:
        lr = base_lr * ::pow(f.multi_step.gamma, static_cast<double>(count_milestones(f.multi_step, 0.0, true)));
        break;
      case ScheduleKind::Cosine:
        lr = f.cosine.eta_min + (base_lr - f.cosine.eta_min) * (1.0 + ::cos(kPi * 0.0 / f.cosine.T_max)) / 2.0;
        break;
      case ScheduleKind::ConstantFactor: {
        const double factor = f.constant_factor.factor;
        lr = base_lr * (factor + (0.0 >= f.constant_factor.total_iters ? 1.0 - factor : 0.0));
        break;
      }
      case ScheduleKind::Linear:
        lr = base_lr * f.linear.start_factor;  // start_factor + (end - start) * min(total_iters, 0) / total_iters
        break;
      default:
        break;
    }
  }
  absolute_lrs_at_zero(leaf, state, num_groups);  // the schedules without a closed form
}

// SequentialLR: the index of the leaf in charge at `epoch` (bisect_right).
C10_HOST_DEVICE inline int64_t sequential_index(const Program& program, double epoch) {
  int64_t index = 0;
  while (index < program.num_milestones() && program.milestone(index) <= epoch) {
    ++index;
  }
  return index;
}

}  // namespace detail

// What torch's constructors do, from a state whose group slots hold each
// group's lr (== base_lr), momentum and the schedule's per-group constants:
// every leaf's construction, then the initial step of the leaf in charge
// (SequentialLR, which resets the lrs to initial_lr first) or of each leaf in
// order (a single schedule, ChainedScheduler).
C10_HOST_DEVICE inline void initialize_schedule(double* state, int64_t num_groups, Program program) {
  state[layout::kLastEpoch] = 0.0;
  const int64_t leaves = program.num_leaves();
  for (int64_t l = 0; l < leaves; ++l) {
    detail::construct_leaf(program.leaf(l, state), state, num_groups);
  }
  if (program.combinator() == Combinator::Sequential) {
    detail::initial_leaf_lrs(program.leaf(detail::sequential_index(program, 0.0), state), state, num_groups);
    return;
  }
  for (int64_t l = 0; l < leaves; ++l) {
    detail::initial_leaf_lrs(program.leaf(l, state), state, num_groups);
  }
}

// One scheduler.step() of the whole schedule. `metric` is read only by
// ReduceLROnPlateau leaves.
C10_HOST_DEVICE inline void advance_schedule(double* state, int64_t num_groups, Program program, double metric) {
  const double epoch = state[layout::kLastEpoch] += 1.0;
  if (program.combinator() == Combinator::Sequential) {
    const int64_t index = detail::sequential_index(program, epoch);
    const Leaf leaf = program.leaf(index, state);
    if (index > 0 && program.milestone(index - 1) == epoch) {
      detail::restart_leaf(leaf, state, num_groups, metric);
    } else {
      detail::step_leaf(leaf, state, num_groups, metric);
    }
    return;
  }
  for (int64_t l = 0; l < program.num_leaves(); ++l) {  // Single, Chained: every leaf in order
    detail::step_leaf(program.leaf(l, state), state, num_groups, metric);
  }
}

}  // namespace lrsched_fused
