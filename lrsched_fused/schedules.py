"""Learning-rate schedule specifications.

A schedule here is a description (its kind and hyperparameters); the optimizer
owns its state in a device tensor and advances it with one op per
``schedule_step()`` (see csrc/schedule_math.h, NOTE: [schedule state layout]
and NOTE: [schedule program]). Names, arguments, defaults and the chainable
semantics are torch's (``torch.optim.lr_scheduler``), minus the optimizer
argument. All arithmetic is the C++ code's, on the device; this file only
validates arguments and encodes them.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Optional, Sequence, Union

from . import _C

__all__ = [
    "Schedule", "Constant", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR", "ReduceLROnPlateau",
    "SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR", "from_config",
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


def _check_choice(name: str, value, choices: Sequence[str], owner: str) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_flag(name: str, value, owner: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r}")
    return value


def _check_per_group(name: str, value, owner: str, **bounds) -> PerGroup:
    """One float for every group, or a list with one per group (checked
    against the group count when the optimizer is built)."""
    if isinstance(value, (list, tuple)):
        return [_check_real(f"{name}[{i}]", v, owner, **bounds) for i, v in enumerate(value)]
    return _check_real(name, value, owner, **bounds)


def _expand(name: str, value: PerGroup, num_groups: int, owner: str) -> List[float]:
    if isinstance(value, list):
        if len(value) != num_groups:
            raise ValueError(f"{owner}: {name} has {len(value)} entries but the optimizer has {num_groups} param "
                             "groups; pass one float or one per group")
        return list(value)
    return [value] * num_groups


class Schedule:
    """Base class of the schedule specifications."""

    kind: int = _C.KIND_CONSTANT
    #: True when ``schedule_step`` needs a metric (ReduceLROnPlateau).
    requires_metric: bool = False
    #: True when the schedule moves SGD's momentum or Adam's beta1 (cycle_momentum).
    cycles_momentum: bool = False
    #: False for the schedules that set the lr absolutely from their own
    #: per-group values (OneCycleLR, CyclicLR): they cannot be composed.
    composable: bool = True

    def hyperparameters(self) -> List[float]:
        """The float64 hyperparameters the device code reads, in its order."""
        return []

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        """Per-group slots of the schedule state this schedule sets, by slot
        index (csrc/schedule_math.h), one value per group."""
        return {}

    def per_group_lists(self) -> List[str]:
        """The arguments given as per-group lists (they cannot grow with add_param_group)."""
        return [k for k, v in self.config().items() if isinstance(v, list) and k != "milestones"]

    def leaves(self) -> List["Schedule"]:
        return [self]

    def leaf_program(self) -> List[float]:
        hyper = self.hyperparameters()
        return [float(self.kind), float(len(hyper))] + hyper

    def program(self) -> List[float]:
        """The schedule program the ops take (NOTE: [schedule program])."""
        return [float(_C.COMBINATOR_SINGLE), 1.0] + self.leaf_program()

    def config(self) -> dict:
        """The constructor arguments, for state_dict and repr."""
        return {}

    @classmethod
    def _from_config(cls, config: dict) -> "Schedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.config() == other.config()


class Constant(Schedule):
    """The lr stays where it is (``schedule=None``)."""


class StepLR(Schedule):
    r"""Multiplies each group's lr by ``gamma`` every ``step_size`` schedule steps.

    As torch's ``StepLR``: at schedule step :math:`t > 0` with
    :math:`t \bmod \text{step\_size} = 0`, :math:`\eta \leftarrow \gamma\,\eta`.
    """

    kind = _C.KIND_STEP

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _check_int("step_size", step_size, 1, "StepLR")
        self.gamma = _check_real("gamma", gamma, "StepLR", minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [float(self.step_size), self.gamma]

    def config(self) -> dict:
        return {"step_size": self.step_size, "gamma": self.gamma}


class MultiStepLR(Schedule):
    r"""Multiplies each group's lr by ``gamma`` at every milestone (by
    ``gamma ** k`` at a milestone listed k times), as torch's ``MultiStepLR``."""

    kind = _C.KIND_MULTI_STEP

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1):
        owner = "MultiStepLR"
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"{owner}: milestones must be a list of ints >= 0, got {milestones!r}")
        milestones = list(milestones)
        if not milestones:
            raise ValueError(f"{owner}: milestones must hold at least one int >= 0, got []")
        self.milestones = sorted(_check_int(f"milestones[{i}]", m, 0, owner) for i, m in enumerate(milestones))
        self.gamma = _check_real("gamma", gamma, owner, minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [self.gamma] + [float(m) for m in self.milestones]

    def config(self) -> dict:
        return {"milestones": list(self.milestones), "gamma": self.gamma}


class ConstantLR(Schedule):
    r"""Multiplies the lr by ``factor`` until schedule step ``total_iters``,
    then restores it, as torch's ``ConstantLR``."""

    kind = _C.KIND_CONSTANT_FACTOR

    def __init__(self, factor: float = 1.0 / 3, total_iters: int = 5):
        # torch accepts factor 0, then divides by it at total_iters (ZeroDivisionError).
        self.factor = _check_real("factor", factor, "ConstantLR", above=0.0, maximum=1.0)
        self.total_iters = _check_int("total_iters", total_iters, 0, "ConstantLR")

    def hyperparameters(self) -> List[float]:
        return [self.factor, float(self.total_iters)]

    def config(self) -> dict:
        return {"factor": self.factor, "total_iters": self.total_iters}


class LinearLR(Schedule):
    r"""Scales the lr linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` schedule steps (torch's chainable ``LinearLR``)."""

    kind = _C.KIND_LINEAR

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5):
        owner = "LinearLR"
        self.start_factor = _check_real("start_factor", start_factor, owner, above=0.0, maximum=1.0)
        self.end_factor = _check_real("end_factor", end_factor, owner, minimum=0.0, maximum=1.0)
        self.total_iters = _check_int("total_iters", total_iters, 1, owner)

    def hyperparameters(self) -> List[float]:
        return [self.start_factor, self.end_factor, float(self.total_iters)]

    def config(self) -> dict:
        return {"start_factor": self.start_factor, "end_factor": self.end_factor, "total_iters": self.total_iters}


