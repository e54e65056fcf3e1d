"""The step plan: the lists each op call of ``step()`` takes, built once and
reused while nothing structural changes.

NOTE: [step plan]
A step makes one op call per (param group, bucket key), a ``Bucket``: the
parameters of that group that have a grad and share a key (their dtype, and
whether their states are 8-bit codes), their grads and their state tensors.
Building those lists costs Python work per parameter (state lookups, lazy
state, the dtype split, grad checks), and handing a Python list
of tensors to an op costs ~100 ns per tensor; on a model of thousands of small
tensors that is most of a step. So the lists are built once and kept in C++
(``_C.GroupPlan``, csrc/step_plan.h), which each step reads every parameter's
grad itself, checks it (device, dtype, shape, layout: ~20 ns) and calls the
op through the dispatcher with the kept lists. What Python does per step and
parameter is one identity comparison: does the group still hold the same
parameter objects (``map`` at C speed).

- Grads replaced by new objects (``zero_grad(set_to_none=True)`` + backward,
  every step) or kept: the same plan; the grads are read afresh each step and
  let go after it (holding them would keep them alive through the next
  ``zero_grad``).
- A grad that became None or came back, a parameter replaced in
  ``group["params"]``, hyperparameters edited by hand: that group's buckets
  are rebuilt (edited hyperparameters are checked first).
- ``add_param_group``, ``load_state_dict``, ``opt.state`` replaced, or an edit
  of ``opt.state`` or of a parameter's state dict (``ParamStates`` counts
  them): the whole plan is rebuilt.
- A bad grad (sparse, another shape, dtype or device) is refused, naming it,
  before any bucket of the step runs.

DTensor parameters keep the lists in Python (``Bucket``) and call the op
with them: the same plan, at Python's cost. ``torch.compile`` traces a plain
Python build of the buckets (``traced_buckets``), which the compiled step does
not run again.

Not detected: a parameter's storage swapped in place (``p.data = ...``); the
op's own checks refuse a mismatch, possibly after earlier buckets were
updated in that step.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import repeat
from operator import attrgetter, is_
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from . import _C
from .validation import check_grad, is_dtensor, sharding

__all__ = ["Bucket", "StepPlan", "ParamStates", "plain_state"]

_grad_of = attrgetter("grad")


class _OneParamState(dict):
    """A parameter's state dict that tells its ``ParamStates`` when it is edited."""

    __slots__ = ("_owner",)

    def _edited(self) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner.version += 1

    def __setitem__(self, key, value):
        self._edited()
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._edited()
        super().__delitem__(key)

    def _edit(name):  # noqa: N805 (a class-body helper)
        method = getattr(dict, name)

        def edited(self, *args, **kwargs):
            self._edited()
            return method(self, *args, **kwargs)
        edited.__name__ = name
        return edited

    clear, pop, popitem, setdefault, update, __ior__ = map(
        _edit, ("clear", "pop", "popitem", "setdefault", "update", "__ior__"))

    def __reduce__(self):
        return dict, (dict(self),)  # saved and copied as a plain dict


class ParamStates(defaultdict):
    """``optimizer.state`` that counts the edits of itself and of every
    parameter's state dict in ``version``, so the step plan sees them
    (NOTE: [step plan]). Reads cost what a defaultdict's cost. As torch's, it
    also keeps values that are not a parameter's state dict
    (``opt.state["note"] = 1``), as they are."""

    def __init__(self, items=()):
        super().__init__(None)
        self.version = 0
        for key, value in dict(items).items():
            self[key] = value

    def _own(self, value):
        if not isinstance(value, dict):
            return value
        state = value if isinstance(value, _OneParamState) else _OneParamState(value)
        state._owner = self
        return state

    def __missing__(self, key):
        state = self._own({})
        super().__setitem__(key, state)
        self.version += 1
        return state

    def __setitem__(self, key, value):
        self.version += 1
        super().__setitem__(key, self._own(value))

    def __delitem__(self, key):
        self.version += 1
        super().__delitem__(key)

    def _edit(name):  # noqa: N805 (a class-body helper)
        method = getattr(defaultdict, name)

        def edited(self, *args, **kwargs):
            self.version += 1
            return method(self, *args, **kwargs)
        edited.__name__ = name
        return edited

    clear, pop, popitem = map(_edit, ("clear", "pop", "popitem"))

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = {} if default is None else default
        return self[key]

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __reduce__(self):
        return _plain_states, (dict(self),)


def _plain_states(items: Dict) -> defaultdict:
    """What a pickled or deep-copied ``ParamStates`` becomes: torch's ``defaultdict(dict)``."""
    return defaultdict(dict, {key: plain_state(value) for key, value in items.items()})


