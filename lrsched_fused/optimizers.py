"""FusedSGD, FusedAdam, FusedAdamW and FusedLion: torch.optim optimizers whose lr
schedule lives on the device and is applied inside the fused update.

Layers: this file holds the torch.optim-facing behaviour (param groups, the
step, state_dict); ``validation`` the checks of what users pass;
``device_schedule`` the schedule state on the device; ``step_plan`` the
cached lists each op call takes; ``_ops`` the op wrappers; the math lives in
csrc/update_math.h and csrc/schedule_math.h.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.optim import Optimizer

from . import _C, _ops, states_8bit, validation
from .device_schedule import DeviceSchedule, HyperparameterSlots, MomentumField
from .grad_clipping import GradClipping, check_grad_clipping_arguments
from .param_groups import ParamGroup
from .precision import Precision, check_roundable, element_offsets
from .schedules import Constant, Schedule
from .step_plan import Bucket, ParamStates, StepPlan, plain_state

__all__ = ["FusedOptimizer", "FusedSGD", "FusedAdam", "FusedAdamW", "FusedLion"]


class FusedOptimizer(Optimizer):
    """What FusedSGD and FusedAdam share: the device schedule, param-group
    validation, the step plan and sync-free bookkeeping around the ops, and
    the state_dict. Subclasses name their update op (``update_op``, NOTE:
    [update op declaration] in csrc/update_ops.h) and its flags for a group
    (``_flags``), where a group keeps its momentum (``momentum_field``) and
    the hyperparameters the kernels read (``hyperparameter_slots``, NOTE:
    [hyperparameters on the device]), check their hyperparameters and start
    a parameter's state (``_start_state``).

    Args:
        params (Iterable): As each optimizer documents it.
        defaults: The optimizer's hyperparameters (its own arguments).
        schedule: The lr schedule, a ``lrsched_fused.schedules`` object
            (``None``: a constant lr). ``LambdaLR`` and ``MultiplicativeLR``
            are refused (a Python callable cannot run on the device).
        schedule_interval: ``"epoch"``: the schedule advances at each
            ``schedule_step()``; ``"step"``: inside every ``step()``
            (refused for ``ReduceLROnPlateau``, which needs a metric).
        skip_schedule_on_overflow: With ``"step"``, hold the schedule still
            on a step that ``GradScaler`` skips for an overflow.
        max_grad_norm: Clip the grads' total norm to this inside ``step()``,
            as ``torch.nn.utils.clip_grad_norm_`` would, without writing
            ``p.grad`` (``None``: no clipping). Fixed at construction.
        grad_norm_type: The p of the norm: any p > 0, or ``inf``.
        master_weights: Step bf16/fp16 parameters through fp32 master
            weights (``state["master_param"]``) with fp32 state; fp32/fp64
            parameters are not affected.
        stochastic_rounding: Round every bf16/fp16 value the step writes
            (the parameter without master weights, 16-bit states)
            stochastically, with reproducible Philox bits keyed by
            ``rounding_seed`` (drawn from torch's default CPU generator
            here), the step and the element; fp32/fp64 values are written
            as computed.
        state_dtype: The dtype of every floating state tensor:
            ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``
            (``None``: the parameter's, fp32 with master weights); the math
            runs in fp32 (fp64 for fp64 parameters). ``"8bit"``: blockwise
            8-bit states (uint8 codes and an fp32 absmax per 256 elements,
            bitsandbytes' dynamic maps) for fp32/bf16/fp16 parameters of at
            least 4096 elements, fp32 states for smaller ones; bitsandbytes'
            8-bit checkpoints load (not with amsgrad, nor for DTensor
            parameters).

    Raises:
        ValueError: An invalid hyperparameter (negative lr, betas outside
            [0, 1), ...), a parameter listed twice, parameters on several
            devices, complex or integer parameters; before anything changes.
        TypeError: An argument of the wrong type, or a refused schedule.
    """

    _step_supports_amp_scaling = True
    update_op: str
    momentum_field: MomentumField
    hyperparameter_slots: HyperparameterSlots
    # What a state_dict saved before a flag existed is loaded with (torch's
    # optimizers' __setstate__ fills in the same).
    legacy_defaults: Dict[str, Any] = {}

    def __init__(self, params, defaults: Dict[str, Any], schedule: Optional[Schedule], schedule_interval: str,
                 skip_schedule_on_overflow: bool, max_grad_norm: Optional[float], grad_norm_type: float,
                 master_weights: bool = False, stochastic_rounding: bool = False,
                 state_dtype: Optional[torch.dtype] = None):
        name = type(self).__name__
        schedule = Constant() if schedule is None else schedule
        validation.check_optimizer_arguments(params, schedule, schedule_interval, skip_schedule_on_overflow, name)
        check_grad_clipping_arguments(max_grad_norm, grad_norm_type, name)
        self._precision = Precision(master_weights, stochastic_rounding, state_dtype, name)
        self._clipping = None if max_grad_norm is None else GradClipping(max_grad_norm, grad_norm_type, name)
        self._normalize_hyperparameters(defaults, "defaults")
        self._check_hyperparameters(defaults, "defaults")
        self.device_schedule = DeviceSchedule(schedule, schedule_interval, self.momentum_field,
                                              self.hyperparameter_slots, name)
        self._skip_schedule_on_overflow = skip_schedule_on_overflow
        self._device: Optional[torch.device] = None
        self._hyperparameter_keys = tuple(key for key in defaults if key != "lr")
        self._plan = self._new_plan()
        super().__init__(params, defaults)
        self.state = ParamStates(self.state)
        self.device_schedule.create(self.param_groups, self._device or torch.device("cpu"))
        self._precision.share_seed_across_ranks()
        self._write_rounding_seed()

    # ------------------------------------------------- copies and pickles
    def __getstate__(self) -> Dict[str, Any]:
        """Everything but the step plan (it holds C++ lists; a copy builds its
        own) and, as torch's, the hooks: ``copy.deepcopy``, ``pickle`` and
        ``torch.save`` give an optimizer that steps on like this one. An lr
        set by hand is taken first, as for ``state_dict()``."""
        self._sync_groups()
        state = {key: value for key, value in self.__dict__.items() if key != "_plan" and not key.endswith("_hooks")}
        state["state"] = dict(self.state)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_plan" not in self.__dict__:  # a copy: plain pickle does not keep the lr views views of the state
            self._plan = self._new_plan()
            self.device_schedule.bind(self.param_groups)
        if not isinstance(self.state, ParamStates):
            self.state = ParamStates(self.state)

    def _new_plan(self) -> StepPlan:
        return StepPlan(type(self).__name__, self._update_op_of, self._hyperparameters_of, self._check_edited_group,
                        self._fill_states, self._bucket_key)

    def _bucket_key(self, p: torch.Tensor) -> Any:
        """What splits a group's parameters into op calls: the dtype, and
        whether the parameter's states are 8-bit codes."""
        return p.dtype, self._precision.codes(p)

    def _update_op_of(self, group: Dict[str, Any]) -> Optional[str]:
        """The update op of the group's buckets (None: ``_update`` steps them otherwise)."""
        return self.update_op

    # -------------------------------------------------------- subclasses
    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        """Turns one-element tensor hyperparameters (torch accepts some) into floats, once."""

    def _check_hyperparameters(self, group: Dict[str, Any], where: str, momentum_on_device: bool = False) -> None:
        raise NotImplementedError

    def _flags(self, group: Dict[str, Any], master: bool, coded: bool) -> int:
        """The update op's ``flags`` for a bucket of the group (``master``:
        with master weights; ``coded``: its parameters' states are 8-bit)."""
        raise NotImplementedError

    def _start_state(self, p: torch.Tensor, state: Dict[str, Any], flags: int) -> None:
        """Whatever a parameter's state needs before its slots are filled (its step counter)."""

    def _fill_states(self, bucket: Bucket) -> None:
        """Creates the bucket's missing state, its flags and its ``states``
        list: the op's present slots by name, slot after slot."""
        master = bool(bucket.params) and self._precision.uses_master(bucket.params[0].dtype)
        coded = bool(bucket.params) and self._precision.codes(bucket.params[0])
        flags = self._flags(bucket.group, master, coded)
        update_op = self._update_op_of(bucket.group)
        rounds = flags & _C.UPDATE_OPS[update_op]["flags"]["stochastic_rounding"]
        states = [self.state[p] for p in bucket.params]
        for p, state in zip(bucket.params, states):
            self._start_state(p, state, flags)
        tensors = []
        for name in _ops.state_names(update_op, flags):
            if name == "master_param":
                tensors += self._master_params(bucket)
            elif name == "step":
                tensors += [state["step"] for state in states]
            else:
                tensors += [self._state_tensor(p, state, name) for p, state in zip(bucket.params, states)]
        bucket.flags = flags
        bucket.states = tensors
        if rounds:
            all_params = [q for group in self.param_groups for q in group["params"]]
            bucket.element_offsets = element_offsets(bucket.params, all_params)

    def _update(self, bucket: Bucket, grad_scale: Optional[torch.Tensor], found_inf: Optional[torch.Tensor],
                clip_coef: Optional[torch.Tensor]) -> None:
        """The bucket's op call: through the C++ half of the plan, or with the
        Python lists (NOTE: [step plan])."""
        if bucket.native is not None:
            bucket.native.step(bucket.native_index, self.schedule_state, bucket.group_index, bucket.flags,
                               grad_scale, found_inf, clip_coef)
            return
        grads = bucket.op_grads()
        params, local_grads, states = self._local_shards(bucket.params, grads, bucket.states)
        _ops.update_step_(self._update_op_of(bucket.group), params, local_grads, states, self.schedule_state,
                          bucket.group_index, bucket.flags, grad_scale, found_inf, clip_coef, bucket.element_offsets)
        if grad_scale is not None:  # the kernels unscaled the grads in place; a copy goes back
            for i in bucket.relayout:
                bucket.grads[i].copy_(grads[i])
        bucket.release_grads()

    # --------------------------------------------------------- precision
    @property
    def master_weights(self) -> bool:
        """Whether bf16/fp16 parameters are stepped through fp32 master
        weights (``state["master_param"]``) with fp32 state (NOTE: [master
        weights] in csrc/op_checks.h)."""
        return self._precision.master_weights

    @property
    def stochastic_rounding(self) -> bool:
        """Whether every 16-bit value the step writes is rounded
        stochastically (NOTE: [stochastic rounding] in csrc/stochastic_rounding.h)."""
        return self._precision.stochastic_rounding

    @property
    def state_dtype(self):
        """The dtype of every floating state tensor (None: the parameter's,
        fp32 with master weights), or ``"8bit"``."""
        return self._precision.state_dtype

    @property
    def rounding_seed(self) -> Optional[int]:
        """The key of stochastic rounding's random bits (None without it); saved in the state_dict."""
        return self._precision.seed

    def _write_rounding_seed(self) -> None:
        if self._precision.seed is not None:
            self.device_schedule.state[_C.ROUNDING_SEED] = float(self._precision.seed)

    def _flag_options(self, master: bool, coded: bool) -> Dict[str, bool]:
        """The update ops' precision flags for a bucket (``master``: with
        master weights; ``coded``: with 8-bit states)."""
        return dict(master_weights=master, stochastic_rounding=self._precision.stochastic_rounding,
                    states_8bit=coded)

    def _state_tensor(self, p: torch.Tensor, state: Dict[str, Any], key: str) -> torch.Tensor:
        """``state[key]``, created as zeros where missing, in the parameter's
        state dtype (``Precision.state_dtype_of``); a state of another dtype
        (set by hand, or loaded) is converted once: cast between float
        dtypes, coded into 8-bit states, or read back from them (NOTE: [8-bit
        states] in csrc/states_8bit.h)."""
        coded = states_8bit.coded_keys(self.update_op)
        if key.endswith("_absmax") and key[:-len("_absmax")] in coded:
            value = state.get(key)
            if value is None:
                value = torch.zeros(states_8bit.num_blocks(p.numel()), dtype=torch.float32, device=p.device)
                state[key] = value
            return value
        dtype = self._precision.state_dtype_of(p, key)
        value = state.get(key)
        if value is None:
            value = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state[key] = value
        elif dtype == torch.uint8 and value.dtype != torch.uint8:  # a float state, coded once
            value, state[key + "_absmax"] = states_8bit.quantize(value, coded[key])
            state[key] = value
        elif value.dtype == torch.uint8 and dtype != torch.uint8:  # codes, read back once
            value = states_8bit.dequantize(value, state[key + "_absmax"], coded[key]).to(dtype)
            state[key] = value
            for suffix in ("_absmax", "_qmap"):
                state.pop(key + suffix, None)
        elif value.dtype != dtype:
            value = value.to(dtype)
            state[key] = value
        if dtype == torch.uint8:
            state[key + "_qmap"] = states_8bit.dynamic_map(coded[key], p.device)
        return value

    def _master_params(self, bucket: Bucket) -> List[torch.Tensor]:
        """The bucket's fp32 masters, each started from its parameter where
        missing (a new parameter, or a state_dict saved without them)."""
        masters = []
        for p in bucket.params:
            state = self.state[p]
            master = state.get("master_param")
            if master is None:
                master = torch.empty_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                master.copy_(p.detach())
                state["master_param"] = master
            masters.append(master)
        return masters

    def _saved_state_values(self, state_dict: Dict[str, Any]) -> Dict[Any, Dict[str, torch.Tensor]]:
        """A saved ``master_param`` needs an optimizer with master weights and
        a bf16/fp16 parameter (else ValueError: there is no conversion that
        would not silently drop the fp32 trajectory). Returns, per saved id of
        a parameter, the saved tensors (not ``step``) torch's load_state_dict
        would cast to the parameter's dtype wrongly: states kept in another
        dtype (master weights, a ``state_dtype``: converted once to it here),
        8-bit codes and their absmax (kept as saved; ``_state_tensor`` codes
        or reads them back where this optimizer keeps the other kind), and
        their maps (checked, then this optimizer's shared map)."""
        name = type(self).__name__
        saved_ids = [i for group in state_dict.get("param_groups", []) for i in group.get("params", [])]
        params = [p for group in self.param_groups for p in group["params"]]
        coded = states_8bit.coded_keys(self.update_op)
        values = {}
        for index, (saved_id, p) in enumerate(zip(saved_ids, params)):
            state = state_dict.get("state", {}).get(saved_id)
            if not isinstance(state, dict):
                continue
            if "master_param" in state and not self._precision.uses_master(p.dtype):
                why = ("this optimizer was built without master_weights=True" if not self.master_weights
                       else f"the parameter is {p.dtype}, master weights are kept for bfloat16/float16 only")
                raise ValueError(
                    f"{name}: the state_dict holds fp32 master weights ('master_param') for parameter {index}, "
                    f"but {why}; build the optimizer with master_weights=True to resume them, or delete "
                    "'master_param' from each parameter's state to continue from the parameters' own values")
            own = {}
            converts = self._precision.state_dtype_of(p) != p.dtype or self._precision.uses_master(p.dtype)
            for key, value in state.items():
                if key == "step" or not isinstance(value, torch.Tensor):
                    continue
                if key.endswith("_qmap") and key[:-len("_qmap")] in coded:
                    own[key] = states_8bit.dynamic_map(coded[key[:-len("_qmap")]], p.device)
                elif value.dtype == torch.uint8 or (key.endswith("_absmax") and key[:-len("_absmax")] in coded):
                    own[key] = value
                elif value.is_floating_point() and converts:
                    dtype = torch.float32 if key == "master_param" else self._precision.state_dtype_of(p, key)
                    own[key] = value.to(value.dtype if dtype == torch.uint8 else dtype)
            if own:
                values[saved_id] = own
        return values

    def _from_bitsandbytes(self, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """A state_dict of a bitsandbytes 8-bit optimizer (``state1``,
        ``absmax1``, ``qmap1``, ...), in this optimizer's names
        (``states_8bit.from_bitsandbytes``), its groups without the keys this
        optimizer does not take (``optim_bits``, ``percentile_clipping``, ...)."""
        saved_state = state_dict.get("state")
        if not isinstance(saved_state, dict) or not any(map(states_8bit.is_bitsandbytes_state,
                                                            saved_state.values())):
            return state_dict
        name = type(self).__name__
        coded = states_8bit.coded_keys(self.update_op)
        order = {i: k for k, i in enumerate(i for g in state_dict.get("param_groups", []) for i in g.get("params", []))}
        state = {key: states_8bit.from_bitsandbytes(value, coded, order.get(key, -1), name)
                 if states_8bit.is_bitsandbytes_state(value) else value for key, value in saved_state.items()}
        known = set(self.defaults) | {"params", "param_names", "initial_lr"}
        groups = [{key: value for key, value in group.items() if key in known}
                  for group in state_dict.get("param_groups", [])]
        return {**state_dict, "state": state, "param_groups": groups}

    # ------------------------------------------------------------ groups
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """As torch's, plus validation before anything changes; a group added
        after construction joins the schedule with its own lr as base lr."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        where = f"param group {len(self.param_groups)}"
        params, names = validation.split_names(validation.group_params(param_group, name, where), name, where)
        taken = {id(p): f"param group {j}" for j, g in enumerate(self.param_groups) for p in g["params"]}
        device = validation.check_params(params, taken, self._device, name, where)
        if self._precision.stochastic_rounding:
            for p in params:
                check_roundable(p, name, where)
        self._precision.check_params(params, where)
        group = {**self.defaults, **param_group}
        validation.normalize_lr(group, name, where)
        self._normalize_hyperparameters(group, where)
        self._check_hyperparameters(group, where)
        if self.device_schedule.state is not None:
            self.device_schedule.check_can_grow(group, where)
        super().add_param_group({**group, "params": params, **({"param_names": names} if names else {})})
        self._device = device or self._device
        if self.device_schedule.state is not None:
            self.device_schedule.grow(self.param_groups)
        self._plan.invalidate()

    def _own_groups_after_capture(self) -> None:
        """Once a step of this optimizer was captured in a CUDA graph, its
        groups are ``ParamGroup``s, whose edits reach the device at once, so a
        replay between two eager calls uses them (NOTE: [hyperparameters on
        the device]). Plain dicts before: torch.compile traces an optimizer's
        param_groups only as plain dicts."""
        if self.device_schedule.captured:
            groups = self.param_groups
            for i, group in enumerate(groups):
                if not isinstance(group, ParamGroup):
                    groups[i] = ParamGroup(group, self._on_group_edit)

    def _on_group_edit(self, group: ParamGroup, key: str, value: Any) -> None:
        """Before ``group[key] = value``: an edited hyperparameter is written
        into the group's block (NOTE: [hyperparameters on the device]), so a
        replayed CUDA graph uses it; refused inside a capture. A bad value is
        left to the next ``step()``, which refuses it before anything changes."""
        schedule = self.device_schedule
        if key not in schedule.hyperparameters.keys or schedule.state is None:
            return
        index = next((i for i, g in enumerate(self.param_groups) if g is group), None)
        if index is None:
            return
        edited = {**group, key: value}
        try:
            self._check_edited_group(index, edited)
        except (TypeError, ValueError):
            return
        schedule.write_hyperparameters(index, edited)

    def _hyperparameters_of(self, group: Dict[str, Any]) -> tuple:
        return tuple(map(group.get, self._hyperparameter_keys))

    def _check_edited_group(self, index: int, group: Dict[str, Any]) -> None:
        """Hyperparameters edited by hand between steps (as torch allows), checked again."""
        self._check_hyperparameters(group, f"param group {index}",
                                    momentum_on_device=self.device_schedule.momentum_is_view(index, group))

    def _adopt_appended_groups(self) -> None:
        """Groups appended to ``param_groups`` as a list (torch's own tests
        do) join as ``add_param_group`` would add them, the same dict objects;
        one it refuses stays in the list and is refused again at each step."""
        known, groups = self.device_schedule.group_count, self.param_groups
        if len(groups) == known:
            return
        name = type(self).__name__
        if len(groups) < known:
            raise ValueError(f"{name}: param_groups holds {len(groups)} groups, the schedule {known}: a group was "
                             "removed from the list, which the schedule state cannot follow; build a new optimizer "
                             "for the groups that remain")
        appended = groups[known:]
        del groups[known:]
        for i, group in enumerate(appended):
            try:
                self.add_param_group(group)
            except (TypeError, ValueError) as exc:
                groups.extend(appended[i:])
                raise ValueError(f"{name}: param group {known + i} was appended to param_groups as a list; it is "
                                 f"adopted as add_param_group(group) would add it, which refused it: {exc}") from exc
            if isinstance(group, dict):
                group.update(groups[-1])
                groups[-1] = group
        self.device_schedule.bind(groups)

    def _sync_groups(self) -> None:
        """Appended groups adopted, an lr (or cycled momentum) set by hand and
        edited hyperparameters copied into the schedule state."""
        self._adopt_appended_groups()
        self.device_schedule.adopt_assigned(self.param_groups)
        self.device_schedule.write_edited_hyperparameters(self.param_groups)

    # ---------------------------------------------------------- schedule
    @property
    def schedule(self) -> Schedule:
        """The schedule specification this optimizer was built with (fixed)."""
        return self.device_schedule.schedule

    @property
    def schedule_state(self) -> torch.Tensor:
        """The float64 device tensor holding all changing schedule state."""
        return self.device_schedule.state

    @property
    def lr_tensor(self) -> torch.Tensor:
        """The current lr of every group, a device-side view (no copy, no sync)."""
        return self.device_schedule.lrs

    def get_last_lr(self) -> List[float]:
        """The current lr of every group, like ``scheduler.get_last_lr()``.
        Reads the device state, so on CUDA it syncs: keep it off the hot path."""
        self._sync_groups()
        return self.device_schedule.lrs.tolist()

    def schedule_step(self, metric=None) -> None:
        """One ``scheduler.step()`` (or ``scheduler.step(metric)`` for
        ReduceLROnPlateau), computed on the device. ``metric``: a one-element
        tensor (read on the device, no sync) or a real number."""
        name = type(self).__name__
        schedule = self.device_schedule
        schedule_name = type(schedule.schedule).__name__
        if schedule.interval == "step":
            raise RuntimeError(f"{name}: schedule_interval='step' advances the schedule inside step(); "
                               "schedule_step() would advance it twice")
        metric_tensor = None
        if schedule.schedule.requires_metric:
            if metric is None:
                raise TypeError(f"{name}: {schedule_name} needs a metric: call schedule_step(val_loss)")
            metric_tensor = schedule.metric_tensor(metric)
        elif metric is not None:
            raise TypeError(f"{name}: {schedule_name} takes no metric, got {metric!r}; call schedule_step()")
        self._sync_groups()
        schedule.note_capture()
        self._own_groups_after_capture()
        schedule.advance(metric_tensor, None)

    # -------------------------------------------------------------- step
    def _amp_tensors(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """grad_scale / found_inf set by torch.amp.GradScaler (as for torch's fused optimizers)."""
        found = []
        for attr in ("grad_scale", "found_inf"):
            t = getattr(self, attr, None)
            found.append(None if t is None else self.device_schedule.device_tensor(t, f"GradScaler's {attr}"))
        return found[0], found[1]

    def _local_shards(self, *lists: List[torch.Tensor]):
        """The lists as the tensors the kernels update.

        NOTE: [DTensor parameters]
        Under FSDP2 (``fully_shard``) or tensor parallelism the parameters,
        their grads and the states made from them with ``zeros_like`` are
        DTensors. The update is elementwise, so updating a DTensor is updating
        each rank's local shard in place, with no communication (torch's fused
        Adam does the same through DTensor's pointwise strategy). The states
        stay DTensors, as torch's do, so distributed checkpoints see the same
        layout. A grad must be sharded like its parameter (checked with the
        other grad checks, before any update).
        """
        if not self._plan.has_dtensors:
            return lists
        is_dtensor = validation.is_dtensor
        return tuple([t.to_local() if is_dtensor(t) else t for t in tensors] for tensors in lists)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One fused update of every param group (and, with
        ``schedule_interval='step'``, one schedule step). No host sync.
        Everything is checked before anything changes (NOTE: [step plan])."""
        loss = None
        if closure is not None and not callable(closure):
            raise TypeError(f"{type(self).__name__}: step() takes a callable closure or None, got {closure!r}")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._adopt_appended_groups()
        schedule = self.device_schedule
        if torch.compiler.is_compiling():
            schedule.adopt_assigned(self.param_groups)
            buckets = self._plan.traced_buckets(self.param_groups)
        else:
            buckets = self._plan.buckets(self.param_groups, self.state)
            schedule.adopt_assigned(self.param_groups)
            self._plan.fill(buckets, self.state)
        schedule.write_edited_hyperparameters(self.param_groups)
        schedule.note_capture()
        self._own_groups_after_capture()
        grad_scale, found_inf = self._amp_tensors()
        clip_coef = None
        if self._clipping is not None:
            clip_coef = self._clipping.clip_coefficient(buckets, grad_scale, schedule.state.device)
        for bucket in buckets:
            self._update(bucket, grad_scale, found_inf, clip_coef)
        if schedule.interval == "step":
            schedule.advance(None, found_inf if self._skip_schedule_on_overflow else None)
        return loss

    # ---------------------------------------------------------- clipping
    @property
    def max_grad_norm(self) -> Optional[float]:
        """The grads' total norm is clipped to this inside ``step()`` (None: no clipping)."""
        return None if self._clipping is None else self._clipping.max_norm

    @property
    def grad_norm(self) -> Optional[torch.Tensor]:
        """The last step's total grad norm before clipping, a 0-dim device
        tensor in the grads' promoted dtype (what ``clip_grad_norm_``
        returns); None before the first step with ``max_grad_norm``. The same
        tensor is overwritten each step (it is what a captured graph writes):
        ``.clone()`` it to keep a value. Reading it on the host syncs."""
        return None if self._clipping is None else self._clipping.total_norm

    # --------------------------------------------------------- state_dict
    def state_dict(self) -> Dict[str, Any]:
        """torch's optimizer state_dict (state names ``step``, ``exp_avg``, ...;
        float ``lr`` and ``initial_lr`` per group, so torch optimizers load it)
        plus ``schedule``: the schedule's name, config, interval and state,
        and with stochastic rounding ``rounding_seed``."""
        self._sync_groups()
        state_dict = super().state_dict()
        state_dict["state"] = {key: plain_state(value) for key, value in state_dict["state"].items()}
        self.device_schedule.write_group_values(state_dict["param_groups"])
        state_dict["schedule"] = self.device_schedule.state_dict_entry()
        if self._precision.seed is not None:
            state_dict["rounding_seed"] = self._precision.seed
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads ours or a torch optimizer's state_dict, copying into the
        existing state tensors and schedule state (their data_ptr is kept, so
        a captured CUDA graph stays valid). As torch's: the load pre-hooks
        see the state_dict first, the post-hooks the loaded optimizer; each
        group steps with the loaded group's lr, from which the schedule
        continues (its counters come from the saved ``schedule`` entry); a
        flag missing from an older state_dict gets torch's default."""
        name = type(self).__name__
        self._adopt_appended_groups()
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()
            for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
                returned = pre_hook(self, state_dict)
                state_dict = state_dict if returned is None else returned
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}: load_state_dict takes the dict state_dict() returns, got "
                            f"{type(state_dict).__name__}")
        state_dict = self._adapt_saved_state(self._from_bitsandbytes(dict(state_dict)))
        schedule_part = state_dict.pop("schedule", None)
        coded = states_8bit.coded_keys(self.update_op)
        validation.check_saved_state(state_dict, state_dict.get("param_groups", []), self.param_groups, name,
                                     lambda key, value, p, index: states_8bit.check_saved(key, value, p, coded,
                                                                                          index, name))
        if schedule_part is not None:
            schedule_part = self.device_schedule.check_entry(schedule_part)
        own_dtype_values = self._saved_state_values(state_dict)
        seed = state_dict.pop("rounding_seed", None)
        if seed is not None and self._precision.seed is not None:
            seed = self._precision.check_seed(seed)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        kept_groups, kept_states = self.param_groups, self.state
        self._torch_load_state_dict(state_dict)
        for group in self.param_groups:
            self._complete_loaded_group(group)
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(saved_ids, params):
            for key, value in own_dtype_values.get(saved_id, {}).items():
                self.state[p][key] = value.to(device=p.device)
        loaded = {p: validation.state_to_load(p, dict(kept_states.get(p, {})), state)
                  for p, state in self.state.items() if isinstance(p, torch.Tensor) and isinstance(state, dict)}
        unowned = {key: value for key, value in self.state.items() if key not in loaded}
        if self.device_schedule.captured:
            try:
                validation.check_loadable_after_capture(kept_states, loaded, type(self).__name__)
            except ValueError:
                self.param_groups, self.state = kept_groups, kept_states
                raise
        for p, (pairs, state) in loaded.items():
            for kept, value in pairs:
                kept.copy_(value)
        self.state = ParamStates({**{p: state for p, (_, state) in loaded.items()}, **unowned})
        if schedule_part is not None:
            self._load_schedule_entry(schedule_part)
        else:
            self.device_schedule.load_from_groups(self.param_groups)
        if seed is not None and self._precision.seed is not None:
            self._precision.seed = seed
        self._write_rounding_seed()  # the saved schedule state may hold another seed, or none
        self._own_groups_after_capture()
        self._plan.invalidate()
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _adapt_saved_state(self, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """A subclass's changes to a state_dict to load (after the pre-hooks, before any check)."""
        return state_dict

    def _torch_load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch's load_state_dict without its hooks: ours runs them around the whole load."""
        hooks = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = hooks

    def _complete_loaded_group(self, group: Dict[str, Any]) -> None:
        """A hyperparameter missing from a loaded group (a state_dict older
        than the flag): torch's default for a flag, else this optimizer's."""
        for key in ("lr", *self._hyperparameter_keys):  # not torch's "differentiable", which __setstate__ adds
            if key not in group:
                group[key] = self.legacy_defaults.get(key, self.defaults[key])

    def _load_schedule_entry(self, part: Dict[str, Any]) -> None:
        """The saved schedule state, except each group's current lr (and
        cycled momentum): the loaded group's, as torch's optimizer steps with
        what its param group holds, so a chainable schedule continues from it."""
        schedule, groups = self.device_schedule, self.param_groups
        lrs = [group["lr"] for group in groups]
        momenta = [schedule.momentum.get(group) for group in groups] if schedule.cycles_momentum else []
        schedule.load_entry(part, groups)
        views = [group["lr"] for group in groups] + [schedule.momentum.get(group) for group in groups[:len(momenta)]]
        for view, value in zip(views, lrs + momenta):
            if isinstance(value, torch.Tensor):
                view.copy_(value.detach().reshape(()))
            else:
                view.fill_(float(value))
        for group in groups:
            group.pop("initial_lr", None)


class FusedSGD(FusedOptimizer):
    """``torch.optim.SGD`` with the lr schedule computed on the device,
    inside the step.

    The update is torch's fused SGD's (momentum, dampening, nesterov, L2
    weight decay, maximize); a parameter's momentum buffer starts at its
    first grad, as torch's for-loop SGD does.

    The keyword arguments every optimizer takes (``schedule``,
    ``schedule_interval``, ``skip_schedule_on_overflow``, ``max_grad_norm``,
    ``grad_norm_type``, ``master_weights``, ``stochastic_rounding``,
    ``state_dtype``) and the errors raised are documented on
    [`FusedOptimizer`][lrsched_fused.optimizers.FusedOptimizer].

    Args:
        params (Iterable): An iterable of floating-point dense tensors, of
            ``(name, tensor)`` pairs, or of param-group dicts, all on one
            device.
        lr: The initial lr of every group (a float or a one-element tensor,
            read once).
        momentum: Momentum factor (``0``: plain SGD).
        dampening: Dampening of the momentum.
        weight_decay: L2 penalty, added to the grad.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and
            ``dampening == 0``).
        maximize: Maximize the objective instead of minimizing it.

    Example:
        ```python
        opt = FusedSGD(model.parameters(), lr=0.1, momentum=0.9,
                       schedule=schedules.StepLR(step_size=30, gamma=0.1))
        for epoch in range(90):
            train_one_epoch(model, opt)   # opt.step() per batch
            opt.schedule_step()           # scheduler.step(), on the device
        ```
    """

    update_op = "sgd_step_"
    momentum_field = MomentumField("momentum")
    hyperparameter_slots = HyperparameterSlots({
        "momentum": _C.GROUP_MOMENTUM, "dampening": _C.GROUP_DAMPENING, "weight_decay": _C.GROUP_WEIGHT_DECAY})
    legacy_defaults = {"nesterov": False, "maximize": False}

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 schedule: Optional[Schedule] = None, schedule_interval: str = "epoch",
                 skip_schedule_on_overflow: bool = False, max_grad_norm: Optional[float] = None,
                 grad_norm_type: float = 2.0, master_weights: bool = False, stochastic_rounding: bool = False,
                 state_dtype: Optional[torch.dtype] = None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        validation.normalize_lr(defaults, type(self).__name__, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow, max_grad_norm,
                         grad_norm_type, master_weights, stochastic_rounding, state_dtype)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str, momentum_on_device: bool = False) -> None:
        validation.check_sgd_hyperparameters(group, type(self).__name__, where, momentum_on_device)

    def _adapt_saved_state(self, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """A momentum buffer saved without a step (by torch's SGD, or by an
        older version of FusedSGD) has history: step 1."""
        saved_state = state_dict.get("state")
        if isinstance(saved_state, dict):
            state_dict = {**state_dict, "state": {
                key: {**value, "step": 1.0} if isinstance(value, dict) and value.get("momentum_buffer") is not None
                and "step" not in value else value for key, value in saved_state.items()}}
        return state_dict

    def _flags(self, group: Dict[str, Any], master: bool, coded: bool) -> int:
        momentum = self.device_schedule.cycles_momentum or group["momentum"] != 0
        return _ops.update_flags(self.update_op, momentum=momentum, nesterov=group["nesterov"],
                                 maximize=group["maximize"], **self._flag_options(master, coded and momentum))

    def _start_state(self, p: torch.Tensor, state: Dict[str, Any], flags: int) -> None:
        bits = _C.UPDATE_OPS[self.update_op]["flags"]
        if not flags & bits["momentum"]:
            if flags & bits["stochastic_rounding"] and "step" not in state:  # the rounding bits' counter
                state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
            return
        if state.get("momentum_buffer") is None:
            # step counts the steps the buffer took: at 0 the kernel sets it to the grad (and a
            # step skipped by GradScaler leaves both untouched)
            state.pop("momentum_buffer", None)
            state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)
        elif "step" not in state:  # a buffer set without load_state_dict (ZeRO does): it has history
            state["step"] = torch.ones((), dtype=torch.float64, device=p.device)


class FusedAdam(FusedOptimizer):
    """``torch.optim.Adam`` with the lr schedule computed on the device,
    inside the step.

    The update is torch's fused Adam's (bias corrections in float64 from a
    float64 step count, amsgrad, maximize, L2 or decoupled weight decay).

    The keyword arguments every optimizer takes (``schedule``,
    ``schedule_interval``, ``skip_schedule_on_overflow``, ``max_grad_norm``,
    ``grad_norm_type``, ``master_weights``, ``stochastic_rounding``,
    ``state_dtype``) and the errors raised are documented on
    [`FusedOptimizer`][lrsched_fused.optimizers.FusedOptimizer].

    Args:
        params (Iterable): An iterable of floating-point dense tensors, of
            ``(name, tensor)`` pairs, or of param-group dicts, all on one
            device.
        lr: The initial lr of every group (a float or a one-element tensor,
            read once).
        betas: ``(beta1, beta2)``, each in [0, 1) (floats or one-element
            tensors).
        eps: Added to the denominator, after dividing by the square root of
            the bias correction, as torch does.
        weight_decay: The weight decay (an L2 penalty added to the grad, or
            decoupled as in AdamW with ``decoupled_weight_decay=True``).
        amsgrad: Keep the maximum of the second moments (``max_exp_avg_sq``).
        maximize: Maximize the objective instead of minimizing it.
        decoupled_weight_decay: AdamW's weight decay (``FusedAdamW`` sets it).

    Example:
        ```python
        opt = FusedAdam(model.parameters(), lr=1e-3,
                        schedule=schedules.ReduceLROnPlateau(patience=2))
        for epoch in range(epochs):
            train_one_epoch(model, opt)
            opt.schedule_step(val_loss)   # a 0-dim tensor, read on its device
        ```
    """

    update_op = "adam_step_"
    momentum_field = MomentumField("betas", 0)
    hyperparameter_slots = HyperparameterSlots({
        "betas": (_C.GROUP_MOMENTUM, _C.GROUP_BETA2), "eps": _C.GROUP_EPS, "weight_decay": _C.GROUP_WEIGHT_DECAY})
    legacy_defaults = {"amsgrad": False, "maximize": False, "decoupled_weight_decay": False}

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, schedule: Optional[Schedule] = None,
                 schedule_interval: str = "epoch", skip_schedule_on_overflow: bool = False,
                 max_grad_norm: Optional[float] = None, grad_norm_type: float = 2.0, master_weights: bool = False,
                 stochastic_rounding: bool = False, state_dtype: Optional[torch.dtype] = None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        validation.normalize_lr(defaults, type(self).__name__, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow, max_grad_norm,
                         grad_norm_type, master_weights, stochastic_rounding, state_dtype)

    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        validation.normalize_betas(group, type(self).__name__, where)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str, momentum_on_device: bool = False) -> None:
        name = type(self).__name__
        validation.check_adam_hyperparameters(group, name, where, momentum_on_device)
        if self._precision.eight_bit and group.get("amsgrad"):
            raise ValueError(f"{name}: amsgrad=True is not taken with state_dtype='8bit' ({where}): the max of "
                             "coded second moments is not built (bitsandbytes has none either); use a float "
                             "state_dtype for amsgrad")

    def _flags(self, group: Dict[str, Any], master: bool, coded: bool) -> int:
        return _ops.update_flags(
            self.update_op, amsgrad=group["amsgrad"], decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"], **self._flag_options(master, coded))

    def _start_state(self, p: torch.Tensor, state: Dict[str, Any], flags: int) -> None:
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)


class FusedAdamW(FusedAdam):
    """``torch.optim.AdamW``: ``FusedAdam`` with decoupled weight decay and
    AdamW's default ``weight_decay=1e-2``. Takes the arguments of
    [`FusedAdam`][lrsched_fused.FusedAdam] except ``decoupled_weight_decay``;
    loading an Adam state_dict keeps decoupled weight decay, as torch's AdamW
    does.

    Example:
        ```python
        opt = FusedAdamW(model.parameters(), lr=3e-4, max_grad_norm=1.0, schedule_interval="step",
                         schedule=schedules.get_scheduler("cosine", num_warmup_steps=100,
                                                          num_training_steps=10_000))
        for x, y in loader:
            loss_fn(model(x), y).backward()
            opt.step()        # clip + AdamW step + scheduler.step(), no host sync
            opt.zero_grad()
        ```
    """

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 schedule: Optional[Schedule] = None, schedule_interval: str = "epoch",
                 skip_schedule_on_overflow: bool = False, max_grad_norm: Optional[float] = None,
                 grad_norm_type: float = 2.0, master_weights: bool = False, stochastic_rounding: bool = False,
                 state_dtype: Optional[torch.dtype] = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True, schedule=schedule,
                         schedule_interval=schedule_interval, skip_schedule_on_overflow=skip_schedule_on_overflow,
                         max_grad_norm=max_grad_norm, grad_norm_type=grad_norm_type, master_weights=master_weights,
                         stochastic_rounding=stochastic_rounding, state_dtype=state_dtype)

    def _complete_loaded_group(self, group: Dict[str, Any]) -> None:
        """As torch's AdamW: decoupled weight decay, whatever the state_dict says (an Adam one says False)."""
        super()._complete_loaded_group(group)
        group["decoupled_weight_decay"] = True


