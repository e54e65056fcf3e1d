#pragma once
// What every leaf schedule kind is written with: its fields, the view of the
// state its hooks work on, and Python's arithmetic in float64.
//
// NOTE: [schedule kinds]
// A leaf kind is one struct (csrc/schedules/*.h) holding its fields
// (LRSCHED_FIELDS, NOTE: [schedule fields]) and four hooks, all
// C10_HOST_DEVICE const members:
//
//   void construct(const LeafState&)                   what torch's constructor leaves in the
//                                                      scheduler's own state (and per-group setup)
//   void initial(const LeafState&)                     the lr change of torch's _initial_step
//                                                      (get_lr() at last_epoch 0)
//   void step(const LeafState&, double epoch, double metric)
//                                                      one scheduler.step() (ReduceLROnPlateau:
//                                                      step(metric)), at the leaf's new last_epoch
//   void restart(const LeafState&, double metric)      SequentialLR's hand-over at a milestone
//                                                      (torch's _update_lr(0)), at last_epoch 0;
//                                                      ReduceLROnPlateau takes its first step
//
// The leaf's last_epoch is the dispatcher's (schedule_math.h): 0 before
// construct and restart, + 1 before step. A kind is listed once in
// LRSCHED_FOR_EACH_LEAF_KIND; a listed kind without every hook fails to
// compile (static_assert there), and there is no default case. Behaviour
// shared by several kinds comes from a base a kind names (AbsoluteSchedule,
// TransformersLambda), which asks the kind for what it leaves out.

#include <c10/macros/Macros.h>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../state_layout.h"

namespace lrsched_fused {

// NOTE: [schedule fields]
// Each leaf kind's fields are declared once, as a list: the program carries
// them in that order, `read_fields` reads them into the kind's struct (the
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
#define LRSCHED_FIELD_READ(type, name) name = detail::decode_field<type>(values[at++]);

// Inside a kind's struct: the listed fields, their count and names, and
// `read_fields` from the leaf's program values.
#define LRSCHED_FIELDS(FIELDS)                                                                      \
  FIELDS(LRSCHED_FIELD_MEMBER)                                                                      \
  static constexpr int64_t kCount = 0 FIELDS(LRSCHED_FIELD_ONE);                                    \
  static constexpr std::array<const char*, kCount> kNames{{FIELDS(LRSCHED_FIELD_NAME)}};            \
  C10_HOST_DEVICE void read_fields([[maybe_unused]] const double* values, int64_t /*count*/) {      \
    [[maybe_unused]] int64_t at = 0;                                                                \
    FIELDS(LRSCHED_FIELD_READ)                                                                      \
  }

// The state as a leaf's hooks see it: the leaf's own kLeafStride slots, and
// each group's slots (NOTE: [schedule state layout]).
struct LeafState {
  double* leaf_slots;
  double* state;
  int64_t num_groups;

  C10_HOST_DEVICE double& operator[](int64_t slot) const { return leaf_slots[slot]; }
  C10_HOST_DEVICE double* group(int64_t g) const { return state + layout::group_offset(g); }
  // lr = lr * factor (a chainable step).
  C10_HOST_DEVICE void scale_lrs(double factor) const {
    for (int64_t g = 0; g < num_groups; ++g) {
      double& lr = group(g)[layout::kGroupLr];
      lr = lr * factor;
    }
  }
  // lr = base_lr * factor (a closed form).
  C10_HOST_DEVICE void set_lrs_from_base(double factor) const {
    for (int64_t g = 0; g < num_groups; ++g) {
      double* slots = group(g);
      slots[layout::kGroupLr] = slots[layout::kGroupBaseLr] * factor;
    }
  }
};

// The hooks of a kind whose lrs are a function of last_epoch (and of each
// group's slots), written absolutely at every step, with no state of its own:
// a kind that derives from AbsoluteSchedule<Kind> defines
// `void set_lrs(const LeafState&, double epoch) const` (torch's get_lr() at
// last_epoch `epoch`), and restarts from epoch 0.
template <typename Kind>
struct AbsoluteSchedule {
  C10_HOST_DEVICE void construct(const LeafState&) const {}
  C10_HOST_DEVICE void initial(const LeafState& leaf) const {
    kind().set_lrs(leaf, 0.0);
  }
  C10_HOST_DEVICE void step(const LeafState& leaf, double epoch, double /*metric*/) const {
    kind().set_lrs(leaf, epoch);
  }
  C10_HOST_DEVICE void restart(const LeafState& leaf, double /*metric*/) const {
    kind().set_lrs(leaf, 0.0);
  }

 protected:
  C10_HOST_DEVICE const Kind& kind() const { return static_cast<const Kind&>(*this); }
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

}  // namespace detail

}  // namespace lrsched_fused
