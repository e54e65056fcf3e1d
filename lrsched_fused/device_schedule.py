"""An optimizer's schedule on its device: the schedule program, the interval,
and the float64 state tensor with its slot layout (csrc/schedule_math.h,
NOTE: [schedule state layout]), the param groups' lr (and momentum) views
into it, and its ``schedule`` entry of the state_dict.

NOTE: [lr lives in the schedule state]
Each group's ``group["lr"]`` is a 0-dim float64 view into the state tensor,
so it always shows the lr the kernels use, on the device, without a copy.
Assigning a new value to ``group["lr"]`` (float or tensor) is honoured: the
next ``step()`` copies it into the schedule state and restores the view.
With a schedule that cycles momentum, the group's momentum (SGD's
``group["momentum"]``, Adam's ``group["betas"][0]``: a ``MomentumField``)
is such a view too, and is adopted the same way.

NOTE: [hyperparameters on the device]
Every per-group value an update kernel reads (weight_decay, betas, eps,
momentum, dampening: each optimizer's ``HyperparameterSlots``) lives in the
group's block of the state tensor beside its lr; the ops take no float
hyperparameter. ``group[key]`` keeps torch's plain Python value, and the
block mirrors it: it is written when the state is created, when a group is
added or loaded, and when a value is edited (``group["weight_decay"] = x``):
at the next eager ``step()`` or ``schedule_step()`` before the kernels run,
or, once a step was captured in a CUDA graph, at the assignment itself (the
groups are then ``ParamGroup``s), so the next replay uses it. An edit
inside a capture is refused, as a hand-set lr is: the write would be baked
into the graph. (Before a capture the groups stay plain dicts:
torch.compile traces an optimizer's param_groups only as plain dicts.) What decides the shape of the work (amsgrad, nesterov, maximize, a
momentum of 0 or not) stays on the host as the op's flags.

NOTE: [CUDA graph capture]
A captured graph keeps the addresses of every tensor it read or wrote and
the values of every host number it was handed. So, once a step or schedule
step of this optimizer was captured, nothing may replace the schedule state
(``add_param_group`` would), and inside a capture nothing may come from the
host: a metric given as a number, a metric or AMP tensor on another device,
an lr or momentum assigned by hand. Each is refused with a clear error
instead of a graph that silently replays a stale value.
"""
from __future__ import annotations

from operator import is_
from typing import Any, Dict, List, Optional, Sequence

import torch

from . import _C, _ops
from .schedules import Schedule
from .validation import check_momentum_value, check_schedule_entry, is_real, normalize_lr

__all__ = ["DeviceSchedule", "HyperparameterSlots", "MomentumField", "stream_is_capturing"]


