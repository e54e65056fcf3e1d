"""Learning-rate schedule specifications.

A schedule here is a description (its kind and hyperparameters); the optimizer
owns its state in a device tensor and advances it with one op per
``schedule_step()`` (see csrc/schedule_math.h, NOTE: [schedule state layout]).
Names, arguments, defaults and the chainable semantics are torch's
(``torch.optim.lr_scheduler``), minus the optimizer argument.
"""
from __future__ import annotations

import math
import numbers
from typing import List, Sequence, Union

from . import _C

__all__ = ["Schedule", "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int, owner: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value, owner: str, *, minimum: float = None, below: float = None) -> float:
    accepted = "a finite real number"
    if minimum is not None:
        accepted += f" >= {minimum}"
    if below is not None:
        accepted += f" < {below}"
    if not _is_real(value):
        raise TypeError(f"{owner}: {name} must be {accepted}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (below is not None and value >= below):
        raise ValueError(f"{owner}: {name} must be {accepted}, got {value!r}")
    return value


def _check_choice(name: str, value, choices: Sequence[str], owner: str) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")
    return value


class Schedule:
    """Base class of the schedule specifications."""

    kind: int = _C.KIND_CONSTANT
    #: True when ``schedule_step`` needs a metric (ReduceLROnPlateau).
    requires_metric: bool = False

    def hyperparameters(self) -> List[float]:
        """The float64 hyperparameters the device kernel reads, in its order."""
        return []

    def min_lrs(self, num_groups: int) -> List[float]:
        """Per-group lower bounds of the lr (only ReduceLROnPlateau has them)."""
        return [0.0] * num_groups

    def initial_header(self) -> List[float]:
        """The schedule state header after torch's initial scheduler step."""
        header = [0.0] * _C.HEADER_SIZE
        header[_C.LAST_EPOCH] = 0.0
        return header

    def config(self) -> dict:
        """The constructor arguments, for state_dict and repr."""
        return {}

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
        min_lr: Union[float, Sequence[float]] = 0,
        eps: float = 1e-8,
    ):
        owner = "ReduceLROnPlateau"
        self.mode = _check_choice("mode", mode, ("min", "max"), owner)
        self.factor = _check_real("factor", factor, owner, minimum=0.0, below=1.0)
        self.patience = _check_int("patience", patience, 0, owner)
        self.threshold = _check_real("threshold", threshold, owner, minimum=0.0)
        self.threshold_mode = _check_choice("threshold_mode", threshold_mode, ("rel", "abs"), owner)
        self.cooldown = _check_int("cooldown", cooldown, 0, owner)
        if isinstance(min_lr, (list, tuple)):
            self.min_lr = [_check_real(f"min_lr[{i}]", v, owner, minimum=0.0) for i, v in enumerate(min_lr)]
        else:
            self.min_lr = _check_real("min_lr", min_lr, owner, minimum=0.0)
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

    def min_lrs(self, num_groups: int) -> List[float]:
        if isinstance(self.min_lr, list):
            if len(self.min_lr) != num_groups:
                raise ValueError(
                    f"ReduceLROnPlateau: min_lr has {len(self.min_lr)} entries but the optimizer has "
                    f"{num_groups} param groups; pass one float or one per group"
                )
            return list(self.min_lr)
        return [self.min_lr] * num_groups

    def initial_header(self) -> List[float]:
        header = super().initial_header()
        header[_C.PLATEAU_BEST] = -math.inf if self.mode == "max" else math.inf
        return header

    def config(self) -> dict:
        return {
            "mode": self.mode, "factor": self.factor, "patience": self.patience, "threshold": self.threshold,
            "threshold_mode": self.threshold_mode, "cooldown": self.cooldown, "min_lr": self.min_lr,
            "eps": self.eps,
        }


_BY_NAME = {cls.__name__: cls for cls in (Constant, StepLR, CosineAnnealingLR, ReduceLROnPlateau)}


def from_config(name: str, config: dict) -> Schedule:
    """Rebuilds a schedule from ``type(s).__name__`` and ``s.config()``."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown schedule {name!r}; accepted: {sorted(_BY_NAME)}")
    return _BY_NAME[name](**config)
