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
from typing import Any, Callable, Dict, List, Optional, Tuple

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
    copies it into the schedule state and restores the view.
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
        self._normalize_hyperparameters(defaults, "defaults")
        self._check_hyperparameters(defaults, "defaults")
        self._schedule = schedule
        self._schedule_interval = schedule_interval
        self._skip_schedule_on_overflow = skip_schedule_on_overflow
        self._schedule_state: Optional[torch.Tensor] = None
        self._lr_views: List[torch.Tensor] = []
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
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor):
                self._fail(TypeError, where, f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
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
        if self._schedule_state is not None and isinstance(getattr(self._schedule, "min_lr", None), list):
            self._fail(ValueError, where, "the schedule has a per-group min_lr list, which cannot grow with a "
                       "new group; use a single float min_lr")
        group = {**merged, "params": params}
        super().add_param_group(group)
        self._has_dtensors = self._has_dtensors or any(_is_dtensor(p) for p in params)
        if devices:
            self._device = devices.pop()
        if self._schedule_state is not None:
            self._grow_schedule_state(group["lr"])

    # ----------------------------------------------------- schedule state
    @property
    def _state_device(self) -> torch.device:
        return self._device if self._device is not None else torch.device("cpu")

    @staticmethod
    def _group_slots(lr: float, min_lr: float) -> List[float]:
        """One group's slots of the schedule state: its lr is also its base lr."""
        slots = [0.0] * _C.GROUP_STRIDE
        slots[_C.GROUP_LR] = lr
        slots[_C.GROUP_BASE_LR] = lr
        slots[_C.GROUP_MIN_LR] = min_lr
        return slots

    def _new_schedule_state(self) -> torch.Tensor:
        values = list(self._schedule.initial_header())
        min_lrs = self._schedule.min_lrs(len(self.param_groups))
        for group, min_lr in zip(self.param_groups, min_lrs):
            values += self._group_slots(group["lr"], min_lr)
        return torch.tensor(values, dtype=torch.float64).to(self._state_device)

    def _grow_schedule_state(self, lr: float) -> None:
        slots = self._group_slots(lr, self._schedule.min_lrs(1)[0])
        extra = torch.tensor(slots, dtype=torch.float64).to(self._state_device)
        self._schedule_state = torch.cat([self._schedule_state, extra])
        self._bind_group_lrs()

    def _lr_offset(self, group_index: int) -> int:
        return _C.HEADER_SIZE + group_index * _C.GROUP_STRIDE + _C.GROUP_LR

    def _bind_group_lrs(self) -> None:
        self._lr_views = [self._schedule_state[self._lr_offset(i)] for i in range(len(self.param_groups))]
        for group, view in zip(self.param_groups, self._lr_views):
            group["lr"] = view

    def _adopt_assigned_lrs(self) -> None:
        """Copies an lr the user assigned to group["lr"] into the schedule state
        (all of them checked first, so a bad one changes nothing)."""
        assigned = []
        for i, (group, view) in enumerate(zip(self.param_groups, self._lr_views)):
            lr = group["lr"]
            if lr is view:
                continue
            if isinstance(lr, torch.Tensor):
                if lr.numel() != 1 or lr.is_complex():
                    self._fail(ValueError, f"param group {i}", f"lr as a tensor must hold one real value, got "
                               f"shape {tuple(lr.shape)}")
                assigned.append((group, view, lr.detach().reshape(())))
            else:
                probe = {"lr": lr}
                self._normalize_lr(probe, f"param group {i}")
                assigned.append((group, view, probe["lr"]))
        for group, view, lr in assigned:
            if isinstance(lr, torch.Tensor):
                view.copy_(lr)
            else:
                view.fill_(lr)
            group["lr"] = view

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
            return torch.full((), float(metric), dtype=torch.float64, device=self._schedule_state.device)
        raise TypeError(f"{name}: the metric must be a real number or a one-element tensor, got {metric!r}")

    def _advance_schedule(self, metric: Optional[torch.Tensor], skip_if: Optional[torch.Tensor]) -> None:
        _ops.schedule_step_(self._schedule_state, self._schedule.kind, self._schedule.hyperparameters(), metric,
                            skip_if)

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
    def _grad_like_param(p: torch.Tensor) -> torch.Tensor:
        g = p.grad
        if g.stride() == p.stride():
            return g
        return torch.empty_like(p).copy_(g)  # the kernels walk param and grad storage in step

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
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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
            base = _C.HEADER_SIZE + i * _C.GROUP_STRIDE
            packed["lr"] = values[base + _C.GROUP_LR]
            packed["initial_lr"] = values[base + _C.GROUP_BASE_LR]
        state_dict["schedule"] = {
            "name": type(self._schedule).__name__,
            "config": self._schedule.config(),
            "interval": self._schedule_interval,
            "state": self._schedule_state.detach().clone(),
        }
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads ours or a torch optimizer's state_dict, copying into the
        existing state tensors and schedule state (their data_ptr is kept, so
        a captured CUDA graph stays valid)."""
        name = type(self).__name__
        state_dict = dict(state_dict)
        schedule_part = state_dict.pop("schedule", None)
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state_dict has {len(saved_groups)} param groups, this optimizer "
                             f"{len(self.param_groups)}")
        if schedule_part is not None:
            saved = from_config(schedule_part["name"], schedule_part["config"])
            if saved != self._schedule:
                raise ValueError(f"{name}: the state_dict holds the schedule {saved!r}, this optimizer has "
                                 f"{self._schedule!r}")
            if tuple(schedule_part["state"].shape) != tuple(self._schedule_state.shape):
                raise ValueError(f"{name}: the saved schedule state has shape {tuple(schedule_part['state'].shape)},"
                                 f" expected {tuple(self._schedule_state.shape)}")
        old_state = {p: dict(s) for p, s in self.state.items()}
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            previous = old_state.get(p, {})
            for key, value in list(state.items()):
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
                base = _C.HEADER_SIZE + i * _C.GROUP_STRIDE
                lr = float(group["lr"])
                self._schedule_state[base + _C.GROUP_LR] = lr
                self._schedule_state[base + _C.GROUP_BASE_LR] = float(group.get("initial_lr", lr))
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

    def _update(self, group_index, group, params, grad_scale, found_inf) -> None:
        momentum = group["momentum"]
        buffers, first_step = [], []
        if momentum != 0:
            for p in params:
                state = self.state[p]
                buffer = state.get("momentum_buffer")
                first_step.append(buffer is None)
                if buffer is None:
                    buffer = torch.empty_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = buffer
                buffers.append(buffer)
        _ops.sgd_step_(
            *self._local_shards(params, [self._grad_like_param(p) for p in params], buffers), first_step,
            self._schedule_state,
            group_index, momentum=momentum, dampening=group["dampening"], weight_decay=group["weight_decay"],
            nesterov=group["nesterov"], maximize=group["maximize"], grad_scale=grad_scale, found_inf=found_inf,
        )


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
        beta1, beta2 = group["betas"]
        _ops.adam_step_(
            *self._local_shards(params, [self._grad_like_param(p) for p in params], exp_avgs, exp_avg_sqs,
                                max_exp_avg_sqs), steps,
            self._schedule_state, group_index, beta1=float(beta1), beta2=float(beta2),
            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=amsgrad, maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"], grad_scale=grad_scale, found_inf=found_inf,
        )


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
