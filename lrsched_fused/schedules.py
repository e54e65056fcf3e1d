"""Learning-rate schedule specifications.

A schedule here is a description (its kind and hyperparameters); the optimizer
owns its state in a device tensor and advances it with one op per
``schedule_step()`` (see csrc/schedule_math.h, NOTE: [schedule state layout]
and NOTE: [schedule program]). Names, arguments, defaults and semantics are
torch's (``torch.optim.lr_scheduler``, minus the optimizer argument) and
transformers' (``transformers.get_scheduler``: :func:`get_scheduler`). All
arithmetic is the C++ code's, on the device; this file only validates
arguments and encodes them.

NOTE: [one list of fields]
Each leaf schedule is a frozen dataclass. Its fields, in order, are its
constructor's arguments, its ``config()`` (what a state_dict stores) and, for
those declared with ``_program``, the values of its program, in the order of
the C++ struct that decodes them (NOTE: [schedule fields] in
csrc/schedule_math.h; ``_C.SCHEDULE_FIELDS`` exports its names and a test ties
the two). Each field's metadata says how it is checked and encoded; per-group
fields (``_per_group``) go to the group slots of the schedule state instead.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Union

from . import _C

__all__ = [
    "Schedule", "Constant", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR", "ReduceLROnPlateau",
    "SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR",
    "ConstantWithWarmup", "LinearWithWarmup", "CosineWithWarmup", "CosineWithHardRestarts",
    "PolynomialDecayWithWarmup", "InverseSqrt", "CosineWarmupWithMinLr", "WarmupStableDecay",
    "get_scheduler", "TRANSFORMERS_SCHEDULER_NAMES", "from_config",
]

PerGroup = Union[float, Sequence[float]]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int, owner: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value, owner: str, *, minimum: float = None, above: float = None, maximum: float = None,
                below: float = None) -> float:
    accepted = "a finite real number"
    for word, bound in ((">=", minimum), (">", above), ("<=", maximum), ("<", below)):
        if bound is not None:
            accepted += f" {word} {bound}"
    if not _is_real(value):
        raise TypeError(f"{owner}: {name} must be {accepted}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if (not math.isfinite(value) or (minimum is not None and value < minimum)
            or (above is not None and value <= above) or (maximum is not None and value > maximum)
            or (below is not None and value >= below)):
        raise ValueError(f"{owner}: {name} must be {accepted}, got {value!r}")
    return value


def _expand(name: str, value: PerGroup, num_groups: int, owner: str) -> List[float]:
    if isinstance(value, list):
        if len(value) != num_groups:
            raise ValueError(f"{owner}: {name} has {len(value)} entries but the optimizer has {num_groups} param "
                             "groups; pass one float or one per group")
        return list(value)
    return [value] * num_groups


# ------------------------------------------------------------------ field kinds
# Each checks (and normalizes) a field's value and encodes it for the program.
class _Int:
    def __init__(self, minimum: int):
        self.minimum = minimum

    def __call__(self, name, value, owner):
        return _check_int(name, value, self.minimum, owner)

    def encode(self, value) -> float:
        return float(value)


class _Real:
    def __init__(self, **bounds):
        self.bounds = bounds

    def __call__(self, name, value, owner):
        return _check_real(name, value, owner, **self.bounds)

    def encode(self, value) -> float:
        return value


class _Choice:
    """One of a few strings; encoded as its index (the C++ enum's order)."""

    def __init__(self, *choices: str):
        self.choices = choices

    def __call__(self, name, value, owner):
        if value not in self.choices:
            raise ValueError(f"{owner}: {name} must be one of {list(self.choices)}, got {value!r}")
        return value

    def encode(self, value) -> float:
        return float(self.choices.index(value))


class _Flag:
    def __call__(self, name, value, owner):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be a bool, got {value!r}")
        return value

    def encode(self, value) -> float:
        return 1.0 if value else 0.0


class _Optional:
    """None or what `inner` accepts; None travels as NaN (csrc/schedule_math.h: is_none)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, name, value, owner):
        return None if value is None else self.inner(name, value, owner)

    def encode(self, value) -> float:
        return math.nan if value is None else self.inner.encode(value)


class _Milestones:
    """MultiStepLR's milestones, sorted; one program value each."""

    def __call__(self, name, value, owner):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{owner}: {name} must be a list of ints >= 0, got {value!r}")
        value = list(value)
        if not value:
            raise ValueError(f"{owner}: {name} must hold at least one int >= 0, got []")
        return sorted(_check_int(f"{name}[{i}]", m, 0, owner) for i, m in enumerate(value))

    def encode(self, value) -> List[float]:
        return [float(m) for m in value]


class _PerGroupReal:
    """One float for every group, or a list with one per group (checked
    against the group count when the optimizer is built)."""

    def __init__(self, **bounds):
        self.bounds = bounds

    def __call__(self, name, value, owner):
        if isinstance(value, (list, tuple)):
            return [_check_real(f"{name}[{i}]", v, owner, **self.bounds) for i, v in enumerate(value)]
        return _check_real(name, value, owner, **self.bounds)


def _program(kind, default=dataclasses.MISSING):
    """A field that the device reads: the next value(s) of the leaf's program."""
    return dataclasses.field(default=default, metadata={"check": kind, "program": True})


def _per_group(kind, slots: Tuple[str, ...], default, only_if: Optional[str] = None):
    """A per-group field: written to the named group slots of the schedule
    state (``_C.GROUP_*``), when the flag field `only_if` (if any) is set."""
    return dataclasses.field(default=default, metadata={"check": kind, "slots": slots, "only_if": only_if})


def _setting(kind, default):
    """A field kept in the config that the device does not read."""
    return dataclasses.field(default=default, metadata={"check": kind})


_leaf = dataclasses.dataclass(frozen=True, eq=False, repr=False)


class Schedule:
    """Base class of the schedule specifications (NOTE: [one list of fields])."""

    kind: ClassVar[int] = _C.KIND_CONSTANT
    #: True when ``schedule_step`` needs a metric (ReduceLROnPlateau).
    requires_metric: ClassVar[bool] = False
    #: True when the schedule moves SGD's momentum or Adam's beta1 (cycle_momentum).
    cycles_momentum: bool = False
    #: False for the schedules that set the lr absolutely from their own
    #: per-group values (OneCycleLR, CyclicLR): they cannot be composed.
    composable: ClassVar[bool] = True

    def __post_init__(self, *init_only):
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name), owner))
        self._check(*init_only)
        _check_program_size(self, owner)

    def _check(self, *init_only) -> None:
        """What the fields must satisfy together (after each is checked alone)."""

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # for _check: the dataclass is frozen

    @classmethod
    def program_fields(cls) -> Tuple[str, ...]:
        """The names of the fields the device reads, in program order (== _C.SCHEDULE_FIELDS[cls.kind])."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("program"))

    def hyperparameters(self) -> List[float]:
        """The float64 values of the program fields, in their order."""
        values = []
        for f in dataclasses.fields(self):
            if f.metadata.get("program"):
                encoded = f.metadata["check"].encode(getattr(self, f.name))
                values += encoded if isinstance(encoded, list) else [encoded]
        return values

    def _group_fields(self):
        return [f for f in dataclasses.fields(self) if "slots" in f.metadata
                and (f.metadata["only_if"] is None or getattr(self, f.metadata["only_if"]))]

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        """Per-group slots of the schedule state this schedule sets, by slot
        index (csrc/schedule_math.h), one value per group."""
        slots = {}
        for f in self._group_fields():
            values = _expand(f.name, getattr(self, f.name), num_groups, type(self).__name__)
            for slot in f.metadata["slots"]:
                slots[getattr(_C, slot)] = values
        return slots

    def per_group_lists(self) -> List[str]:
        """The arguments given as per-group lists (they cannot grow with add_param_group)."""
        return [f.name for f in dataclasses.fields(self) if "slots" in f.metadata
                and isinstance(getattr(self, f.name), list)]

    def leaves(self) -> List["Schedule"]:
        return [self]

    def check_group_lrs(self, lrs: Sequence[float], where: str) -> None:
        """What this schedule asks of the initial lr of the groups it drives
        (checked by the optimizer at construction and add_param_group)."""
        for leaf in self.leaves():
            if leaf is not self:
                leaf.check_group_lrs(lrs, where)

    def leaf_program(self) -> List[float]:
        values = self.hyperparameters()
        return [float(self.kind), float(len(values))] + values

    def program(self) -> List[float]:
        """The schedule program the ops take (NOTE: [schedule program])."""
        return [float(_C.COMBINATOR_SINGLE), 1.0] + self.leaf_program()

    def config(self) -> dict:
        """The constructor arguments, for state_dict and repr."""
        return {f.name: (list(v) if isinstance(v, list) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def _from_config(cls, config: dict) -> "Schedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.config() == other.config()


def _check_program_size(schedule: Schedule, owner: str) -> None:
    """The device takes at most _C.MAX_PROGRAM_SIZE program values (the CUDA kernel's argument)."""
    size = len(schedule.program())
    if size > _C.MAX_PROGRAM_SIZE:
        raise ValueError(f"{owner}: the schedule program has {size} values, more than the {_C.MAX_PROGRAM_SIZE} "
                         "the device takes (lrsched_fused._C.MAX_PROGRAM_SIZE); each MultiStepLR milestone takes "
                         "one: use fewer milestones (or a StepLR)")


# ------------------------------------------------------ torch.optim.lr_scheduler
@_leaf
class Constant(Schedule):
    """The lr stays where it is (``schedule=None``)."""


@_leaf
class StepLR(Schedule):
    r"""Multiplies each group's lr by ``gamma`` every ``step_size`` schedule steps.

    As torch's ``StepLR``: at schedule step :math:`t > 0` with
    :math:`t \bmod \text{step\_size} = 0`, :math:`\eta \leftarrow \gamma\,\eta`.
    """

    kind = _C.KIND_STEP
    step_size: int = _program(_Int(1))
    gamma: float = _program(_Real(minimum=0.0), 0.1)


@_leaf
class MultiStepLR(Schedule):
    r"""Multiplies each group's lr by ``gamma`` at every milestone (by
    ``gamma ** k`` at a milestone listed k times), as torch's ``MultiStepLR``.
    Each milestone takes one program value (at most ``_C.MAX_PROGRAM_SIZE`` in all)."""

    kind = _C.KIND_MULTI_STEP
    milestones: List[int] = _program(_Milestones())
    gamma: float = _program(_Real(minimum=0.0), 0.1)


@_leaf
class ConstantLR(Schedule):
    r"""Multiplies the lr by ``factor`` until schedule step ``total_iters``,
    then restores it, as torch's ``ConstantLR``."""

    kind = _C.KIND_CONSTANT_FACTOR
    # torch accepts factor 0, then divides by it at total_iters (ZeroDivisionError).
    factor: float = _program(_Real(above=0.0, maximum=1.0), 1.0 / 3)
    total_iters: int = _program(_Int(0), 5)


@_leaf
class LinearLR(Schedule):
    r"""Scales the lr linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` schedule steps (torch's chainable ``LinearLR``)."""

    kind = _C.KIND_LINEAR
    start_factor: float = _program(_Real(above=0.0, maximum=1.0), 1.0 / 3)
    end_factor: float = _program(_Real(minimum=0.0, maximum=1.0), 1.0)
    total_iters: int = _program(_Int(1), 5)


@_leaf
class ExponentialLR(Schedule):
    r""":math:`\eta \leftarrow \gamma\,\eta` every schedule step (torch's ``ExponentialLR``)."""

    kind = _C.KIND_EXPONENTIAL
    gamma: float = _program(_Real(minimum=0.0))


@_leaf
class PolynomialLR(Schedule):
    r"""Decays the lr to 0 over ``total_iters`` steps with the given ``power``
    (torch's chainable ``PolynomialLR``; it stays at 0 afterwards)."""

    kind = _C.KIND_POLYNOMIAL
    total_iters: int = _program(_Int(1), 5)
    power: float = _program(_Real(minimum=0.0), 1.0)


@_leaf
class CosineAnnealingLR(Schedule):
    r"""torch's recursive cosine annealing.

    .. math::
        \eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
        \frac{1 + \cos(\pi t / T_{max})}{1 + \cos(\pi (t-1) / T_{max})}

    with torch's special step when :math:`(t - 1 - T_{max}) \bmod 2T_{max} = 0`.
    Like torch it does not clamp past ``T_max``: the lr rises again, with
    period ``2 * T_max``.
    """

    kind = _C.KIND_COSINE
    T_max: int = _program(_Int(1))
    eta_min: float = _program(_Real(minimum=0.0), 0.0)


@_leaf
class CosineAnnealingWarmRestarts(Schedule):
    r"""SGDR, as torch's ``CosineAnnealingWarmRestarts``:
    :math:`\eta = \eta_{\min} + (\eta_{base} - \eta_{\min})(1 + \cos(\pi T_{cur}/T_i))/2`,
    restarting when :math:`T_{cur}` reaches :math:`T_i`, then :math:`T_i \leftarrow T_i \cdot T_{mult}`."""

    kind = _C.KIND_COSINE_RESTARTS
    T_0: int = _program(_Int(1))
    T_mult: int = _program(_Int(1), 1)
    eta_min: float = _program(_Real(minimum=0.0), 0.0)


_MOMENTUM = _PerGroupReal(minimum=0.0, below=1.0)


@_leaf
class OneCycleLR(Schedule):
    r"""The 1cycle policy, as torch's ``OneCycleLR``: from ``max_lr / div_factor``
    up to ``max_lr`` over the first ``pct_start`` of ``total_steps``, then down
    to ``max_lr / div_factor / final_div_factor`` (three phases with
    ``three_phase``), annealed by cosine or linearly; with ``cycle_momentum``
    the momentum (SGD) or beta1 (Adam) moves inversely between
    ``max_momentum`` and ``base_momentum``, on the device.

    It sets the lr absolutely: the optimizer's own lr is ignored, as in torch.
    torch raises once stepped past ``total_steps``; the device cannot raise, so
    there the lr and momentum hold their last values.
    """

    kind = _C.KIND_ONE_CYCLE
    composable = False
    max_lr: PerGroup = _per_group(_PerGroupReal(minimum=0.0), ("GROUP_MAX_LR",), dataclasses.MISSING)
    total_steps: Optional[int] = _program(_Optional(_Int(1)), None)
    epochs: dataclasses.InitVar[Optional[int]] = None
    steps_per_epoch: dataclasses.InitVar[Optional[int]] = None
    pct_start: float = _program(_Real(minimum=0.0, maximum=1.0), 0.3)
    anneal_strategy: str = _program(_Choice("cos", "linear"), "cos")
    cycle_momentum: bool = _program(_Flag(), True)
    base_momentum: PerGroup = _per_group(_MOMENTUM, ("GROUP_BASE_MOMENTUM",), 0.85, only_if="cycle_momentum")
    max_momentum: PerGroup = _per_group(_MOMENTUM, ("GROUP_MAX_MOMENTUM",), 0.95, only_if="cycle_momentum")
    div_factor: float = _program(_Real(above=0.0), 25.0)
    final_div_factor: float = _program(_Real(above=0.0), 1e4)
    three_phase: bool = _program(_Flag(), False)

    def _check(self, epochs, steps_per_epoch) -> None:
        owner = "OneCycleLR"
        if self.total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(f"{owner}: pass total_steps, or epochs and steps_per_epoch; got total_steps="
                                 f"{self.total_steps!r}, epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
            self._set("total_steps", _check_int("epochs", epochs, 1, owner)
                      * _check_int("steps_per_epoch", steps_per_epoch, 1, owner))
        # torch divides by each phase's length; a phase of length 0 raises ZeroDivisionError there.
        ends = [float(self.pct_start * self.total_steps) - 1]
        if self.three_phase:
            ends.append(float(2 * self.pct_start * self.total_steps) - 2)
        ends.append(self.total_steps - 1)
        if any(b == a for a, b in zip([0.0] + ends, ends)):
            raise ValueError(f"{owner}: pct_start={self.pct_start!r} with total_steps={self.total_steps} gives a "
                             f"phase of length 0 (phase ends {ends}), which torch divides by; choose another "
                             "pct_start")

    @property
    def cycles_momentum(self) -> bool:
        return self.cycle_momentum


_CYCLIC_MODES = _Choice("triangular", "triangular2", "exp_range")


@_leaf
class CyclicLR(Schedule):
    r"""Cyclical learning rates, as torch's ``CyclicLR``: the lr moves between
    ``base_lr`` and ``max_lr`` in cycles of ``step_size_up + step_size_down``
    steps; ``mode`` "triangular", "triangular2" (amplitude halved each cycle) or
    "exp_range" (amplitude scaled by ``gamma ** step``); with ``cycle_momentum``
    the momentum (SGD) or beta1 (Adam) moves inversely, on the device.

    Like torch it sets the lr absolutely (the optimizer's lr is replaced by
    ``base_lr``), and ``scale_mode`` matters only with a ``scale_fn``, which a
    device cannot call: ``scale_fn`` is refused.
    """

    kind = _C.KIND_CYCLIC
    composable = False
    base_lr: PerGroup = _per_group(_PerGroupReal(minimum=0.0), ("GROUP_LR", "GROUP_BASE_LR"), dataclasses.MISSING)
    max_lr: PerGroup = _per_group(_PerGroupReal(minimum=0.0), ("GROUP_MAX_LR",), dataclasses.MISSING)
    step_size_up: float = _program(_Real(above=0.0), 2000)
    step_size_down: Optional[float] = _program(_Optional(_Real(minimum=0.0)), None)  # None: step_size_up
    mode: str = _program(_CYCLIC_MODES, "triangular")
    gamma: float = _program(_Real(above=0.0), 1.0)
    scale_fn: dataclasses.InitVar[None] = None
    scale_mode: str = _setting(_Choice("cycle", "iterations"), "cycle")
    cycle_momentum: bool = _program(_Flag(), True)
    base_momentum: PerGroup = _per_group(_MOMENTUM, ("GROUP_BASE_MOMENTUM",), 0.8, only_if="cycle_momentum")
    max_momentum: PerGroup = _per_group(_MOMENTUM, ("GROUP_MAX_MOMENTUM",), 0.9, only_if="cycle_momentum")

    def _check(self, scale_fn) -> None:
        if scale_fn is not None:
            raise TypeError(f"CyclicLR: scale_fn={scale_fn!r} is a Python callable, which cannot run on the device; "
                            f"use mode= one of {list(_CYCLIC_MODES.choices)} (with gamma for exp_range)")

    @property
    def cycles_momentum(self) -> bool:
        return self.cycle_momentum


@_leaf
class ReduceLROnPlateau(Schedule):
    """Reduces the lr when a metric stops improving; torch's ``ReduceLROnPlateau``.

    Each ``schedule_step(metric)``: a better metric (``mode``, ``threshold``,
    ``threshold_mode`` as in torch) resets the bad-epoch count, otherwise it
    grows; during cooldown it is held at 0; past ``patience`` every group's lr
    becomes ``max(lr * factor, min_lr[i])`` if that lowers it by more than
    ``eps``, and the cooldown starts. A NaN metric is a bad epoch. The metric
    is read on the device: pass a 0-dim tensor and nothing syncs.
    """

    kind = _C.KIND_PLATEAU
    requires_metric = True
    mode: str = _program(_Choice("min", "max"), "min")
    factor: float = _program(_Real(minimum=0.0, below=1.0), 0.1)
    patience: int = _program(_Int(0), 10)
    threshold: float = _program(_Real(minimum=0.0), 1e-4)
    threshold_mode: str = _program(_Choice("rel", "abs"), "rel")
    cooldown: int = _program(_Int(0), 0)
    min_lr: PerGroup = _per_group(_PerGroupReal(minimum=0.0), ("GROUP_MIN_LR",), 0)
    eps: float = _program(_Real(minimum=0.0), 1e-8)


# ------------------------------------------------------ transformers.get_scheduler
# NOTE: [transformers schedules] in csrc/schedule_math.h. Each is torch's
# LambdaLR(optimizer, lr_lambda) as transformers builds it:
# lr = initial_lr * lr_lambda(t), t the schedule step, computed with
# transformers' operations in their order (equal to the last bit on the CPU).
# Like any LambdaLR they restart from lr_lambda(0) at a SequentialLR milestone
# and overwrite the lr from initial_lr in a ChainedScheduler.
# `transformers_function` names the transformers.optimization function whose
# lr_lambda each one is (lrsched_fused.torch_reference builds the twin with it).

_STEPS = _Int(0)


class _TransformersSchedule(Schedule):
    """A LambdaLR of transformers: the lr_lambda that ``transformers.optimization.<transformers_function>`` builds."""

    transformers_function: ClassVar[str]


@_leaf
class ConstantWithWarmup(_TransformersSchedule):
    r"""transformers' ``constant_with_warmup`` (``constant`` with ``num_warmup_steps=0``):

    .. math::
        \lambda(t) = \begin{cases} t / \max(1, W) & t < W \\ 1 & \text{otherwise} \end{cases}

    with :math:`W` = ``num_warmup_steps``; lr = initial_lr :math:`\cdot\,\lambda(t)`.
    """

    kind = _C.KIND_CONSTANT_WITH_WARMUP
    transformers_function = "get_constant_schedule_with_warmup"
    num_warmup_steps: int = _program(_STEPS, 0)


@_leaf
class LinearWithWarmup(_TransformersSchedule):
    r"""transformers' ``linear`` (``get_linear_schedule_with_warmup``): linear
    warmup from 0 over :math:`W` steps, then linear decay to 0 at :math:`T`:

    .. math::
        \lambda(t) = \begin{cases} t / \max(1, W) & t < W \\
        \max\left(0, \dfrac{T - t}{\max(1, T - W)}\right) & \text{otherwise} \end{cases}

    :math:`W` = ``num_warmup_steps``, :math:`T` = ``num_training_steps``.
    """

    kind = _C.KIND_LINEAR_WITH_WARMUP
    transformers_function = "get_linear_schedule_with_warmup"
    num_warmup_steps: int = _program(_STEPS)
    num_training_steps: int = _program(_STEPS)


@_leaf
class _CosineToMinLr(_TransformersSchedule):
    """The fields of the two cosine decays to min_lr_rate (or to min_lr)."""

    num_warmup_steps: int = _program(_STEPS)
    num_training_steps: int = _program(_STEPS)
    num_cycles: float = _program(_Real(), 0.5)
    min_lr_rate: Optional[float] = _program(_Optional(_Real()), None)
    min_lr: Optional[float] = _program(_Optional(_Real(minimum=0.0)), None)

    def _check(self) -> None:
        """min_lr_rate, or min_lr as an absolute lr (transformers divides it by
        the optimizer's lr; the device by the group's initial lr), or neither (0)."""
        if self.min_lr is not None and self.min_lr_rate is not None:
            raise ValueError(f"{type(self).__name__}: give min_lr or min_lr_rate, not both (got min_lr="
                             f"{self.min_lr!r}, min_lr_rate={self.min_lr_rate!r})")
        if self.min_lr is None and self.min_lr_rate is None:
            self._set("min_lr_rate", 0.0)


@_leaf
class CosineWithWarmup(_CosineToMinLr):
    r"""transformers' ``cosine`` and ``cosine_with_min_lr``: linear warmup, then
    cosine decay to ``min_lr_rate`` (0 for ``cosine``) times the initial lr:

    .. math::
        p = \frac{t - W}{\max(1, T - W)}, \qquad
        \lambda(t) = \max\left(0, \tfrac12\bigl(1 + \cos(2\pi c\,p)\bigr)(1 - r) + r\right)

    for :math:`t \ge W` (:math:`t / \max(1, W)` before), :math:`c` =
    ``num_cycles`` (0.5: one half-cosine), :math:`r` = ``min_lr_rate``. Like
    torch's it does not clamp past :math:`T`: the cosine goes on. ``min_lr``
    (an lr, instead of ``min_lr_rate``) is divided by the group's initial lr,
    as transformers divides it by the optimizer's lr.
    """

    kind = _C.KIND_COSINE_WITH_WARMUP
    transformers_function = "get_cosine_with_min_lr_schedule_with_warmup"


@_leaf
class CosineWithHardRestarts(_TransformersSchedule):
    r"""transformers' ``cosine_with_restarts``: linear warmup, then ``num_cycles``
    half-cosines from 1 to 0, each restarting at 1; 0 from :math:`T` on:

    .. math::
        \lambda(t) = \begin{cases} 0 & p \ge 1 \\
        \max\left(0, \tfrac12\bigl(1 + \cos(\pi\,((c\,p) \bmod 1))\bigr)\right) & \text{otherwise}
        \end{cases}

    for :math:`t \ge W`, with :math:`p` as in :class:`CosineWithWarmup` and
    :math:`c` = ``num_cycles``.
    """

    kind = _C.KIND_COSINE_WITH_HARD_RESTARTS
    transformers_function = "get_cosine_with_hard_restarts_schedule_with_warmup"
    num_warmup_steps: int = _program(_STEPS)
    num_training_steps: int = _program(_STEPS)
    num_cycles: float = _program(_Real(minimum=0.0), 1)


@_leaf
class PolynomialDecayWithWarmup(_TransformersSchedule):
    r"""transformers' ``polynomial``: linear warmup, then polynomial decay from
    ``lr_init`` to ``lr_end`` at :math:`T`, where it stays:

    .. math::
        \lambda(t) = \frac{(l_0 - l_e)\left(1 - \frac{t - W}{T - W}\right)^{\text{power}} + l_e}{l_0}
        \quad (W \le t \le T), \qquad \lambda(t) = l_e / l_0 \quad (t > T)

    :math:`l_0` = ``lr_init``, which transformers reads from the optimizer
    (``optimizer.defaults["lr"]``); left ``None`` it is each group's initial
    lr, the same unless param groups set their own lr.
    """

    kind = _C.KIND_POLYNOMIAL_DECAY_WITH_WARMUP
    transformers_function = "get_polynomial_decay_schedule_with_warmup"
    num_warmup_steps: int = _program(_STEPS)
    num_training_steps: int = _program(_STEPS)
    lr_end: float = _program(_Real(minimum=0.0), 1e-7)
    power: float = _program(_Real(minimum=0.0), 1.0)  # a negative power divides by 0 at T, in Python
    lr_init: Optional[float] = _program(_Optional(_Real(above=0.0)), None)

    def _check(self) -> None:
        owner = "PolynomialDecayWithWarmup"
        if self.num_training_steps == self.num_warmup_steps:
            raise ValueError(f"{owner}: num_training_steps must differ from num_warmup_steps (transformers divides "
                             f"by their difference at step {self.num_training_steps}), got both "
                             f"{self.num_warmup_steps}")
        if self.lr_init is not None and not self.lr_init > self.lr_end:
            raise ValueError(f"{owner}: lr_end ({self.lr_end}) must be smaller than lr_init ({self.lr_init})")

    def check_group_lrs(self, lrs: Sequence[float], where: str) -> None:
        """Left None, lr_init is each group's initial lr, which must exceed
        lr_end (transformers raises on the optimizer's lr likewise)."""
        if self.lr_init is None:
            for i, lr in enumerate(lrs):
                if not lr > self.lr_end:
                    raise ValueError(f"PolynomialDecayWithWarmup: lr_end ({self.lr_end}) must be smaller than the "
                                     f"initial lr of every param group, got {lr} ({where}, group {i})")


@_leaf
class InverseSqrt(_TransformersSchedule):
    r"""transformers' ``inverse_sqrt``: linear warmup, then

    .. math::
        \lambda(t) = 1 \big/ \sqrt{(t + s - W) / s}

    with :math:`s` = ``timescale``; ``None``: :math:`W`, or 10 000 when :math:`W = 0`.
    """

    kind = _C.KIND_INVERSE_SQRT
    transformers_function = "get_inverse_sqrt_schedule"
    num_warmup_steps: int = _program(_STEPS)
    timescale: Optional[int] = _program(_Optional(_Int(1)), None)


@_leaf
class CosineWarmupWithMinLr(_CosineToMinLr):
    r"""transformers' ``cosine_warmup_with_min_lr``: the cosine of
    :class:`CosineWithWarmup` one step ahead, after a warmup that starts above 0:

    .. math::
        \lambda(t) = \begin{cases}
        (t + 1) / \max(1, W) & t < W,\ \text{warmup\_lr\_rate} = \text{None} \\
        w + (1 - w)\, t / \max(1, W - 1) & t < W \\
        \max\left(0, \tfrac12\bigl(1 + \cos(2\pi c\,p)\bigr)(1 - r) + r\right),\
        p = \frac{t - W + 1}{\max(1, T - W)} & \text{otherwise} \end{cases}

    :math:`w` = ``warmup_lr_rate``, :math:`r` = ``min_lr_rate`` (or ``min_lr``
    divided by the group's initial lr), :math:`c` = ``num_cycles``.
    """

    kind = _C.KIND_COSINE_WARMUP_WITH_MIN_LR
    transformers_function = "get_cosine_with_min_lr_schedule_with_warmup_lr_rate"
    warmup_lr_rate: Optional[float] = _program(_Optional(_Real()), None)


_WSD_SHAPES = _Choice("linear", "cosine", "1-sqrt")


@_leaf
class WarmupStableDecay(_TransformersSchedule):
    r"""transformers' ``warmup_stable_decay`` (WSD): warmup from ``min_lr_ratio``
    to 1 over :math:`W` steps, 1 for :math:`S` steps, decay to ``min_lr_ratio``
    over :math:`D` steps, then ``min_lr_ratio``; warmup and decay each
    ``"linear"``, ``"cosine"`` or ``"1-sqrt"``:

    .. math::
        \lambda(t) = \begin{cases}
        \max(0, f_w(t / \max(1, W))(1 - m) + m) & t < W \\
        1 & t < W + S \\
        \max(0, f_d((t - W - S) / \max(1, D))(1 - m) + m) & t < W + S + D \\
        m & \text{otherwise} \end{cases}

    :math:`f_w(p)` = :math:`p`, :math:`\tfrac12(1 - \cos \pi p)`, :math:`1 - \sqrt{1 - p}`;
    :math:`f_d(p)` = :math:`1 - p`, :math:`\tfrac12(1 + \cos 2\pi c\,p)`, :math:`1 - \sqrt{p}`;
    :math:`m` = ``min_lr_ratio``, :math:`c` = ``num_cycles``. :math:`S` =
    ``num_stable_steps``, or ``num_training_steps`` :math:`- W - D` when it is
    None (given both, ``num_stable_steps`` wins, with transformers' warning).
    """

    kind = _C.KIND_WARMUP_STABLE_DECAY
    transformers_function = "get_wsd_schedule"
    num_warmup_steps: int = _program(_STEPS)
    num_decay_steps: int = _program(_STEPS)
    num_training_steps: Optional[int] = _program(_Optional(_STEPS), None)
    num_stable_steps: Optional[int] = _program(_Optional(_STEPS), None)
    warmup_type: str = _program(_WSD_SHAPES, "linear")
    decay_type: str = _program(_WSD_SHAPES, "cosine")
    min_lr_ratio: float = _program(_Real(), 0.0)
    num_cycles: float = _program(_Real(), 0.5)

    def _check(self) -> None:
        owner = "WarmupStableDecay"
        if self.num_training_steps is None and self.num_stable_steps is None:
            raise ValueError(f"{owner}: give num_training_steps or num_stable_steps")
        if self.num_stable_steps is not None:
            if self.num_training_steps is not None:
                warnings.warn("Both num_training_steps and num_stable_steps are specified. num_stable_steps will be "
                              "used.", stacklevel=4)
        elif self.num_training_steps < self.num_warmup_steps + self.num_decay_steps:
            raise ValueError(f"{owner}: num_training_steps ({self.num_training_steps}) must be at least "
                             f"num_warmup_steps + num_decay_steps ({self.num_warmup_steps} + "
                             f"{self.num_decay_steps}): the stable phase is what remains")


class _Composite(Schedule):
    """SequentialLR and ChainedScheduler: up to _C.MAX_LEAVES leaf schedules."""

    combinator: int

    def __init__(self, schedulers: Sequence[Schedule]):
        owner = type(self).__name__
        if isinstance(schedulers, Schedule) or not isinstance(schedulers, (list, tuple)):
            raise TypeError(f"{owner}: schedulers must be a list of lrsched_fused.schedules objects, "
                            f"got {schedulers!r}")
        if not 1 <= len(schedulers) <= _C.MAX_LEAVES:
            raise ValueError(f"{owner}: schedulers must hold 1 to {_C.MAX_LEAVES} schedules, got {len(schedulers)}")
        for i, s in enumerate(schedulers):
            if not isinstance(s, Schedule):
                raise TypeError(f"{owner}: schedulers[{i}] must be an lrsched_fused.schedules object, got {s!r}")
            if isinstance(s, _Composite):
                raise ValueError(f"{owner}: schedulers[{i}] is a {type(s).__name__}; nesting SequentialLR and "
                                 "ChainedScheduler is not supported: list the schedules in one of them")
            if not s.composable:
                raise ValueError(f"{owner}: schedulers[{i}] is a {type(s).__name__}, which sets the lr absolutely "
                                 "from its own per-group values and cannot be composed; use it alone")
        if sum(s.requires_metric for s in schedulers) > 1:
            raise ValueError(f"{owner}: at most one ReduceLROnPlateau can be composed")
        self.schedulers = list(schedulers)
        self.requires_metric = any(s.requires_metric for s in schedulers)

    def leaves(self) -> List[Schedule]:
        return list(self.schedulers)

    def milestone_values(self) -> List[float]:
        return []

    def program(self) -> List[float]:
        values = [float(self.combinator), float(len(self.schedulers))] + self.milestone_values()
        for s in self.schedulers:
            values += s.leaf_program()
        return values

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        slots: Dict[int, List[float]] = {}
        for s in self.schedulers:
            slots.update(s.group_slots(num_groups))
        return slots

    def per_group_lists(self) -> List[str]:
        return [name for s in self.schedulers for name in s.per_group_lists()]

    def config(self) -> dict:
        return {"schedulers": [{"name": type(s).__name__, "config": s.config()} for s in self.schedulers]}

    @classmethod
    def _children(cls, config: dict) -> List[Schedule]:
        return [from_config(c["name"], c["config"]) for c in config["schedulers"]]

    @classmethod
    def _from_config(cls, config: dict) -> "Schedule":
        return cls(cls._children(config))


class SequentialLR(_Composite):
    """torch's ``SequentialLR``: ``schedulers[i]`` is in charge from schedule
    step ``milestones[i-1]`` on. At a milestone the incoming schedule restarts
    from ``last_epoch = 0`` (its closed form at 0, as torch's
    ``_update_lr(0)``), starting from the optimizer's initial lr.

    Beyond torch, a ``ReduceLROnPlateau`` may take part (say warmup, then
    plateau): it keeps the lr it is handed and takes its first
    ``step(metric)`` at its milestone, as when the two torch schedulers are
    stepped by hand. ``schedule_step(metric)`` then needs the metric every
    time; it is read only while the plateau schedule is in charge.
    """

    combinator = _C.COMBINATOR_SEQUENTIAL

    def __init__(self, schedulers: Sequence[Schedule], milestones: Sequence[int]):
        super().__init__(schedulers)
        owner = "SequentialLR"
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"{owner}: milestones must be a list of ints, got {milestones!r}")
        milestones = [_check_int(f"milestones[{i}]", m, 1, owner) for i, m in enumerate(milestones)]
        if len(milestones) != len(self.schedulers) - 1:
            raise ValueError(f"{owner}: {len(self.schedulers)} schedulers need {len(self.schedulers) - 1} "
                             f"milestones, got {len(milestones)}")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"{owner}: milestones must be strictly increasing, got {milestones}")
        self.milestones = milestones
        _check_program_size(self, owner)

    def milestone_values(self) -> List[float]:
        return [float(m) for m in self.milestones]

    def config(self) -> dict:
        return {**super().config(), "milestones": list(self.milestones)}

    @classmethod
    def _from_config(cls, config: dict) -> "Schedule":
        return cls(cls._children(config), config["milestones"])


