"""Checks of what users hand the optimizers: constructor arguments, param
groups, hyperparameters (also when edited by hand between steps), grads and
state_dicts. Each raises TypeError/ValueError naming the value and what is
accepted, before anything changes. ``owner`` is the optimizer's class name,
``where`` the place ("defaults", "param group 1") the messages name."""
from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable
from typing import Any, Dict, List, Optional, Sequence

import torch

from .schedules import Schedule, from_config

#: The parameter dtypes the kernels update.
ACCEPTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ACCEPTED_DTYPE_NAMES = "float16, bfloat16, float32, float64"


def is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_dense(t: torch.Tensor) -> bool:
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


def is_dtensor(t: torch.Tensor) -> bool:
    # Looked up rather than imported: whoever made a DTensor has imported
    # torch.distributed.tensor, and torch builds without distributed lack it.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def sharding(t: torch.Tensor):
    """A DTensor's (mesh, placements); None for a plain tensor."""
    return (t.device_mesh, t.placements) if is_dtensor(t) else None


def fail(exc_type, owner: str, where: str, message: str):
    raise exc_type(f"{owner}: {message} ({where})")


# ------------------------------------------------------ constructor arguments
INTERVALS = ("epoch", "step")


def check_optimizer_arguments(params, schedule, interval, skip_schedule_on_overflow, owner: str) -> None:
    """The optimizer's arguments besides its hyperparameters."""
    if not isinstance(schedule, Schedule):
        hint = ""
        if type(schedule).__module__.startswith("torch.optim"):
            hint = " (a torch.optim.lr_scheduler object cannot be used; pass its lrsched_fused.schedules twin)"
        raise TypeError(f"{owner}: schedule must be None or an lrsched_fused.schedules object such as "
                        f"schedules.StepLR(step_size=30), got {schedule!r}{hint}")
    if interval not in INTERVALS:
        raise ValueError(f"{owner}: schedule_interval must be one of {list(INTERVALS)}, got {interval!r}")
    if interval == "step" and schedule.requires_metric:
        raise ValueError(f"{owner}: {type(schedule).__name__} needs a metric, so it cannot advance inside step(); "
                         "use schedule_interval='epoch' and call schedule_step(metric)")
    if not isinstance(skip_schedule_on_overflow, bool):
        raise TypeError(f"{owner}: skip_schedule_on_overflow must be a bool, got {skip_schedule_on_overflow!r}")
    if isinstance(params, set):
        raise TypeError(f"{owner}: params must be an ordered collection (a list), not a set: its order "
                        "would change between runs and break state_dict")
    if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
        raise TypeError(f"{owner}: params must be an iterable of Tensors or of param-group dicts, got "
                        f"{type(params).__name__}")


# ----------------------------------------------------------- hyperparameters
def check_nonnegative(group: Dict[str, Any], key: str, owner: str, where: str) -> None:
    value = group[key]
    if not is_real(value):
        fail(TypeError, owner, where, f"{key} must be a real number >= 0, got {value!r}")
    if math.isnan(value) or value < 0:
        fail(ValueError, owner, where, f"{key} must be a real number >= 0, got {value!r}")


def check_flag(group: Dict[str, Any], key: str, owner: str, where: str) -> None:
    if not isinstance(group[key], bool):
        fail(TypeError, owner, where, f"{key} must be a bool, got {group[key]!r}")


def normalize_lr(group: Dict[str, Any], owner: str, where: str) -> None:
    """``group["lr"]`` as a float >= 0 (a one-element tensor is read once, here)."""
    lr = group.get("lr")
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1 or lr.is_complex():
            fail(ValueError, owner, where, f"lr as a tensor must hold one real value, got shape {tuple(lr.shape)}")
        lr = float(lr)  # once, at construction
    if not is_real(lr):
        fail(TypeError, owner, where, f"lr must be a real number >= 0, got {lr!r}")
    if math.isnan(lr) or math.isinf(lr) or lr < 0:
        fail(ValueError, owner, where, f"lr must be a finite real number >= 0, got {lr!r}")
    group["lr"] = float(lr)


