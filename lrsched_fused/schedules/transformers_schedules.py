"""transformers' schedules (``transformers.get_scheduler``), each a LambdaLR
computed on the device (csrc/schedules/transformers.h), and ``get_scheduler``."""
from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar, Optional, Sequence

from .. import _C
from .base import Schedule, _leaf
from .fields import _check_real, _Choice, _Int, _Optional, _program, _Real
from .torch_schedules import ReduceLROnPlateau

# NOTE: [transformers schedules] in csrc/schedules/transformers.h. Each is torch's
# LambdaLR(optimizer, lr_lambda) as transformers builds it:
# lr = initial_lr * lr_lambda(t), t the schedule step, computed with
# transformers' operations in their order (equal to the last bit on the CPU).
# Like any LambdaLR they restart from lr_lambda(0) at a SequentialLR milestone
# and overwrite the lr from initial_lr in a ChainedScheduler.
# `transformers_function` names the transformers.optimization function whose
# lr_lambda each one is (lrsched_fused.testing.torch_reference builds the twin with it).

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


#: Every name transformers' ``get_scheduler`` accepts (its ``SchedulerType``, transformers 5.24).
TRANSFORMERS_SCHEDULER_NAMES = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy")
"""The names of transformers' ``SchedulerType`` that ``get_scheduler`` knows
(``"greedy"`` is refused with a ``ValueError`` saying why)."""

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