def plain_state(value):
    """A parameter's state as a plain dict; any other value as it is."""
    return dict(value) if isinstance(value, dict) else value


class Bucket:
    """One op call: the parameters of one param group and one bucket key that have a grad."""

    __slots__ = ("group_index", "group", "positions", "params", "grads", "relayout", "flags", "states",
                 "element_offsets", "unchecked", "native", "native_index", "extra")

    def __init__(self, group_index: int, group: Dict[str, Any], positions: List[int], params: List[torch.Tensor]):
        self.group_index = group_index
        self.group = group
        self.positions = positions  # of params in group["params"]
        self.params = params
        self.grads: List[torch.Tensor] = []
        self.relayout: List[int] = []  # grads whose strides differ from their parameter's
        self.flags = 0  # the update op's flags (NOTE: [update op declaration] in csrc/update_ops.h)
        self.states: Optional[List[torch.Tensor]] = None  # the op's ``states``: its present slots, slot after slot
        # Each parameter's first element's global index, with stochastic
        # rounding (NOTE: [stochastic rounding] in csrc/stochastic_rounding.h).
        self.element_offsets: List[int] = []
        self.unchecked = True  # grads not yet checked
        # The C++ half that holds these lists and calls the op (None: this
        # Python object does, e.g. for DTensors or under torch.compile).
        self.native: Optional[_C.GroupPlan] = None
        self.native_index = -1
        self.extra: Any = None  # what the optimizer keeps for a bucket it steps itself (FusedMuon's batches)

    def take_grads(self, group_grads: List[Optional[torch.Tensor]]) -> None:
        positions = self.positions
        if len(positions) == len(group_grads):
            self.grads = group_grads  # every parameter of the group, in order
        else:
            self.grads = list(map(group_grads.__getitem__, positions))
        self.unchecked = True

    def release_grads(self) -> None:
        """After the step: holding the grads until the next one would keep
        them alive through ``zero_grad(set_to_none=True)``."""
        self.grads = []

    def op_grads(self) -> List[torch.Tensor]:
        """The grads as the kernels take them: each in its parameter's layout
        (a grad assigned by hand with other strides is copied, every step)."""
        if not self.relayout:
            return self.grads
        grads = list(self.grads)
        for i in self.relayout:
            grads[i] = torch.empty_like(self.params[i]).copy_(grads[i])
        return grads


class _PlannedGroup:
    """The buckets of one param group and what they were built from (its
    `native` is the C++ half, `_C.GroupPlan`, once handed over)."""

    __slots__ = ("params", "missing", "buckets", "native")

    def __init__(self, params: Sequence[torch.Tensor], grads: List, buckets: List[Bucket]):
        self.params = tuple(params)
        self.missing = list(map(is_, grads, repeat(None)))
        self.buckets = buckets
        self.native: Optional[_C.GroupPlan] = None


