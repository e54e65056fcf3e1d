"""FusedSGD, FusedAdam and FusedAdamW: torch.optim optimizers whose lr
schedule lives on the device and is applied inside the fused update.

Layers: this file holds the torch.optim-facing behaviour (param groups,
validation, lazy state, state_dict); ``_ops`` holds the op wrappers; the math
lives in csrc/update_math.h and csrc/schedule_math.h.
"""
from __future__ import annotations

import math
import numbers
import sys
from collections import defaultdict
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch.optim import Optimizer

from . import _C, _ops
from .schedules import Constant, Schedule, from_config

__all__ = ["FusedSGD", "FusedAdam", "FusedAdamW"]

_INTERVALS = ("epoch", "step")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_dense(t: torch.Tensor) -> bool:
    """True when t's elements fill its storage span exactly (any dim order),
    so the kernels can walk it as one flat array."""
    if t.numel() == 0:
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _is_dtensor(t: torch.Tensor) -> bool:
    # Looked up rather than imported: whoever made a DTensor has imported
    # torch.distributed.tensor, and torch builds without distributed lack it.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def _sharding(t: torch.Tensor):
    """A DTensor's (mesh, placements); None for a plain tensor."""
    return (t.device_mesh, t.placements) if _is_dtensor(t) else None