class ExponentialLR(Schedule):
    r""":math:`\eta \leftarrow \gamma\,\eta` every schedule step (torch's ``ExponentialLR``)."""

    kind = _C.KIND_EXPONENTIAL

    def __init__(self, gamma: float):
        self.gamma = _check_real("gamma", gamma, "ExponentialLR", minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [self.gamma]

    def config(self) -> dict:
        return {"gamma": self.gamma}


class PolynomialLR(Schedule):
    r"""Decays the lr to 0 over ``total_iters`` steps with the given ``power``
    (torch's chainable ``PolynomialLR``; it stays at 0 afterwards)."""

    kind = _C.KIND_POLYNOMIAL

    def __init__(self, total_iters: int = 5, power: float = 1.0):
        self.total_iters = _check_int("total_iters", total_iters, 1, "PolynomialLR")
        self.power = _check_real("power", power, "PolynomialLR", minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [float(self.total_iters), self.power]

    def config(self) -> dict:
        return {"total_iters": self.total_iters, "power": self.power}


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

    def __init__(self, T_max: int, eta_min: float = 0.0):
        self.T_max = _check_int("T_max", T_max, 1, "CosineAnnealingLR")
        self.eta_min = _check_real("eta_min", eta_min, "CosineAnnealingLR", minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [float(self.T_max), self.eta_min]

    def config(self) -> dict:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class CosineAnnealingWarmRestarts(Schedule):
    r"""SGDR, as torch's ``CosineAnnealingWarmRestarts``:
    :math:`\eta = \eta_{\min} + (\eta_{base} - \eta_{\min})(1 + \cos(\pi T_{cur}/T_i))/2`,
    restarting when :math:`T_{cur}` reaches :math:`T_i`, then :math:`T_i \leftarrow T_i \cdot T_{mult}`."""

    kind = _C.KIND_COSINE_RESTARTS

    def __init__(self, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        owner = "CosineAnnealingWarmRestarts"
        self.T_0 = _check_int("T_0", T_0, 1, owner)
        self.T_mult = _check_int("T_mult", T_mult, 1, owner)
        self.eta_min = _check_real("eta_min", eta_min, owner, minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [float(self.T_0), float(self.T_mult), self.eta_min]

    def config(self) -> dict:
        return {"T_0": self.T_0, "T_mult": self.T_mult, "eta_min": self.eta_min}


def _check_momentum_pair(owner: str, base_momentum, max_momentum):
    base = _check_per_group("base_momentum", base_momentum, owner, minimum=0.0, below=1.0)
    top = _check_per_group("max_momentum", max_momentum, owner, minimum=0.0, below=1.0)
    return base, top


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

    def __init__(self, max_lr: PerGroup, total_steps: Optional[int] = None, epochs: Optional[int] = None,
                 steps_per_epoch: Optional[int] = None, pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: PerGroup = 0.85, max_momentum: PerGroup = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False):
        owner = "OneCycleLR"
        self.max_lr = _check_per_group("max_lr", max_lr, owner, minimum=0.0)
        if total_steps is not None:
            self.total_steps = _check_int("total_steps", total_steps, 1, owner)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_check_int("epochs", epochs, 1, owner)
                                * _check_int("steps_per_epoch", steps_per_epoch, 1, owner))
        else:
            raise ValueError(f"{owner}: pass total_steps, or epochs and steps_per_epoch; got total_steps="
                             f"{total_steps!r}, epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}")
        self.pct_start = _check_real("pct_start", pct_start, owner, minimum=0.0, maximum=1.0)
        self.anneal_strategy = _check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"), owner)
        self.cycle_momentum = _check_flag("cycle_momentum", cycle_momentum, owner)
        self.base_momentum, self.max_momentum = _check_momentum_pair(owner, base_momentum, max_momentum)
        self.div_factor = _check_real("div_factor", div_factor, owner, above=0.0)
        self.final_div_factor = _check_real("final_div_factor", final_div_factor, owner, above=0.0)
        self.three_phase = _check_flag("three_phase", three_phase, owner)
        # torch divides by each phase's length; a phase of length 0 raises ZeroDivisionError there.
        ends = [float(self.pct_start * self.total_steps) - 1]
        if self.three_phase:
            ends.append(float(2 * self.pct_start * self.total_steps) - 2)
        ends.append(self.total_steps - 1)
        if any(b == a for a, b in zip([0.0] + ends, ends)):
            raise ValueError(f"{owner}: pct_start={self.pct_start!r} with total_steps={self.total_steps} gives a "
                             f"phase of length 0 (phase ends {ends}), which torch divides by; choose another "
                             "pct_start")
        self.cycles_momentum = self.cycle_momentum

    def hyperparameters(self) -> List[float]:
        return [float(self.total_steps), self.pct_start, 1.0 if self.anneal_strategy == "linear" else 0.0,
                1.0 if self.three_phase else 0.0, 1.0 if self.cycle_momentum else 0.0, self.div_factor,
                self.final_div_factor]

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        owner = "OneCycleLR"
        slots = {_C.GROUP_MAX_LR: _expand("max_lr", self.max_lr, num_groups, owner)}
        if self.cycle_momentum:
            slots[_C.GROUP_BASE_MOMENTUM] = _expand("base_momentum", self.base_momentum, num_groups, owner)
            slots[_C.GROUP_MAX_MOMENTUM] = _expand("max_momentum", self.max_momentum, num_groups, owner)
        return slots

    def config(self) -> dict:
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "anneal_strategy": self.anneal_strategy, "cycle_momentum": self.cycle_momentum,
                "base_momentum": self.base_momentum, "max_momentum": self.max_momentum,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "three_phase": self.three_phase}


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
    _MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_lr: PerGroup, max_lr: PerGroup, step_size_up: int = 2000,
                 step_size_down: Optional[int] = None, mode: str = "triangular", gamma: float = 1.0,
                 scale_fn=None, scale_mode: str = "cycle", cycle_momentum: bool = True,
                 base_momentum: PerGroup = 0.8, max_momentum: PerGroup = 0.9):
        owner = "CyclicLR"
        if scale_fn is not None:
            raise TypeError(f"{owner}: scale_fn={scale_fn!r} is a Python callable, which cannot run on the device; "
                            f"use mode= one of {list(self._MODES)} (with gamma for exp_range)")
        self.base_lr = _check_per_group("base_lr", base_lr, owner, minimum=0.0)
        self.max_lr = _check_per_group("max_lr", max_lr, owner, minimum=0.0)
        self.step_size_up = _check_real("step_size_up", step_size_up, owner, above=0.0)
        self.step_size_down = (None if step_size_down is None
                               else _check_real("step_size_down", step_size_down, owner, minimum=0.0))
        self.mode = _check_choice("mode", mode, self._MODES, owner)
        self.gamma = _check_real("gamma", gamma, owner, above=0.0)
        self.scale_mode = _check_choice("scale_mode", scale_mode, ("cycle", "iterations"), owner)
        self.cycle_momentum = _check_flag("cycle_momentum", cycle_momentum, owner)
        self.base_momentum, self.max_momentum = _check_momentum_pair(owner, base_momentum, max_momentum)
        self.cycles_momentum = self.cycle_momentum

    def hyperparameters(self) -> List[float]:
        down = self.step_size_up if self.step_size_down is None else self.step_size_down
        return [self.step_size_up, down, float(self._MODES.index(self.mode)), self.gamma,
                1.0 if self.cycle_momentum else 0.0]

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        owner = "CyclicLR"
        base_lrs = _expand("base_lr", self.base_lr, num_groups, owner)
        slots = {_C.GROUP_LR: base_lrs, _C.GROUP_BASE_LR: base_lrs,
                 _C.GROUP_MAX_LR: _expand("max_lr", self.max_lr, num_groups, owner)}
        if self.cycle_momentum:
            slots[_C.GROUP_BASE_MOMENTUM] = _expand("base_momentum", self.base_momentum, num_groups, owner)
            slots[_C.GROUP_MAX_MOMENTUM] = _expand("max_momentum", self.max_momentum, num_groups, owner)
        return slots

    def config(self) -> dict:
        return {"base_lr": self.base_lr, "max_lr": self.max_lr, "step_size_up": self.step_size_up,
                "step_size_down": self.step_size_down, "mode": self.mode, "gamma": self.gamma,
                "scale_mode": self.scale_mode, "cycle_momentum": self.cycle_momentum,
                "base_momentum": self.base_momentum, "max_momentum": self.max_momentum}


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

    def __init__(
        self,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: PerGroup = 0,
        eps: float = 1e-8,
    ):
        owner = "ReduceLROnPlateau"
        self.mode = _check_choice("mode", mode, ("min", "max"), owner)
        self.factor = _check_real("factor", factor, owner, minimum=0.0, below=1.0)
        self.patience = _check_int("patience", patience, 0, owner)
        self.threshold = _check_real("threshold", threshold, owner, minimum=0.0)
        self.threshold_mode = _check_choice("threshold_mode", threshold_mode, ("rel", "abs"), owner)
        self.cooldown = _check_int("cooldown", cooldown, 0, owner)
        self.min_lr = _check_per_group("min_lr", min_lr, owner, minimum=0.0)
        self.eps = _check_real("eps", eps, owner, minimum=0.0)

    def hyperparameters(self) -> List[float]:
        return [
            1.0 if self.mode == "max" else 0.0,
            self.factor,
            float(self.patience),
            self.threshold,
            1.0 if self.threshold_mode == "abs" else 0.0,
            float(self.cooldown),
            self.eps,
        ]

    def group_slots(self, num_groups: int) -> Dict[int, List[float]]:
        return {_C.GROUP_MIN_LR: _expand("min_lr", self.min_lr, num_groups, "ReduceLROnPlateau")}

    def config(self) -> dict:
        return {
            "mode": self.mode, "factor": self.factor, "patience": self.patience, "threshold": self.threshold,
            "threshold_mode": self.threshold_mode, "cooldown": self.cooldown, "min_lr": self.min_lr,
            "eps": self.eps,
        }


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


def _refuse_callable(name: str, alternatives: str):
    class Refused(Schedule):
        def __init__(self, *args, **kwargs):
            raise TypeError(f"{name} takes a Python callable, which cannot run on the device (a step would need the "
                            f"host); use {alternatives}")

    Refused.__name__ = Refused.__qualname__ = name
    Refused.__doc__ = f"Refused: {name} needs a Python callable per step. Use {alternatives}."
    return Refused


_COMPOSABLE = ("ConstantLR, LinearLR, ExponentialLR, StepLR, MultiStepLR, PolynomialLR, CosineAnnealingLR, "
               "CosineAnnealingWarmRestarts, combined with SequentialLR or ChainedScheduler")
LambdaLR = _refuse_callable("LambdaLR", _COMPOSABLE)
MultiplicativeLR = _refuse_callable("MultiplicativeLR", "ExponentialLR (a constant factor) or " + _COMPOSABLE)

_BY_NAME = {cls.__name__: cls for cls in (
    Constant, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
    CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR, ReduceLROnPlateau, SequentialLR, ChainedScheduler)}


def from_config(name: str, config: dict) -> Schedule:
    """Rebuilds a schedule from ``type(s).__name__`` and ``s.config()``."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown schedule {name!r}; accepted: {sorted(_BY_NAME)}")
    return _BY_NAME[name]._from_config(config)