def stream_is_capturing(device: torch.device) -> bool:
    """True while the current CUDA stream of ``device`` records a graph (no sync)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class MomentumField:
    """Where a param group keeps the momentum a schedule may cycle:
    ``group[key]``, or ``group[key][index]`` (Adam's beta1)."""

    def __init__(self, key: str, index: Optional[int] = None):
        self.key = key
        self.index = index

    def get(self, group: Dict[str, Any]):
        value = group[self.key]
        return value if self.index is None else value[self.index]

    def set(self, group: Dict[str, Any], value) -> None:
        if self.index is None:
            group[self.key] = value
        else:
            values = list(group[self.key])
            values[self.index] = value
            group[self.key] = tuple(values)


class HyperparameterSlots:
    """Where a group's hyperparameters live in its block (NOTE:
    [hyperparameters on the device]): ``group[key]`` -> a slot, or for a
    sequence (Adam's betas) one slot per element (None: not on the device)."""

    def __init__(self, slots: Dict[str, Any]):
        self.slots = slots
        self.keys = tuple(slots)

    def values(self, group: Dict[str, Any]) -> List[tuple]:
        """(slot, value) for every value of ``group`` the kernels read."""
        pairs = []
        for key, slot in self.slots.items():
            if isinstance(slot, tuple):
                pairs += [(s, v) for s, v in zip(slot, group[key]) if s is not None]
            else:
                pairs.append((slot, group[key]))
        return pairs


class DeviceSchedule:
    """The schedule of one optimizer, its state on the optimizer's device,
    and the views its param groups hold (NOTE: [lr lives in the schedule state],
    NOTE: [hyperparameters on the device])."""

    def __init__(self, schedule: Schedule, interval: str, momentum: MomentumField,
                 hyperparameters: HyperparameterSlots, owner: str):
        self.schedule = schedule
        self.program = schedule.program()
        self.interval = interval
        self.momentum = momentum
        self.hyperparameters = hyperparameters
        self.owner = owner
        self.state: Optional[torch.Tensor] = None
        self.captured = False  # a step of it was recorded in a CUDA graph
        self._lr_views: List[torch.Tensor] = []
        self._momentum_views: List[torch.Tensor] = []
        self._metric_buffer: Optional[torch.Tensor] = None
        self._written: List[tuple] = []  # each group's hyperparameter values as last written

    # ------------------------------------------------------------ the state
    @property
    def cycles_momentum(self) -> bool:
        return self.schedule.cycles_momentum

    def offset(self, group_index: int, slot: int) -> int:
        """Where ``slot`` of group ``group_index`` sits in the state tensor."""
        return _C.HEADER_SIZE + group_index * _C.GROUP_STRIDE + slot

    def _group_slots(self, groups: Sequence[Dict[str, Any]], per_group: Dict[int, List[float]]) -> List[float]:
        """Each group's lr (also its base lr), hyperparameters and the schedule's own per-group values."""
        values = []
        for i, group in enumerate(groups):
            slots = [0.0] * _C.GROUP_STRIDE
            slots[_C.GROUP_LR] = slots[_C.GROUP_BASE_LR] = float(group["lr"])
            for slot, value in self.hyperparameters.values(group):
                slots[slot] = float(value)
            for slot, per_group_values in per_group.items():
                slots[slot] = per_group_values[i]
            values += slots
        return values

    def _device_values(self, group: Dict[str, Any]) -> List[tuple]:
        """(slot, value) of the group's hyperparameters that this class
        writes: all but a cycled momentum, which the schedule owns (a value
        assigned to it by hand is adopted with the lr, ``adopt_assigned``)."""
        pairs = self.hyperparameters.values(group)
        if self.cycles_momentum:
            pairs = [(slot, value) for slot, value in pairs if slot != _C.GROUP_MOMENTUM]
        return pairs

    def _snapshot(self, group: Dict[str, Any]) -> tuple:
        return tuple(value for _, value in self._device_values(group))

    def write_hyperparameters(self, index: int, group: Dict[str, Any], edit: bool = True) -> None:
        """Writes the group's hyperparameters into its block. An edit is
        refused inside a capture (NOTE: [CUDA graph capture]); a load
        (``edit=False``) copies like the rest of load_state_dict."""
        if edit and stream_is_capturing(self.state.device):
            raise RuntimeError(f"{self.owner}: a hyperparameter of param group {index} edited while a CUDA graph is "
                               "being captured would be baked into the graph; edit it before capturing or between "
                               "replays (NOTE: [hyperparameters on the device])")
        for slot, value in self._device_values(group):
            view = self.state[self.offset(index, slot)]
            if isinstance(value, torch.Tensor):
                view.copy_(value.detach().reshape(()))
            else:
                view.fill_(float(value))
        while len(self._written) <= index:
            self._written.append(())
        self._written[index] = self._snapshot(group)

    def write_edited_hyperparameters(self, groups: List[Dict[str, Any]]) -> None:
        """Writes the hyperparameters of every group edited since they were
        last written (an edit that bypassed ``ParamGroup``), checked before."""
        written = self._written
        for i, group in enumerate(groups):
            if i >= len(written) or not all(map(_same_value, self._snapshot(group), written[i])):
                self.write_hyperparameters(i, group)

    def create(self, groups: List[Dict[str, Any]], device: torch.device) -> None:
        """The state after torch's scheduler constructor (its initial step runs
        on the device, in the schedule's own code), bound to ``groups``."""
        self.schedule.check_group_lrs([float(g["lr"]) for g in groups], "the optimizer's param groups")
        values = [0.0] * _C.HEADER_SIZE
        values += self._group_slots(groups, self.schedule.group_slots(len(groups)))
        self.state = torch.tensor(values, dtype=torch.float64).to(device)
        _ops.schedule_step_(self.state, self.program, None, None, initial=True)
        self.bind(groups)
        self._written = [self._snapshot(group) for group in groups]

    def check_can_grow(self, group: Dict[str, Any], where: str) -> None:
        """Whether ``group`` may join (before add_param_group changes anything)."""
        name = type(self.schedule).__name__
        self.schedule.check_group_lrs([group["lr"]], where)
        if not self.schedule.composable:
            raise ValueError(f"{self.owner}: {name} sets every group's lr from its own per-group values and "
                             f"cannot take a group added later (torch's fails on it too) ({where})")
        lists = self.schedule.per_group_lists()
        if lists:
            raise ValueError(f"{self.owner}: the schedule has per-group lists ({', '.join(lists)}), which cannot "
                             f"grow with a new group; use single floats ({where})")
        if self.captured:
            raise RuntimeError(f"{self.owner}: a step of this optimizer was captured in a CUDA graph, which writes "
                               "the schedule state where it is now; a new group would move it (NOTE: [CUDA graph "
                               f"capture]). Add every param group before capturing ({where})")

    def grow(self, groups: List[Dict[str, Any]]) -> None:
        """The last of ``groups`` joins with its own lr as base lr and no
        initial step, as torch's chainable schedulers treat a late group."""
        extra = self._group_slots(groups[-1:], self.schedule.group_slots(1))
        extra = torch.tensor(extra, dtype=torch.float64).to(self.state.device)
        self.state = torch.cat([self.state, extra])
        self.bind(groups)
        self._written.append(self._snapshot(groups[-1]))

    def bind(self, groups: List[Dict[str, Any]]) -> None:
        """Points every group's lr (and cycled momentum) at its slot."""
        self._lr_views = [self.state[self.offset(i, _C.GROUP_LR)] for i in range(len(groups))]
        for group, view in zip(groups, self._lr_views):
            group["lr"] = view
        if self.cycles_momentum:
            self._momentum_views = [self.state[self.offset(i, _C.GROUP_MOMENTUM)] for i in range(len(groups))]
            for group, view in zip(groups, self._momentum_views):
                self.momentum.set(group, view)

    @property
    def group_count(self) -> int:
        """The param groups the state holds a block for."""
        return len(self._lr_views)

    def momentum_is_view(self, group_index: int, group: Dict[str, Any]) -> bool:
        """True when the group's momentum is the schedule's own view (not assigned by hand)."""
        return group_index < len(self._momentum_views) and \
            self.momentum.get(group) is self._momentum_views[group_index]

    def adopt_assigned(self, groups: List[Dict[str, Any]]) -> None:
        """Copies an lr (or a cycled momentum) assigned to a group by hand
        into the state (all checked first, so a bad one changes nothing)."""
        assigned = []
        for i, (group, view) in enumerate(zip(groups, self._lr_views)):
            lr = group["lr"]
            if lr is view:
                continue
            if isinstance(lr, torch.Tensor):
                if lr.numel() != 1 or lr.is_complex():
                    raise ValueError(f"{self.owner}: lr as a tensor must hold one real value, got shape "
                                     f"{tuple(lr.shape)} (param group {i})")
                assigned.append((view, lr.detach().reshape(())))
            else:
                probe = {"lr": lr}
                normalize_lr(probe, self.owner, f"param group {i}")
                assigned.append((view, probe["lr"]))
        for i, (group, view) in enumerate(zip(groups, self._momentum_views)):
            value = self.momentum.get(group)
            if value is view:
                continue
            check_momentum_value(value, self.owner, f"param group {i}")
            assigned.append((view, value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value)))
        if not assigned:
            return
        if stream_is_capturing(self.state.device):
            raise RuntimeError(f"{self.owner}: an lr or momentum assigned by hand would be baked into the CUDA graph "
                               "being captured, and every replay would reset it; assign it before capturing, or "
                               "copy into the group's lr view in place (NOTE: [CUDA graph capture])")
        for view, value in assigned:
            if isinstance(value, torch.Tensor):
                view.copy_(value)
            else:
                view.fill_(value)
        self.bind(groups)

    # ------------------------------------------------------------- stepping
    def note_capture(self) -> bool:
        """Records whether this call is being captured into a CUDA graph; returns it."""
        capturing = stream_is_capturing(self.state.device)
        self.captured = self.captured or capturing
        return capturing

    def device_tensor(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """``t`` on the state's device (a copy only when it is elsewhere)."""
        device = self.state.device
        if t.device == device:
            return t
        if stream_is_capturing(device):
            raise RuntimeError(f"{self.owner}: {what} is on {t.device}, but this step is being captured in a CUDA "
                               f"graph, where a copy from {t.device} cannot replay; put it on {device} "
                               "(NOTE: [CUDA graph capture])")
        return t.to(device, non_blocking=True)

    def metric_tensor(self, metric) -> torch.Tensor:
        """``metric`` as a one-element tensor on the state's device."""
        if isinstance(metric, torch.Tensor):
            if metric.numel() != 1:
                raise ValueError(f"{self.owner}: the metric must be a one-element tensor, got shape "
                                 f"{tuple(metric.shape)}")
            if metric.is_complex() or metric.dtype == torch.bool:
                raise TypeError(f"{self.owner}: the metric must be a real number, got a {metric.dtype} tensor")
            return self.device_tensor(metric.detach(), "the metric")
        if is_real(metric):
            device = self.state.device
            if stream_is_capturing(device):
                raise TypeError(f"{self.owner}: a metric given as a number ({metric!r}) would be baked into the CUDA "
                                "graph being captured; pass a 0-dim tensor on the device, written before each "
                                "replay (NOTE: [CUDA graph capture])")
            # One persistent buffer: a number costs no allocation per call.
            if self._metric_buffer is None or self._metric_buffer.device != device:
                self._metric_buffer = torch.empty((), dtype=torch.float64, device=device)
            return self._metric_buffer.fill_(float(metric))
        raise TypeError(f"{self.owner}: the metric must be a real number or a one-element tensor, got {metric!r}")

    def advance(self, metric: Optional[torch.Tensor], skip_if: Optional[torch.Tensor]) -> None:
        """One scheduler.step() on the device (``skip_if`` != 0: none)."""
        _ops.schedule_step_(self.state, self.program, metric, skip_if)

    # -------------------------------------------------------- reading it
    @property
    def lrs(self) -> torch.Tensor:
        """The current lr of every group, a view (no copy, no sync)."""
        return self.state[_C.HEADER_SIZE + _C.GROUP_LR::_C.GROUP_STRIDE]

    @property
    def base_lrs(self) -> List[float]:
        """torch's ``initial_lr`` of every group (reads the device)."""
        return self.state[_C.HEADER_SIZE + _C.GROUP_BASE_LR::_C.GROUP_STRIDE].tolist()

    @property
    def last_epoch(self) -> int:
        """Schedule steps taken so far (reads the device)."""
        return int(self.state[_C.LAST_EPOCH])

    def plateau_value(self, slot: int) -> float:
        """A slot of the ReduceLROnPlateau leaf's state (it may sit in a composite; reads the device)."""
        leaf = next(i for i, s in enumerate(self.schedule.leaves()) if s.requires_metric)
        return float(self.state[_C.FIRST_LEAF + leaf * _C.LEAF_STRIDE + slot])

    # ------------------------------------------------------- the state_dict
    def state_dict_entry(self) -> Dict[str, Any]:
        """The ``schedule`` entry of the optimizer's state_dict."""
        return {"name": type(self.schedule).__name__, "config": self.schedule.config(), "interval": self.interval,
                "state": self.state.detach().clone()}

    def write_group_values(self, packed_groups: List[Dict[str, Any]]) -> None:
        """A float ``lr``, ``initial_lr`` (and cycled momentum) into each saved
        group, so torch's optimizers load them."""
        values = self.state.tolist()
        for i, packed in enumerate(packed_groups):
            packed["lr"] = values[self.offset(i, _C.GROUP_LR)]
            packed["initial_lr"] = values[self.offset(i, _C.GROUP_BASE_LR)]
            if self.cycles_momentum:
                self.momentum.set(packed, values[self.offset(i, _C.GROUP_MOMENTUM)])

    def check_entry(self, part) -> Dict[str, Any]:
        """A saved ``schedule`` entry fits this schedule (before anything is
        copied); returns it with its state in this version's layout."""
        part = _in_current_layout(part, self.state.numel())
        check_schedule_entry(part, self.schedule, self.interval, self.state.shape, self.owner)
        return part

    def load_entry(self, part: Dict[str, Any], groups: List[Dict[str, Any]]) -> None:
        """Copies a checked saved entry into the state (its storage is kept,
        so a captured CUDA graph stays valid); pending hand-set lrs are
        dropped; the loaded groups' hyperparameters are written."""
        self.state.copy_(part["state"])
        for i, group in enumerate(groups):
            self.write_hyperparameters(i, group, edit=False)
        self.bind(groups)

    def load_from_groups(self, groups: List[Dict[str, Any]]) -> None:
        """The groups' own ``lr`` / ``initial_lr`` (a state_dict without a
        schedule entry, e.g. torch's) into the state."""
        for i, group in enumerate(groups):
            lr = float(group["lr"])
            self.state[self.offset(i, _C.GROUP_LR)] = lr
            self.state[self.offset(i, _C.GROUP_BASE_LR)] = float(group.get("initial_lr", lr))
            if self.cycles_momentum:
                self.state[self.offset(i, _C.GROUP_MOMENTUM)] = float(self.momentum.get(group))
            group.pop("initial_lr", None)
            self.write_hyperparameters(i, group, edit=False)
        self.bind(groups)


def _same_value(a, b) -> bool:
    """Whether a hyperparameter still holds what was written: the same
    object, or an equal number (never a tensor's value: that would read it)."""
    return a is b or (not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b)


_LEGACY_GROUP_STRIDE = 8  # before the hyperparameters joined the group block


def _in_current_layout(part, numel: int):
    """A saved entry whose state has the layout of a version before the
    hyperparameters moved to the device (8 slots per group), widened to
    this version's (the new slots are written from the loaded groups)."""
    state = part.get("state") if isinstance(part, dict) else None
    if not isinstance(state, torch.Tensor) or state.dim() != 1 or state.numel() == numel:
        return part
    groups = (numel - _C.HEADER_SIZE) // _C.GROUP_STRIDE
    if state.numel() != _C.HEADER_SIZE + groups * _LEGACY_GROUP_STRIDE:
        return part
    widened = torch.zeros(numel, dtype=state.dtype, device=state.device)
    widened[:_C.HEADER_SIZE] = state[:_C.HEADER_SIZE]
    old = state[_C.HEADER_SIZE:].view(groups, _LEGACY_GROUP_STRIDE)
    widened[_C.HEADER_SIZE:].view(groups, _C.GROUP_STRIDE)[:, :_LEGACY_GROUP_STRIDE] = old
    return {**part, "state": widened}
