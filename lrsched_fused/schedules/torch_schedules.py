"""torch.optim.lr_scheduler's schedules, and its composites SequentialLR and
ChainedScheduler (csrc/schedules/torch_*.h compute them)."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

from .. import _C
from .base import Schedule, _check_program_size, _leaf, from_config
from .fields import (PerGroup, _check_int, _Choice, _Flag, _Int, _Milestones, _Optional, _per_group, _PerGroupReal,
                     _program, _Real, _setting)


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
"""Refused: constructing it raises ``TypeError``. torch's ``LambdaLR`` calls a
Python function every step, which cannot run on the device; compose the
schedules above (``SequentialLR``, ``ChainedScheduler``) or use
``get_scheduler`` for transformers' LambdaLR schedules."""
MultiplicativeLR = _refuse_callable("MultiplicativeLR", "ExponentialLR (a constant factor) or " + _COMPOSABLE)
"""Refused: constructing it raises ``TypeError`` (a Python callable per step).
A constant factor is ``ExponentialLR(gamma)``."""