class ChainedScheduler(_Composite):
    """torch's ``ChainedScheduler``: each schedule step steps every schedule in
    order, each from the lr the previous one left (the chainable form). Beyond
    torch, one ``ReduceLROnPlateau`` may take part; it then reads the metric
    of ``schedule_step(metric)`` every step."""

    combinator = _C.COMBINATOR_CHAINED

    def __init__(self, schedulers: Sequence[Schedule]):
        super().__init__(schedulers)
        _check_program_size(self, "ChainedScheduler")


def _refuse_callable(name: str, alternatives: str):
    class Refused(Schedule):
        def __init__(self, *args, **kwargs):
            raise TypeError(f"{name} takes a Python callable, which cannot run on the device (a step would need the "
                            f"host); use {alternatives}")

    Refused.__name__ = Refused.__qualname__ = name
    Refused.__doc__ = f"Refused: {name} needs a Python callable per step. Use {alternatives}."
    return Refused


_COMPOSABLE = ("ConstantLR, LinearLR, ExponentialLR, StepLR, MultiStepLR, PolynomialLR, CosineAnnealingLR, "
               "CosineAnnealingWarmRestarts, the transformers schedules (get_scheduler: warmup + linear, cosine, "
               "polynomial, inverse sqrt, warmup-stable-decay, ...), combined with SequentialLR or ChainedScheduler")