class _FusedOptimizer(Optimizer):
    """What FusedSGD and FusedAdam share: the schedule state, param-group
    validation, sync-free bookkeeping around the ops and the state_dict.

    NOTE: [lr lives in the schedule state]
    Each group's ``group["lr"]`` is a 0-dim float64 view into
    ``schedule_state`` (layout: csrc/schedule_math.h), so it always shows the
    lr the kernels use, on the device, without a copy. Assigning a new value
    to ``group["lr"]`` (float or tensor) is honoured: the next ``step()``
    copies it into the schedule state and restores the view. With a schedule
    that cycles momentum, SGD's ``group["momentum"]`` and Adam's
    ``group["betas"][0]`` are such views too, and are adopted the same way.
    """

    _step_supports_amp_scaling = True

    def __init__(self, params, defaults: Dict[str, Any], schedule: Optional[Schedule], schedule_interval: str,
                 skip_schedule_on_overflow: bool):
        name = type(self).__name__
        if schedule is None:
            schedule = Constant()
        if not isinstance(schedule, Schedule):
            hint = ""
            if type(schedule).__module__.startswith("torch.optim"):
                hint = " (a torch.optim.lr_scheduler object cannot be used; pass its lrsched_fused.schedules twin)"
            raise TypeError(
                f"{name}: schedule must be None or an lrsched_fused.schedules object such as "
                f"schedules.StepLR(step_size=30), got {schedule!r}{hint}"
            )
        if schedule_interval not in _INTERVALS:
            raise ValueError(f"{name}: schedule_interval must be one of {list(_INTERVALS)}, got {schedule_interval!r}")
        if schedule_interval == "step" and schedule.requires_metric:
            raise ValueError(
                f"{name}: {type(schedule).__name__} needs a metric, so it cannot advance inside step(); "
                "use schedule_interval='epoch' and call schedule_step(metric)"
            )
        if not isinstance(skip_schedule_on_overflow, bool):
            raise TypeError(f"{name}: skip_schedule_on_overflow must be a bool, got {skip_schedule_on_overflow!r}")
        if isinstance(params, set):
            raise TypeError(f"{name}: params must be an ordered collection (a list), not a set: its order "
                            "would change between runs and break state_dict")
        if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of param-group dicts, got "
                            f"{type(params).__name__}")
        self._normalize_hyperparameters(defaults, "defaults")
        self._check_hyperparameters(defaults, "defaults")
        self._schedule = schedule
        self._program = schedule.program()
        self._schedule_interval = schedule_interval
        self._skip_schedule_on_overflow = skip_schedule_on_overflow
        self._schedule_state: Optional[torch.Tensor] = None
        self._lr_views: List[torch.Tensor] = []
        self._momentum_views: List[torch.Tensor] = []
        self._metric_buffer: Optional[torch.Tensor] = None
        self._checked_hyperparameters: List[tuple] = []
        self._device: Optional[torch.device] = None
        self._has_dtensors = False
        super().__init__(params, defaults)
        self._schedule_state = self._new_schedule_state()
        self._bind_group_lrs()

    # ----------------------------------------------------------- validation
    def _check_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        raise NotImplementedError

    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        """Turns one-element tensor hyperparameters (torch accepts some) into floats, once."""

    def _fail(self, exc_type, where: str, message: str):
        raise exc_type(f"{type(self).__name__}: {message} ({where})")

    def _check_nonnegative(self, group: Dict[str, Any], key: str, where: str) -> None:
        value = group[key]
        if not _is_real(value):
            self._fail(TypeError, where, f"{key} must be a real number >= 0, got {value!r}")
        if math.isnan(value) or value < 0:
            self._fail(ValueError, where, f"{key} must be a real number >= 0, got {value!r}")

    def _check_flag(self, group: Dict[str, Any], key: str, where: str) -> None:
        if not isinstance(group[key], bool):
            self._fail(TypeError, where, f"{key} must be a bool, got {group[key]!r}")

    def _check_edited_hyperparameters(self) -> None:
        """Checks the groups' hyperparameters again where they changed since
        the last check (torch lets users edit them between steps)."""
        keys = [key for key in self.defaults if key != "lr"]
        checked = self._checked_hyperparameters
        for i, group in enumerate(self.param_groups):
            if i < len(self._momentum_views) and self._assigned_momentum(group) is self._momentum_views[i]:
                # the schedule's own momentum view: checked as the schedule's value, not re-read
                group = dict(group)
                self._set_group_momentum(group, 0.5)
            values = tuple(group.get(key) for key in keys)
            if i < len(checked) and checked[i] == values:
                continue
            self._check_hyperparameters(group, f"param group {i}")
            checked[i:i + 1] = [values]

    def _normalize_lr(self, group: Dict[str, Any], where: str) -> None:
        lr = group.get("lr")
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1 or lr.is_complex():
                self._fail(ValueError, where, f"lr as a tensor must hold one real value, got shape {tuple(lr.shape)}")
            group["lr"] = float(lr)  # once, at construction
        lr = group.get("lr")
        if not _is_real(lr):
            self._fail(TypeError, where, f"lr must be a real number >= 0, got {lr!r}")
        if math.isnan(lr) or math.isinf(lr) or lr < 0:
            self._fail(ValueError, where, f"lr must be a finite real number >= 0, got {lr!r}")
        group["lr"] = float(lr)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """As torch's, plus validation before anything changes; a group added
        after construction joins the schedule with its own lr as base lr."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        where = f"param group {len(self.param_groups)}"
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name}: params must be an ordered collection, not a set ({where})")
        else:
            try:
                params = list(params)
            except TypeError:
                raise TypeError(f"{name}: params must be an iterable of Tensors, got {params!r} ({where})") from None
        devices = set() if self._device is None else {self._device}
        seen = {id(p): f"param group {j}" for j, g in enumerate(self.param_groups) for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                self._fail(TypeError, where, f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
            if id(p) in seen:
                self._fail(ValueError, where, f"params[{i}] (shape {tuple(p.shape)}) is already in "
                           f"{seen[id(p)]}; accepted: each parameter once, in one group")
            seen[id(p)] = f"this group (params[{i}])"
            if p.is_complex():
                self._fail(TypeError, where, f"params[{i}] is complex ({p.dtype}); accepted: float16, bfloat16, "
                           "float32, float64 (view complex parameters with torch.view_as_real)")
            if not p.is_floating_point():
                self._fail(TypeError, where, f"params[{i}] has dtype {p.dtype}; accepted: float16, bfloat16, "
                           "float32, float64")
            if p.is_sparse or not _is_dense(p):
                self._fail(ValueError, where, f"params[{i}] is not a dense tensor; accepted: dense parameters")
            devices.add(p.device)
        if len(devices) > 1:
            self._fail(ValueError, where, f"parameters are on several devices {sorted(map(str, devices))}; one "
                       "optimizer takes the parameters of one device (use one optimizer per device)")
        merged = {**self.defaults, **group}
        self._normalize_lr(merged, where)
        self._normalize_hyperparameters(merged, where)
        self._check_hyperparameters(merged, where)
        if self._schedule_state is not None:
            if not self._schedule.composable:
                self._fail(ValueError, where, f"{type(self._schedule).__name__} sets every group's lr from its own "
                           "per-group values and cannot take a group added later (torch's fails on it too)")
            lists = self._schedule.per_group_lists()
            if lists:
                self._fail(ValueError, where, f"the schedule has per-group lists ({', '.join(lists)}), which "
                           "cannot grow with a new group; use single floats")
        group = {**merged, "params": params}
        super().add_param_group(group)
        self._has_dtensors = self._has_dtensors or any(_is_dtensor(p) for p in params)
        if devices:
            self._device = devices.pop()
        if self._schedule_state is not None:
            self._grow_schedule_state(group)

    # ----------------------------------------------------- schedule state
    @property
    def _state_device(self) -> torch.device:
        return self._device if self._device is not None else torch.device("cpu")

    # The momentum a group hands the schedule (SGD's momentum, Adam's beta1),
    # and where a cycling schedule puts it back; see FusedSGD, FusedAdam.
    def _group_momentum(self, group: Dict[str, Any]) -> float:
        raise NotImplementedError

    def _set_group_momentum(self, group: Dict[str, Any], value) -> None:
        raise NotImplementedError

    def _group_slots(self, groups: List[Dict[str, Any]], per_group: Dict[int, List[float]]) -> List[float]:
        """The group slots of the schedule state (NOTE: [schedule state layout]):
        each group's lr is also its base lr, then the schedule's own values."""
        values = []
        for i, group in enumerate(groups):
            slots = [0.0] * _C.GROUP_STRIDE
            slots[_C.GROUP_LR] = slots[_C.GROUP_BASE_LR] = float(group["lr"])
            slots[_C.GROUP_MOMENTUM] = self._group_momentum(group)
            for slot, per_group_values in per_group.items():
                slots[slot] = per_group_values[i]
            values += slots
        return values

    def _new_schedule_state(self) -> torch.Tensor:
        """The schedule state after torch's scheduler constructor (its initial
        step runs on the device, in the schedule's own code)."""
        values = [0.0] * _C.HEADER_SIZE
        values += self._group_slots(self.param_groups, self._schedule.group_slots(len(self.param_groups)))
        state = torch.tensor(values, dtype=torch.float64).to(self._state_device)
        _ops.schedule_step_(state, self._program, None, None, initial=True)
        return state

    def _grow_schedule_state(self, group: Dict[str, Any]) -> None:
        """A group added later joins with its own lr as base lr and no initial
        step, as torch's chainable schedulers treat it."""
        extra = self._group_slots([group], self._schedule.group_slots(1))
        extra = torch.tensor(extra, dtype=torch.float64).to(self._state_device)
        self._schedule_state = torch.cat([self._schedule_state, extra])
        self._bind_group_lrs()

    def _slot_offset(self, group_index: int, slot: int) -> int:
        return _C.HEADER_SIZE + group_index * _C.GROUP_STRIDE + slot

    def _bind_group_lrs(self) -> None:
        state = self._schedule_state
        self._lr_views = [state[self._slot_offset(i, _C.GROUP_LR)] for i in range(len(self.param_groups))]
        for group, view in zip(self.param_groups, self._lr_views):
            group["lr"] = view
        if self._schedule.cycles_momentum:
            self._momentum_views = [state[self._slot_offset(i, _C.GROUP_MOMENTUM)]
                                    for i in range(len(self.param_groups))]
            for group, view in zip(self.param_groups, self._momentum_views):
                self._set_group_momentum(group, view)

    def _adopt_assigned_lrs(self) -> None:
        """Copies an lr (or a cycled momentum) the user assigned to a group
        into the schedule state (all checked first, so a bad one changes nothing)."""
        assigned = []
        for i, (group, view) in enumerate(zip(self.param_groups, self._lr_views)):
            lr = group["lr"]
            if lr is view:
                continue
            if isinstance(lr, torch.Tensor):
                if lr.numel() != 1 or lr.is_complex():
                    self._fail(ValueError, f"param group {i}", f"lr as a tensor must hold one real value, got "
                               f"shape {tuple(lr.shape)}")
                assigned.append((view, lr.detach().reshape(())))
            else:
                probe = {"lr": lr}
                self._normalize_lr(probe, f"param group {i}")
                assigned.append((view, probe["lr"]))
        for i, (group, view) in enumerate(zip(self.param_groups, self._momentum_views)):
            momentum = self._assigned_momentum(group)
            if momentum is view:
                continue
            if isinstance(momentum, torch.Tensor) and (momentum.numel() != 1 or momentum.is_complex()):
                self._fail(ValueError, f"param group {i}", "a momentum/beta1 tensor must hold one real value")
            if not isinstance(momentum, torch.Tensor) and (not _is_real(momentum) or not 0 <= momentum < 1):
                self._fail(ValueError, f"param group {i}", f"momentum/beta1 must be in [0, 1), got {momentum!r}")
            assigned.append((view, momentum.detach().reshape(()) if isinstance(momentum, torch.Tensor)
                             else float(momentum)))
        for view, value in assigned:
            if isinstance(value, torch.Tensor):
                view.copy_(value)
            else:
                view.fill_(value)
        if assigned:
            self._bind_group_lrs()

    def _assigned_momentum(self, group: Dict[str, Any]):
        raise NotImplementedError

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    @property
    def schedule_state(self) -> torch.Tensor:
        """The float64 device tensor holding all changing schedule state."""
        return self._schedule_state

    @property
    def lr_tensor(self) -> torch.Tensor:
        """The current lr of every group, a device-side view (no copy, no sync)."""
        return self._schedule_state[_C.HEADER_SIZE + _C.GROUP_LR::_C.GROUP_STRIDE]

    def get_last_lr(self) -> List[float]:
        """The current lr of every group, like ``scheduler.get_last_lr()``.
        Reads the device state, so on CUDA it syncs: keep it off the hot path."""
        self._adopt_assigned_lrs()
        return self.lr_tensor.tolist()

    def schedule_step(self, metric=None) -> None:
        """One ``scheduler.step()`` (or ``scheduler.step(metric)`` for
        ReduceLROnPlateau), computed on the device. ``metric``: a one-element
        tensor (read on the device, no sync) or a real number."""
        name = type(self).__name__
        schedule_name = type(self._schedule).__name__
        if self._schedule_interval == "step":
            raise RuntimeError(
                f"{name}: schedule_interval='step' advances the schedule inside step(); "
                "schedule_step() would advance it twice"
            )
        metric_tensor = None
        if self._schedule.requires_metric:
            if metric is None:
                raise TypeError(f"{name}: {schedule_name} needs a metric: call schedule_step(val_loss)")
            metric_tensor = self._metric_tensor(metric)
        elif metric is not None:
            raise TypeError(f"{name}: {schedule_name} takes no metric, got {metric!r}; call schedule_step()")
        self._adopt_assigned_lrs()
        self._advance_schedule(metric_tensor, None)

    def _metric_tensor(self, metric) -> torch.Tensor:
        name = type(self).__name__
        if isinstance(metric, torch.Tensor):
            if metric.numel() != 1:
                raise ValueError(f"{name}: the metric must be a one-element tensor, got shape {tuple(metric.shape)}")
            if metric.is_complex() or metric.dtype == torch.bool:
                raise TypeError(f"{name}: the metric must be a real number, got a {metric.dtype} tensor")
            metric = metric.detach()
            if metric.device != self._schedule_state.device:
                metric = metric.to(self._schedule_state.device, non_blocking=True)
            return metric
        if _is_real(metric):
            # One persistent buffer: a number costs no allocation per call.
            device = self._schedule_state.device
            if self._metric_buffer is None or self._metric_buffer.device != device:
                self._metric_buffer = torch.empty((), dtype=torch.float64, device=device)
            return self._metric_buffer.fill_(float(metric))
        raise TypeError(f"{name}: the metric must be a real number or a one-element tensor, got {metric!r}")

    def _advance_schedule(self, metric: Optional[torch.Tensor], skip_if: Optional[torch.Tensor]) -> None:
        _ops.schedule_step_(self._schedule_state, self._program, metric, skip_if)

    # --------------------------------------------------------------- step
    def _amp_tensors(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """grad_scale / found_inf set by torch.amp.GradScaler (as for torch's fused optimizers)."""
        found = []
        for attr in ("grad_scale", "found_inf"):
            t = getattr(self, attr, None)
            if t is not None and t.device != self._state_device:
                t = t.to(self._state_device, non_blocking=True)
            found.append(t)
        return found[0], found[1]

    def _grads_by_dtype(self, group_index: int, group: Dict[str, Any]):
        """Params with a grad, grouped by dtype, after checking every grad."""
        buckets: Dict[torch.dtype, List[torch.Tensor]] = defaultdict(list)
        for i, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise TypeError(f"{type(self).__name__}: params[{i}] of param group {group_index} has a sparse "
                                "gradient; accepted: dense gradients (torch.optim.SparseAdam handles sparse ones)")
            if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
                raise ValueError(f"{type(self).__name__}: the grad of params[{i}] of param group {group_index} is "
                                 f"{g.dtype} {tuple(g.shape)} on {g.device}, its parameter {p.dtype} "
                                 f"{tuple(p.shape)} on {p.device}")
            if self._has_dtensors and _sharding(g) != _sharding(p):
                raise ValueError(f"{type(self).__name__}: the grad of params[{i}] of param group {group_index} is "
                                 f"sharded as {_sharding(g)}, its parameter as {_sharding(p)} (None: a plain "
                                 "tensor); accepted: a grad sharded like its parameter (NOTE: [DTensor parameters])")
            buckets[p.dtype].append(p)
        return buckets

    @staticmethod
    def _grads_like_params(params: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each grad, copied to its parameter's layout where the strides differ
        (the kernels walk param and grad storage in step)."""
        return [p.grad if p.grad.stride() == p.stride() else torch.empty_like(p).copy_(p.grad) for p in params]

    @staticmethod
    def _write_back_unscaled_grads(params: List[torch.Tensor], grads: List[torch.Tensor],
                                   grad_scale: Optional[torch.Tensor]) -> None:
        """With a GradScaler the kernels unscale the grads in place, as torch's
        fused optimizers do; a grad that was copied goes back to p.grad."""
        if grad_scale is None:
            return
        for p, g in zip(params, grads):
            if g is not p.grad:
                p.grad.copy_(g)

    def _local_shards(self, params: List[torch.Tensor], grads: List[torch.Tensor], *states: List[torch.Tensor]):
        """(params, grads, *states) as the tensors the kernels update.

        NOTE: [DTensor parameters]
        Under FSDP2 (``fully_shard``) or tensor parallelism the parameters,
        their grads and the states made from them with ``zeros_like`` are
        DTensors. The update is elementwise, so updating a DTensor is updating
        each rank's local shard in place, with no communication (torch's fused
        Adam does the same through DTensor's pointwise strategy). The states
        stay DTensors, as torch's do, so distributed checkpoints see the same
        layout. A grad must be sharded like its parameter (checked in
        ``_grads_by_dtype``, before any update).
        """
        if not self._has_dtensors:
            return (params, grads, *states)
        return tuple([t.to_local() if _is_dtensor(t) else t for t in tensors] for tensors in (params, grads, *states))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One fused update of every param group (and, with
        ``schedule_interval='step'``, one schedule step). No host sync."""
        loss = None
        if closure is not None and not callable(closure):
            raise TypeError(f"{type(self).__name__}: step() takes a callable closure or None, got {closure!r}")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_edited_hyperparameters()
        work = [(i, group, self._grads_by_dtype(i, group)) for i, group in enumerate(self.param_groups)]
        self._adopt_assigned_lrs()
        grad_scale, found_inf = self._amp_tensors()
        for group_index, group, buckets in work:
            for params in buckets.values():
                self._update(group_index, group, params, grad_scale, found_inf)
        if self._schedule_interval == "step":
            self._advance_schedule(None, found_inf if self._skip_schedule_on_overflow else None)
        return loss

    def _update(self, group_index, group, params, grad_scale, found_inf) -> None:
        raise NotImplementedError

    # --------------------------------------------------------- state_dict
    def state_dict(self) -> Dict[str, Any]:
        """torch's optimizer state_dict (state names ``step``, ``exp_avg``, ...;
        float ``lr`` and ``initial_lr`` per group, so torch optimizers load it)
        plus ``schedule``: the schedule's name, config, interval and state."""
        self._adopt_assigned_lrs()
        state_dict = super().state_dict()
        values = self._schedule_state.tolist()
        for i, packed in enumerate(state_dict["param_groups"]):
            packed["lr"] = values[self._slot_offset(i, _C.GROUP_LR)]
            packed["initial_lr"] = values[self._slot_offset(i, _C.GROUP_BASE_LR)]
            if self._schedule.cycles_momentum:
                self._set_group_momentum(packed, values[self._slot_offset(i, _C.GROUP_MOMENTUM)])
        state_dict["schedule"] = {
            "name": type(self._schedule).__name__,
            "config": self._schedule.config(),
            "interval": self._schedule_interval,
            "state": self._schedule_state.detach().clone(),
        }
        return state_dict

    def _check_saved_state(self, state_dict: Dict[str, Any], saved_groups: List[Dict[str, Any]]) -> None:
        """Each saved per-parameter tensor must fit the parameter it will be
        loaded into (torch's load_state_dict pairs them by position)."""
        saved_ids = [i for group in saved_groups for i in group.get("params", [])]
        params = [p for group in self.param_groups for p in group["params"]]
        by_id = dict(zip(saved_ids, enumerate(params)))
        for saved_id, state in state_dict.get("state", {}).items():
            if saved_id not in by_id:
                continue
            index, p = by_id[saved_id]
            for key, value in state.items():
                if key == "step":
                    if not (_is_real(value) or isinstance(value, torch.Tensor) and value.numel() == 1):
                        raise ValueError(f"{type(self).__name__}: the state_dict's step of parameter {index} is "
                                         f"{value!r}; accepted: a number or a one-element tensor")
                elif isinstance(value, torch.Tensor) and value.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}: the state_dict's {key} of parameter {index} has "
                                     f"shape {tuple(value.shape)}, the parameter {tuple(p.shape)}")

    def _check_schedule_part(self, part) -> None:
        """A saved ``schedule`` entry must be well formed and hold this
        optimizer's schedule, interval and state shape (checked before anything is copied)."""
        name = type(self).__name__
        if not isinstance(part, dict) or not {"name", "config", "state"} <= part.keys():
            got = f"keys {sorted(map(str, part))}" if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"{name}: a saved schedule entry is a dict with 'name', 'config', 'interval' and "
                             f"'state' (as state_dict() writes it), got {got}")
        try:
            saved = from_config(part["name"], part["config"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{name}: the saved schedule {part['name']!r} with config {part['config']!r} cannot "
                             f"be rebuilt: {exc}") from None
        if saved != self._schedule:
            raise ValueError(f"{name}: the state_dict holds the schedule {saved!r}, this optimizer has "
                             f"{self._schedule!r}")
        if part.get("interval", self._schedule_interval) != self._schedule_interval:
            raise ValueError(f"{name}: the state_dict's schedule advances per {part['interval']!r}, "
                             f"this optimizer's per {self._schedule_interval!r}")
        state = part["state"]
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != tuple(self._schedule_state.shape):
            raise ValueError(f"{name}: the saved schedule state must be a tensor of shape "
                             f"{tuple(self._schedule_state.shape)} (one block per param group), got "
                             f"{state if not isinstance(state, torch.Tensor) else tuple(state.shape)!r}")

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads ours or a torch optimizer's state_dict, copying into the
        existing state tensors and schedule state (their data_ptr is kept, so
        a captured CUDA graph stays valid)."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: load_state_dict takes the dict state_dict() returns, got "
                            f"{type(state_dict).__name__}")
        state_dict = dict(state_dict)
        schedule_part = state_dict.pop("schedule", None)
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state_dict has {len(saved_groups)} param groups, this optimizer "
                             f"{len(self.param_groups)}")
        self._check_saved_state(state_dict, saved_groups)
        if schedule_part is not None:
            self._check_schedule_part(schedule_part)
        old_state = {p: dict(s) for p, s in self.state.items()}
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            previous = old_state.get(p, {})
            for key, value in list(state.items()):
                if key == "step" and _is_real(value):
                    value = torch.tensor(float(value), dtype=torch.float64)
                if not isinstance(value, torch.Tensor):
                    continue
                if key == "step":
                    value = value.to(dtype=torch.float64, device=p.device)
                kept = previous.get(key)
                if isinstance(kept, torch.Tensor) and kept.shape == value.shape and kept.dtype == value.dtype:
                    kept.copy_(value)
                    state[key] = kept
                else:
                    state[key] = value.clone()  # never alias the caller's state_dict
        if schedule_part is not None:
            self._schedule_state.copy_(schedule_part["state"])
        else:
            for i, group in enumerate(self.param_groups):
                lr = float(group["lr"])
                self._schedule_state[self._slot_offset(i, _C.GROUP_LR)] = lr
                self._schedule_state[self._slot_offset(i, _C.GROUP_BASE_LR)] = float(group.get("initial_lr", lr))
                if self._schedule.cycles_momentum:
                    self._schedule_state[self._slot_offset(i, _C.GROUP_MOMENTUM)] = self._group_momentum(group)
        for group in self.param_groups:
            group.pop("initial_lr", None)
        self._bind_group_lrs()