class StepPlan:
    """The buckets of every step of one optimizer (NOTE: [step plan]).

    ``update_op_of(group)`` names the update op of a group's buckets (None:
    the optimizer steps them itself, and their lists stay in Python);
    ``hyperparameters_of(group)`` returns what a group's buckets depend on
    (compared by identity each step); ``check_group(index, group)`` checks a
    group whose hyperparameters changed (and every group once);
    ``fill_states(bucket)`` creates missing state, the bucket's flags and its
    states list for its update op; ``bucket_key(p)`` says which parameters
    share an op call (the dtype by default).
    """

    def __init__(self, owner: str, update_op_of: Callable[[Dict[str, Any]], Optional[str]],
                 hyperparameters_of: Callable[[Dict[str, Any]], tuple],
                 check_group: Callable[[int, Dict[str, Any]], None], fill_states: Callable[[Bucket], None],
                 bucket_key: Callable[[torch.Tensor], Any] = attrgetter("dtype")):
        self.owner = owner
        self._bucket_key = bucket_key
        self._update_op_of = update_op_of
        self._hyperparameters_of = hyperparameters_of
        self._check_group = check_group
        self._fill_states = fill_states
        self._groups: List[Optional[_PlannedGroup]] = []
        self._checked: List[tuple] = []  # each group's hyperparameters when last checked
        self._param_groups = None  # what the plan was built for: optimizer.param_groups,
        self._states = None        # optimizer.state
        self._states_version = -1  # and its version
        self.has_dtensors = False

    def invalidate(self) -> None:
        self._groups = []

    def buckets(self, param_groups: List[Dict[str, Any]], states: ParamStates) -> List[Bucket]:
        """This step's buckets, their grads checked. Raises before anything
        changes when a grad or an edited hyperparameter is bad; ``fill`` then
        gives them their state."""
        if (self._param_groups is not param_groups or self._states is not states
                or self._states_version != states.version or len(self._groups) != len(param_groups)):
            self._groups = [None] * len(param_groups)
            self._param_groups, self._states = param_groups, states
        plans = self._groups
        try:
            for i, group in enumerate(param_groups):
                hyperparameters = self._hyperparameters_of(group)
                if i >= len(self._checked) or not all(map(is_, hyperparameters, self._checked[i])):
                    self._check_group(i, group)
                    self._checked[i:i + 1] = [hyperparameters]
                    plans[i] = None
                plan = plans[i]
                params = group["params"]
                if plan is not None and len(params) == len(plan.params) and all(map(is_, params, plan.params)):
                    if plan.native is not None:
                        position, problem = plan.native.refresh_grads()
                        if position < 0:
                            continue
                        if problem not in (_C.GRAD_VANISHED, _C.GRAD_APPEARED):
                            check_grad(params[position], params[position].grad, position, i, self.owner)
                    else:
                        grads = list(map(_grad_of, params))
                        if list(map(is_, grads, repeat(None))) == plan.missing:
                            for bucket in plan.buckets:
                                bucket.take_grads(grads)
                            continue
                plans[i] = self._new_group_plan(i, group, list(map(_grad_of, params)))
            buckets = [bucket for plan in plans for bucket in plan.buckets]
            for bucket in buckets:
                if bucket.unchecked:
                    self._check_grads(bucket)
        except BaseException:
            self.invalidate()
            raise
        return buckets

    def traced_buckets(self, param_groups: List[Dict[str, Any]]) -> List[Bucket]:
        """The buckets built afresh in plain Python, for ``torch.compile`` to
        trace (the compiled step does not run this Python again)."""
        buckets = []
        for i, group in enumerate(param_groups):
            self._check_group(i, group)
            params = group["params"]
            for positions in self._split(params, [p.grad for p in params]):
                bucket = Bucket(i, group, positions, [params[k] for k in positions])
                bucket.grads = [params[k].grad for k in positions]
                self._fill_states(bucket)
                buckets.append(bucket)
        return buckets

    def _split(self, params: Sequence[torch.Tensor], grads: List) -> List[List[int]]:
        """The positions of the parameters with a grad, by bucket key."""
        by_key: Dict[Any, List[int]] = defaultdict(list)
        for position, (p, g) in enumerate(zip(params, grads)):
            if g is not None:
                by_key[self._bucket_key(p)].append(position)
        return list(by_key.values())

    def fill(self, buckets: List[Bucket], states: ParamStates) -> None:
        """Gives new buckets their state (created where missing) and, where
        it can run them, hands their lists to the C++ half."""
        for i, plan in enumerate(self._groups):
            if not any(bucket.states is None for bucket in plan.buckets):
                continue
            for bucket in plan.buckets:
                self._fill_states(bucket)
            update_op = self._update_op_of(self._param_groups[i])
            if not self.has_dtensors and update_op is not None:
                self._hand_to_native(plan, update_op)
        self._states_version = states.version

    def _hand_to_native(self, plan: _PlannedGroup, update_op: str) -> None:
        native = _C.GroupPlan(list(plan.params), update_op)
        for bucket in plan.buckets:
            bucket.native = native
            bucket.native_index = native.add_bucket(bucket.positions, bucket.states, bucket.element_offsets)
            bucket.release_grads()  # the C++ half reads them
        position, _ = native.refresh_grads()
        assert position < 0, "the grads were checked before"
        plan.native = native

    def _new_group_plan(self, index: int, group: Dict[str, Any], grads: List) -> _PlannedGroup:
        params = group["params"]
        buckets = []
        for positions in self._split(params, grads):
            bucket = Bucket(index, group, positions, [params[k] for k in positions])
            bucket.take_grads(grads)
            buckets.append(bucket)
        self.has_dtensors = self.has_dtensors or any(map(is_dtensor, params))
        return _PlannedGroup(params, grads, buckets)

    def _check_grads(self, bucket: Bucket) -> None:
        """Every grad of the bucket fits its parameter (one C++ loop), else the
        error names it; a grad with other strides is marked for a copy."""
        relayout = []
        for i, problem in _C.grad_problems(bucket.params, bucket.grads):
            if problem != _C.GRAD_OTHER_STRIDES:
                check_grad(bucket.params[i], bucket.grads[i], bucket.positions[i], bucket.group_index, self.owner)
            relayout.append(i)
        if self.has_dtensors:
            for i, (p, g) in enumerate(zip(bucket.params, bucket.grads)):
                if sharding(g) != sharding(p):
                    check_grad(p, g, bucket.positions[i], bucket.group_index, self.owner)
        bucket.relayout = relayout
        bucket.unchecked = False