LambdaLR = _refuse_callable("LambdaLR", _COMPOSABLE)
MultiplicativeLR = _refuse_callable("MultiplicativeLR", "ExponentialLR (a constant factor) or " + _COMPOSABLE)

_BY_NAME = {cls.__name__: cls for cls in (
    Constant, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
    CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR, ReduceLROnPlateau, SequentialLR, ChainedScheduler,
    ConstantWithWarmup, LinearWithWarmup, CosineWithWarmup, CosineWithHardRestarts, PolynomialDecayWithWarmup,
    InverseSqrt, CosineWarmupWithMinLr, WarmupStableDecay)}


def from_config(name: str, config: dict) -> Schedule:
    """Rebuilds a schedule from ``type(s).__name__`` and ``s.config()``."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown schedule {name!r}; accepted: {sorted(_BY_NAME)}")
    return _BY_NAME[name]._from_config(config)


# ------------------------------------------------------------ get_scheduler
#: Every name transformers' ``get_scheduler`` accepts (its ``SchedulerType``, transformers 5.24).
TRANSFORMERS_SCHEDULER_NAMES = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy")

# name -> (schedule, the scheduler_specific_kwargs it takes, what it needs besides them)
_TRANSFORMERS = {
    "linear": (LinearWithWarmup, (), ("num_warmup_steps", "num_training_steps")),
    "cosine": (CosineWithWarmup, ("num_cycles",), ("num_warmup_steps", "num_training_steps")),
    "cosine_with_restarts": (CosineWithHardRestarts, ("num_cycles",), ("num_warmup_steps", "num_training_steps")),
    "polynomial": (PolynomialDecayWithWarmup, ("lr_end", "power"), ("num_warmup_steps", "num_training_steps")),
    "constant": (ConstantWithWarmup, None, ()),
    "constant_with_warmup": (ConstantWithWarmup, None, ("num_warmup_steps",)),
    "inverse_sqrt": (InverseSqrt, ("timescale",), ("num_warmup_steps",)),
    "reduce_lr_on_plateau": (ReduceLROnPlateau, tuple(f.name for f in dataclasses.fields(ReduceLROnPlateau)), ()),
    "cosine_with_min_lr": (CosineWithWarmup, ("num_cycles", "min_lr", "min_lr_rate"),
                           ("num_warmup_steps", "num_training_steps")),
    "cosine_warmup_with_min_lr": (CosineWarmupWithMinLr, ("num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate"),
                                  ("num_warmup_steps", "num_training_steps")),
    "warmup_stable_decay": (WarmupStableDecay, ("num_decay_steps", "num_stable_steps", "warmup_type",
                                                "decay_type", "min_lr_ratio", "num_cycles"), ("num_warmup_steps",)),
}
_REFUSED = {
    "greedy": "transformers' GreedyLR raises or lowers the lr from a metric, smoothed over a window of up to "
              "`window_size` past values, and resets after `reset_start` steps at min_lr: it is not a function of "
              "the step, and its window does not fit the schedule state on the device; use "
              "'reduce_lr_on_plateau' (ReduceLROnPlateau) for a metric-driven schedule",
}


def get_scheduler(name, *, num_warmup_steps: Optional[int] = None, num_training_steps: Optional[int] = None,
                  scheduler_specific_kwargs: Optional[dict] = None, optimizer_lr: Optional[float] = None) -> Schedule:
    """The schedule whose lrs equal ``transformers.get_scheduler(name, optimizer,
    num_warmup_steps, num_training_steps, scheduler_specific_kwargs)`` on a torch
    optimizer, step for step (to the last bit on the CPU), computed on the device.

    ``name`` is one of ``TRANSFORMERS_SCHEDULER_NAMES`` (or a transformers
    ``SchedulerType``); the arguments are transformers', without the
    optimizer. transformers reads the optimizer's lr (``optimizer.defaults["lr"]``)
    for ``polynomial`` (its ``lr_init``) and for a ``min_lr`` given as an lr;
    ours takes each group's initial lr instead, which is the same unless param
    groups set their own lr: then pass ``optimizer_lr`` (the optimizer's
    ``lr``) to get transformers' numbers. ``greedy`` is refused (it is not a
    function of the step); ``reduce_lr_on_plateau`` is our ``ReduceLROnPlateau``.

    Example: ``FusedAdamW(params, lr=5e-5, schedule=get_scheduler("cosine",
    num_warmup_steps=100, num_training_steps=10_000))``.
    """
    owner = "get_scheduler"
    name = getattr(name, "value", name)  # a transformers SchedulerType
    if name in _REFUSED:
        raise ValueError(f"{owner}: {name!r} is not supported: {_REFUSED[name]}")
    if name not in _TRANSFORMERS:
        raise ValueError(f"{owner}: unknown scheduler name {name!r}; accepted: {sorted(_TRANSFORMERS)}")
    schedule, accepted, needs = _TRANSFORMERS[name]
    given = {"num_warmup_steps": num_warmup_steps, "num_training_steps": num_training_steps}
    for argument in needs:  # transformers' checks, in its order
        if given[argument] is None:
            raise ValueError(f"{owner}: {name} requires `{argument}`, please provide that argument.")
    if scheduler_specific_kwargs is not None and not isinstance(scheduler_specific_kwargs, dict):
        raise ValueError(f"{owner}: scheduler_specific_kwargs must be a dict or None, got "
                         f"{scheduler_specific_kwargs!r}")
    kwargs = dict(scheduler_specific_kwargs or {}) if accepted is not None else {}  # as transformers: ignored
    unknown = sorted(set(kwargs) - set(accepted or ()))
    if unknown:
        raise ValueError(f"{owner}: {name} takes the scheduler_specific_kwargs {list(accepted)}, got {unknown}")
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr") and (
            kwargs.get("min_lr") is None and kwargs.get("min_lr_rate") is None):
        raise ValueError(f"{owner}: {name} needs one of min_lr or min_lr_rate in scheduler_specific_kwargs")
    if optimizer_lr is not None:
        optimizer_lr = _check_real("optimizer_lr", optimizer_lr, owner, above=0.0)
        if name == "polynomial":
            kwargs["lr_init"] = optimizer_lr
        elif kwargs.get("min_lr") is not None and kwargs.get("min_lr_rate") is None:
            kwargs["min_lr_rate"] = _check_real("min_lr", kwargs.pop("min_lr"), owner, minimum=0.0) / optimizer_lr
    arguments = {argument: given[argument] for argument in needs}
    if name == "warmup_stable_decay":
        arguments["num_training_steps"] = num_training_steps
        if "num_decay_steps" not in kwargs:
            raise ValueError(f"{owner}: warmup_stable_decay needs num_decay_steps in scheduler_specific_kwargs")
    return schedule(**arguments, **kwargs)