class FusedSGD(_FusedOptimizer):
    """torch.optim.SGD (momentum, dampening, nesterov, weight decay, maximize)
    with the lr schedule on the device; see the package docs for ``schedule``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 schedule: Optional[Schedule] = None, schedule_interval: str = "epoch",
                 skip_schedule_on_overflow: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        self._normalize_lr(defaults, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        for key in ("momentum", "weight_decay"):
            self._check_nonnegative(group, key, where)
        if not _is_real(group["dampening"]) or math.isnan(group["dampening"]):
            self._fail(TypeError, where, f"dampening must be a real number, got {group['dampening']!r}")
        for key in ("nesterov", "maximize"):
            self._check_flag(group, key, where)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            self._fail(ValueError, where, "nesterov=True requires momentum > 0 and dampening == 0, got "
                       f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _group_momentum(self, group: Dict[str, Any]) -> float:
        return float(group["momentum"])

    def _set_group_momentum(self, group: Dict[str, Any], value) -> None:
        group["momentum"] = value

    def _assigned_momentum(self, group: Dict[str, Any]):
        return group["momentum"]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """As the base class's; a momentum buffer saved without a step (by
        torch's SGD, or by an older version of FusedSGD) has history: step 1."""
        saved_state = state_dict.get("state") if isinstance(state_dict, dict) else None
        if isinstance(saved_state, dict):
            state_dict = {**state_dict, "state": {
                key: {**value, "step": 1.0} if isinstance(value, dict) and value.get("momentum_buffer") is not None
                and "step" not in value else value for key, value in saved_state.items()}}
        super().load_state_dict(state_dict)

    def _update(self, group_index, group, params, grad_scale, found_inf) -> None:
        cycled = self._schedule.cycles_momentum  # the kernel reads the momentum from the schedule state
        momentum = 0.0 if cycled else group["momentum"]
        buffers, steps = [], []
        if cycled or momentum != 0:
            for p in params:
                state = self.state[p]
                if state.get("momentum_buffer") is None:
                    # step counts the steps the buffer took: at 0 the kernel sets it to the grad (and a
                    # step skipped by GradScaler leaves both untouched)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
                elif "step" not in state:  # a buffer set without load_state_dict (ZeRO does): it has history
                    state["step"] = torch.ones((), dtype=torch.float64, device=p.device)
                buffers.append(state["momentum_buffer"])
                steps.append(state["step"])
        grads = self._grads_like_params(params)
        _ops.sgd_step_(
            *self._local_shards(params, grads, buffers), steps, self._schedule_state,
            group_index, momentum=momentum, dampening=group["dampening"], weight_decay=group["weight_decay"],
            nesterov=group["nesterov"], maximize=group["maximize"], grad_scale=grad_scale, found_inf=found_inf,
            momentum_from_schedule=cycled,
        )
        self._write_back_unscaled_grads(params, grads, grad_scale)


