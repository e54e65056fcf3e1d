"""The field kinds of the schedule specifications (NOTE: [one list of fields]
in lrsched_fused/schedules/__init__.py): how each field of a schedule is
checked, and encoded for its program or its group slots."""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import List, Optional, Sequence, Tuple, Union

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


# The field kinds. Each checks (and normalizes) a field's value and encodes it for the program.
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
    """None or what `inner` accepts; None travels as NaN (csrc/schedules/kind.h: is_none)."""

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