class FusedLion(FusedOptimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms") with the lr schedule computed on the device, inside the
    step. torch has no Lion; the update is ``lion-pytorch``'s, element by
    element::

        p = p * (1 - lr * weight_decay)
        c = beta1 * exp_avg + (1 - beta1) * grad
        p = p - lr * sign(c)          # sign(0) = 0
        exp_avg = beta2 * exp_avg + (1 - beta2) * grad

    One state per parameter, ``exp_avg`` (lion-pytorch's name, so its
    checkpoints load). Lion's update has the size lr in every coordinate:
    its lr is usually 3-10x smaller than AdamW's and its weight decay as
    much larger.

    The keyword arguments every optimizer takes (``schedule``,
    ``schedule_interval``, ``skip_schedule_on_overflow``, ``max_grad_norm``,
    ``grad_norm_type``, ``master_weights``, ``stochastic_rounding``,
    ``state_dtype``) and the errors raised are documented on
    [`FusedOptimizer`][lrsched_fused.optimizers.FusedOptimizer]; a schedule
    that cycles momentum (OneCycleLR, CyclicLR) cycles beta1.

    Args:
        params (Iterable): An iterable of floating-point dense tensors, of
            ``(name, tensor)`` pairs, or of param-group dicts, all on one
            device.
        lr: The initial lr of every group (a float or a one-element tensor,
            read once).
        betas: ``(beta1, beta2)``, each in [0, 1]: beta1 interpolates the
            update's direction, beta2 the momentum kept.
        weight_decay: Decoupled weight decay, scaled by the lr.
        maximize: Maximize the objective instead of minimizing it.

    Example:
        ```python
        opt = FusedLion(model.parameters(), lr=1e-4, weight_decay=1.0, schedule_interval="step",
                        schedule=schedules.CosineAnnealingLR(T_max=10_000))
        for x, y in loader:
            loss_fn(model(x), y).backward()
            opt.step()        # Lion step + scheduler.step(), no host sync
            opt.zero_grad()
        ```
    """

    update_op = "lion_step_"
    momentum_field = MomentumField("betas", 0)
    hyperparameter_slots = HyperparameterSlots({
        "betas": (_C.GROUP_MOMENTUM, _C.GROUP_BETA2), "weight_decay": _C.GROUP_WEIGHT_DECAY})
    legacy_defaults = {"maximize": False}

    def __init__(self, params, lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, schedule: Optional[Schedule] = None,
                 schedule_interval: str = "epoch", skip_schedule_on_overflow: bool = False,
                 max_grad_norm: Optional[float] = None, grad_norm_type: float = 2.0, master_weights: bool = False,
                 stochastic_rounding: bool = False, state_dtype: Optional[torch.dtype] = None):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        validation.normalize_lr(defaults, type(self).__name__, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow, max_grad_norm,
                         grad_norm_type, master_weights, stochastic_rounding, state_dtype)

    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        validation.normalize_betas(group, type(self).__name__, where)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str, momentum_on_device: bool = False) -> None:
        validation.check_lion_hyperparameters(group, type(self).__name__, where, momentum_on_device)

    def _flags(self, group: Dict[str, Any], master: bool, coded: bool) -> int:
        return _ops.update_flags(self.update_op, maximize=group["maximize"], **self._flag_options(master, coded))

    def _start_state(self, p: torch.Tensor, state: Dict[str, Any], flags: int) -> None:
        if flags & _C.UPDATE_OPS[self.update_op]["flags"]["stochastic_rounding"] and "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)  # the rounding bits' counter