class FusedAdam(_FusedOptimizer):
    """torch.optim.Adam (amsgrad, maximize, L2 or decoupled weight decay) with
    the lr schedule on the device; see the package docs for ``schedule``."""

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, schedule: Optional[Schedule] = None,
                 schedule_interval: str = "epoch", skip_schedule_on_overflow: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        self._normalize_lr(defaults, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow)

    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        betas = group["betas"]
        if isinstance(betas, (tuple, list)) and any(isinstance(b, torch.Tensor) for b in betas):
            for i, b in enumerate(betas):
                if isinstance(b, torch.Tensor) and (b.numel() != 1 or b.is_complex()):
                    self._fail(ValueError, where, f"betas[{i}] as a tensor must hold one real value")
            group["betas"] = tuple(float(b) if isinstance(b, torch.Tensor) else b for b in betas)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        for key in ("eps", "weight_decay"):
            self._check_nonnegative(group, key, where)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            self._fail(TypeError if not isinstance(betas, (tuple, list)) else ValueError, where,
                       f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        for i, beta in enumerate(betas):
            if not _is_real(beta):
                self._fail(TypeError, where, f"betas[{i}] must be a number in [0, 1), got {beta!r}")
            if not 0.0 <= beta < 1.0:
                self._fail(ValueError, where, f"betas[{i}] must be in [0, 1), got {beta!r}")
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            self._check_flag(group, key, where)

    def _group_momentum(self, group: Dict[str, Any]) -> float:
        return float(group["betas"][0])

    def _set_group_momentum(self, group: Dict[str, Any], value) -> None:
        group["betas"] = (value, *group["betas"][1:])

    def _assigned_momentum(self, group: Dict[str, Any]):
        return group["betas"][0]

    def _update(self, group_index, group, params, grad_scale, found_inf) -> None:
        amsgrad = group["amsgrad"]
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if amsgrad:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
        cycled = self._schedule.cycles_momentum  # the kernel reads beta1 from the schedule state
        beta1, beta2 = group["betas"]
        grads = self._grads_like_params(params)
        _ops.adam_step_(
            *self._local_shards(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs), steps,
            self._schedule_state, group_index, beta1=0.0 if cycled else float(beta1), beta2=float(beta2),
            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=amsgrad, maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"], grad_scale=grad_scale, found_inf=found_inf,
            momentum_from_schedule=cycled,
        )
        self._write_back_unscaled_grads(params, grads, grad_scale)


class FusedAdamW(FusedAdam):
    """torch.optim.AdamW: FusedAdam with decoupled weight decay and AdamW's
    default weight_decay=1e-2."""

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 schedule: Optional[Schedule] = None, schedule_interval: str = "epoch",
                 skip_schedule_on_overflow: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True, schedule=schedule,
                         schedule_interval=schedule_interval, skip_schedule_on_overflow=skip_schedule_on_overflow)