def normalize_betas(group: Dict[str, Any], owner: str, where: str) -> None:
    """One-element tensor betas (torch accepts them) as floats, read once."""
    betas = group["betas"]
    if isinstance(betas, (tuple, list)) and any(isinstance(b, torch.Tensor) for b in betas):
        for i, b in enumerate(betas):
            if isinstance(b, torch.Tensor) and (b.numel() != 1 or b.is_complex()):
                fail(ValueError, owner, where, f"betas[{i}] as a tensor must hold one real value")
        group["betas"] = tuple(float(b) if isinstance(b, torch.Tensor) else b for b in betas)


def check_sgd_hyperparameters(group: Dict[str, Any], owner: str, where: str, momentum_on_device: bool) -> None:
    """``momentum_on_device``: the momentum is the schedule's view (cycle_momentum), not checked here."""
    check_nonnegative(group, "weight_decay", owner, where)
    if not momentum_on_device:
        check_nonnegative(group, "momentum", owner, where)
    if not is_real(group["dampening"]) or math.isnan(group["dampening"]):
        fail(TypeError, owner, where, f"dampening must be a real number, got {group['dampening']!r}")
    for key in ("nesterov", "maximize"):
        check_flag(group, key, owner, where)
    if group["nesterov"] and not momentum_on_device and (group["momentum"] <= 0 or group["dampening"] != 0):
        fail(ValueError, owner, where, "nesterov=True requires momentum > 0 and dampening == 0, got "
             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")


def check_betas(group: Dict[str, Any], owner: str, where: str, momentum_on_device: bool, one_taken: bool) -> None:
    """``group["betas"]``: a pair of numbers in [0, 1) ([0, 1] with ``one_taken``); beta1 is not checked
    when it is the schedule's view (``momentum_on_device``)."""
    interval = "[0, 1]" if one_taken else "[0, 1)"
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        fail(TypeError if not isinstance(betas, (tuple, list)) else ValueError, owner, where,
             f"betas must be a pair of numbers in {interval}, got {betas!r}")
    for i, beta in enumerate(betas):
        if i == 0 and momentum_on_device:
            continue
        if not is_real(beta):
            fail(TypeError, owner, where, f"betas[{i}] must be a number in {interval}, got {beta!r}")
        if not (0.0 <= beta <= 1.0 if one_taken else 0.0 <= beta < 1.0):
            fail(ValueError, owner, where, f"betas[{i}] must be in {interval}, got {beta!r}")


def check_adam_hyperparameters(group: Dict[str, Any], owner: str, where: str, momentum_on_device: bool) -> None:
    """``momentum_on_device``: beta1 is the schedule's view (cycle_momentum), not checked here."""
    for key in ("eps", "weight_decay"):
        check_nonnegative(group, key, owner, where)
    check_betas(group, owner, where, momentum_on_device, one_taken=False)
    for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
        check_flag(group, key, owner, where)


def check_lion_hyperparameters(group: Dict[str, Any], owner: str, where: str, momentum_on_device: bool) -> None:
    """Lion's betas may be 1 (lion-pytorch takes [0, 1]); ``momentum_on_device``: beta1 is the schedule's view."""
    check_nonnegative(group, "weight_decay", owner, where)
    check_betas(group, owner, where, momentum_on_device, one_taken=True)
    check_flag(group, "maximize", owner, where)


def check_momentum_value(value, owner: str, where: str) -> None:
    """A momentum/beta1 assigned by hand to a schedule that cycles it."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            fail(ValueError, owner, where, "a momentum/beta1 tensor must hold one real value")
    elif not is_real(value) or not 0 <= value < 1:
        fail(ValueError, owner, where, f"momentum/beta1 must be in [0, 1), got {value!r}")


# ------------------------------------------------------------------- params
def group_params(param_group, owner: str, where: str) -> List[torch.Tensor]:
    """The ``params`` entry of a param group as a list."""
    params = param_group.get("params")
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, set):
        raise TypeError(f"{owner}: params must be an ordered collection, not a set ({where})")
    try:
        return list(params)
    except TypeError:
        raise TypeError(f"{owner}: params must be an iterable of Tensors, got {params!r} ({where})") from None


def split_names(params: List, owner: str, where: str):
    """``(name, tensor)`` pairs (``model.named_parameters()``) as (tensors,
    names), as torch takes them; (params, None) for bare tensors."""
    named = [isinstance(p, tuple) for p in params]
    if not any(named):
        return params, None
    if not all(named):
        fail(ValueError, owner, where, "params mix (name, tensor) pairs and bare tensors; accepted: every "
             "parameter with a name (model.named_parameters()) or none")
    for i, pair in enumerate(params):
        if len(pair) != 2 or not isinstance(pair[0], str):
            fail(TypeError, owner, where, f"params[{i}] must be a Tensor or a (name, Tensor) pair, got {pair!r}")
    return [p for _, p in params], [name for name, _ in params]


def check_params(params: Sequence, taken: Dict[int, str], device: Optional[torch.device], owner: str,
                 where: str) -> Optional[torch.device]:
    """Each parameter a dense tensor of an accepted dtype, listed once (``taken``:
    id -> where it already is), all on one device; returns that device."""
    devices = set() if device is None else {device}
    seen = dict(taken)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            fail(TypeError, owner, where, f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if id(p) in seen:
            fail(ValueError, owner, where, f"params[{i}] (shape {tuple(p.shape)}) is already in {seen[id(p)]}; "
                 "accepted: each parameter once, in one group")
        seen[id(p)] = f"this group (params[{i}])"
        if p.is_complex():
            fail(TypeError, owner, where, f"params[{i}] is complex ({p.dtype}); accepted: {_ACCEPTED_DTYPE_NAMES} "
                 "(view complex parameters with torch.view_as_real)")
        if p.dtype not in ACCEPTED_DTYPES:
            fail(TypeError, owner, where, f"params[{i}] has dtype {p.dtype}; accepted: {_ACCEPTED_DTYPE_NAMES}")
        if p.is_sparse or not is_dense(p):
            fail(ValueError, owner, where, f"params[{i}] is not a dense tensor; accepted: dense parameters")
        devices.add(p.device)
    if len(devices) > 1:
        fail(ValueError, owner, where, f"parameters are on several devices {sorted(map(str, devices))}; one "
             "optimizer takes the parameters of one device (use one optimizer per device)")
    return devices.pop() if devices else None


def check_grad(p: torch.Tensor, g: torch.Tensor, index: int, group_index: int, owner: str) -> None:
    """The error for a grad the kernels cannot take (found by the C++ grad check)."""
    place = f"params[{index}] of param group {group_index}"
    if g.layout != torch.strided:
        raise TypeError(f"{owner}: {place} has a sparse gradient; accepted: dense gradients "
                        "(torch.optim.SparseAdam handles sparse ones)")
    if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
        raise ValueError(f"{owner}: the grad of {place} is {g.dtype} {tuple(g.shape)} on {g.device}, its "
                         f"parameter {p.dtype} {tuple(p.shape)} on {p.device}")
    if sharding(g) != sharding(p):
        raise ValueError(f"{owner}: the grad of {place} is sharded as {sharding(g)}, its parameter as "
                         f"{sharding(p)} (None: a plain tensor); accepted: a grad sharded like its parameter "
                         "(NOTE: [DTensor parameters])")


# -------------------------------------------------------------- state_dicts
def check_saved_state(state_dict: Dict[str, Any], saved_groups: List[Dict[str, Any]],
                      param_groups: List[Dict[str, Any]], owner: str, check_other=None) -> None:
    """Each saved per-parameter tensor must fit the parameter it will be
    loaded into (torch's load_state_dict pairs them by position);
    ``check_other(key, value, p, index)`` checks the entries not shaped like
    the parameter it knows (8-bit states' absmax and maps), returning True."""
    if len(saved_groups) != len(param_groups):
        raise ValueError(f"{owner}: the state_dict has {len(saved_groups)} param groups, this optimizer "
                         f"{len(param_groups)}")
    for i, group in enumerate(saved_groups):
        if "lr" in group:
            normalize_lr({"lr": group["lr"]}, owner, f"the state_dict's param group {i}")
    saved_ids = [i for group in saved_groups for i in group.get("params", [])]
    params = [p for group in param_groups for p in group["params"]]
    by_id = dict(zip(saved_ids, enumerate(params)))
    for saved_id, state in state_dict.get("state", {}).items():
        if saved_id not in by_id:
            continue
        index, p = by_id[saved_id]
        for key, value in state.items() if isinstance(state, dict) else ():
            if key == "step":
                if not (is_real(value) or isinstance(value, torch.Tensor) and value.numel() == 1):
                    raise ValueError(f"{owner}: the state_dict's step of parameter {index} is {value!r}; "
                                     "accepted: a number or a one-element tensor")
            elif check_other is not None and check_other(key, value, p, index):
                continue
            elif isinstance(value, torch.Tensor) and value.shape != p.shape:
                raise ValueError(f"{owner}: the state_dict's {key} of parameter {index} has shape "
                                 f"{tuple(value.shape)}, the parameter {tuple(p.shape)}")


def check_schedule_entry(part, schedule: Schedule, interval: str, state_shape, owner: str) -> None:
    """A saved ``schedule`` entry must be well formed and hold this
    optimizer's schedule, interval and state shape."""
    if not isinstance(part, dict) or not {"name", "config", "state"} <= part.keys():
        got = f"keys {sorted(map(str, part))}" if isinstance(part, dict) else type(part).__name__
        raise ValueError(f"{owner}: a saved schedule entry is a dict with 'name', 'config', 'interval' and "
                         f"'state' (as state_dict() writes it), got {got}")
    try:
        saved = from_config(part["name"], part["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{owner}: the saved schedule {part['name']!r} with config {part['config']!r} cannot "
                         f"be rebuilt: {exc}") from None
    if saved != schedule:
        raise ValueError(f"{owner}: the state_dict holds the schedule {saved!r}, this optimizer has {schedule!r}")
    if part.get("interval", interval) != interval:
        raise ValueError(f"{owner}: the state_dict's schedule advances per {part['interval']!r}, "
                         f"this optimizer's per {interval!r}")
    state = part["state"]
    if not isinstance(state, torch.Tensor) or tuple(state.shape) != tuple(state_shape):
        raise ValueError(f"{owner}: the saved schedule state must be a tensor of shape {tuple(state_shape)} "
                         "(one block per param group), got "
                         f"{state if not isinstance(state, torch.Tensor) else tuple(state.shape)!r}")


def state_to_load(p: torch.Tensor, kept: Dict[str, Any], state: Dict[str, Any]):
    """One parameter's loaded state: (kept tensor, loaded value) pairs to
    copy (nothing is copied yet), and the state dict to keep."""
    pairs, result = [], {}
    for key, value in state.items():
        if key == "step" and is_real(value):
            value = torch.tensor(float(value), dtype=torch.float64)
        if not isinstance(value, torch.Tensor):
            result[key] = value
            continue
        if key == "step":
            value = value.to(dtype=torch.float64, device=p.device)
        previous = kept.get(key)
        if isinstance(previous, torch.Tensor) and previous.shape == value.shape and previous.dtype == value.dtype:
            pairs.append((previous, value))
            result[key] = previous
        else:
            result[key] = value.clone()  # never alias the caller's state_dict
    return pairs, result


def check_loadable_after_capture(kept_states, loaded, owner: str) -> None:
    """After a CUDA graph capture, load_state_dict must copy into every state
    tensor a graph may use (NOTE: [CUDA graph capture]). ``loaded``: per
    parameter, (pairs to copy, the state it would keep)."""
    for p, kept in kept_states.items():
        if not isinstance(kept, dict):
            continue
        _, state = loaded.get(p, ([], {}))
        for key, tensor in kept.items():
            if isinstance(tensor, torch.Tensor) and state.get(key) is not tensor:
                raise ValueError(f"{owner}: a step of this optimizer was captured in a CUDA graph, and the "
                                 f"state_dict cannot be copied into its {key!r} of a parameter of shape "
                                 f"{tuple(p.shape)} (missing, or of another shape or dtype); load a state_dict of "
                                 "the same configuration, or capture again after loading")
    for p, (_, state) in loaded.items():
        if p not in kept_states and any(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{owner}: a step of this optimizer was captured in a CUDA graph, and the state_dict "
                             f"brings state for a parameter of shape {tuple(p.shape)} that has none here; load it "
                             "before capturing")
