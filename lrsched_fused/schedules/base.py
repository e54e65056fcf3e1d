"""The base of the schedule specifications: a frozen dataclass whose fields
(lrsched_fused/schedules/fields.py) are checked at construction and encoded
into its program and group slots; and the registry that rebuilds a schedule
from a state_dict's config."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Dict, List, Sequence, Tuple

from .. import _C
from .fields import _expand

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
        index (csrc/state_layout.h), one value per group."""
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


#: Every schedule that a config names, by class name (filled by lrsched_fused/schedules/__init__.py).
_BY_NAME: Dict[str, type] = {}


def from_config(name: str, config: dict) -> Schedule:
    """Rebuilds a schedule from ``type(s).__name__`` and ``s.config()``."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown schedule {name!r}; accepted: {sorted(_BY_NAME)}")
    return _BY_NAME[name]._from_config(config)
