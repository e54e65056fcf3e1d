"""FusedMuon: torch.optim.Muon for a model's matrices and torch.optim.AdamW
for its other parameters, in one optimizer whose lr schedule lives on the
device; capturable in a CUDA graph, no host sync.

NOTE: [Muon step]
A Muon param group (``use_muon=True``, the default) steps its matrices in
three passes per (group, dtype) bucket:

1. ``muon_momentum_`` (one fused op over all the bucket's matrices): each
   momentum buffer moves toward its grad (``buf.lerp_(grad, 1 - momentum)``,
   the momentum read from the schedule state, so a cycled one works), and the
   Newton-Schulz input, ``grad.lerp(buf, momentum)`` (nesterov) or ``buf``, is
   written in bfloat16 straight into the batch of its shape.
2. The Newton-Schulz iteration, batched: the matrices of one shape are one
   ``[k, m, n]`` bfloat16 tensor (``NewtonSchulzBatch``), orthogonalized with
   ``torch.bmm`` / ``torch.baddbmm`` into buffers allocated once (``out=``),
   the tall ones transposed, each normalized by its own norm (rounded to
   bfloat16 before the division, as torch's ``.norm()`` of a bfloat16 matrix
   is): on the CPU the result equals torch's per-matrix ``addmm`` loop bit
   for bit (measured for square, tall and wide shapes, k = 1 to 12).
3. ``muon_apply_`` (one fused op): ``p * (1 - lr * weight_decay)`` then
   ``- lr * ratio * O``, lr and weight decay read from the schedule state,
   ``ratio`` the shape's ``adjust_lr_fn`` factor (a host constant per shape).

A GradScaler's skipped step (found_inf != 0) leaves buffers and parameters
as they were (the iteration still runs on scratch buffers). Groups with
``use_muon=False`` are AdamW groups: the ``adam_step_`` op with decoupled
weight decay, as FusedAdamW steps them.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import _C, _ops, validation
from .device_schedule import HyperparameterSlots, MomentumField
from .optimizers import FusedOptimizer
from .schedules import Schedule
from .step_plan import Bucket

__all__ = ["FusedMuon"]

DEFAULT_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch.optim.Muon's (Keller Jordan's)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw", "spectral_unclamped")
# What a group with use_muon=False takes where it does not say: torch.optim.AdamW's defaults.
ADAMW_GROUP_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False,
                        "maximize": False, "decoupled_weight_decay": True}


def uses_muon(group: Dict[str, Any]) -> bool:
    return group.get("use_muon", True) is not False


def lr_ratio(adjust_lr_fn: Optional[str], shape: Sequence[int]) -> float:
    """torch.optim.Muon's lr factor for a matrix of ``shape`` (its ``_adjust_lr``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "spectral_unclamped":
        return math.sqrt(rows / cols)
    raise ValueError(f"adjust_lr_fn {adjust_lr_fn!r}; accepted: {ADJUST_LR_FNS}")


class MomentumByKind(MomentumField):
    """A Muon group's momentum is ``group["momentum"]``, an AdamW group's ``group["betas"][0]``."""

    def __init__(self):
        super().__init__("momentum")
        self.adamw = MomentumField("betas", 0)

    def get(self, group: Dict[str, Any]):
        return super().get(group) if uses_muon(group) else self.adamw.get(group)

    def set(self, group: Dict[str, Any], value) -> None:
        if uses_muon(group):
            super().set(group, value)
        else:
            self.adamw.set(group, value)


class HyperparametersByKind(HyperparameterSlots):
    """The values the kernels read: a Muon group's momentum and weight decay,
    an AdamW group's betas, eps and weight decay (NOTE: [hyperparameters on the device])."""

    def __init__(self):
        self.muon = HyperparameterSlots({"momentum": _C.GROUP_MOMENTUM, "weight_decay": _C.GROUP_WEIGHT_DECAY})
        self.adamw = HyperparameterSlots({"betas": (_C.GROUP_MOMENTUM, _C.GROUP_BETA2), "eps": _C.GROUP_EPS,
                                          "weight_decay": _C.GROUP_WEIGHT_DECAY})
        super().__init__({**self.muon.slots, **self.adamw.slots})

    def values(self, group: Dict[str, Any]) -> List[tuple]:
        return (self.muon if uses_muon(group) else self.adamw).values(group)


class NewtonSchulzBatch:
    """The matrices of one shape in one Muon bucket, orthogonalized together
    (NOTE: [Muon step]). ``inputs`` ([k, m, n], bfloat16) receives the
    momentum pass's output, one matrix per position; every buffer of the
    iteration is allocated here, once."""

    def __init__(self, positions: List[int], shape: Tuple[int, int], device: torch.device):
        k, (rows, cols) = len(positions), shape
        self.positions = positions
        self.shape = shape
        self.transposed = rows > cols  # torch orthogonalizes a tall matrix's transpose
        short, long = (cols, rows) if self.transposed else (rows, cols)
        bf16 = dict(dtype=torch.bfloat16, device=device)
        self.inputs = torch.zeros((k, rows, cols), **bf16)
        # the iteration's X, ping-pong; untransposed, the first is `inputs` itself
        self.work = [torch.zeros((k, short, long), **bf16) for _ in range(2 if self.transposed else 1)]
        self.gram = torch.zeros((k, short, short), **bf16)
        self.polynomial = torch.zeros((k, short, short), **bf16)
        self.norms = torch.zeros((k, 1, 1), **bf16)
        self.input_views = list(self.inputs.unbind(0))

    def orthogonalize(self, coefficients: Sequence[float], steps: int, eps: float) -> List[torch.Tensor]:
        """The iteration on ``inputs``; returns the result's matrices ([m, n] each, in position order)."""
        a, b, c = coefficients
        if self.transposed:
            x, spare = self.work
            x.copy_(self.inputs.mT)
        else:
            x, spare = self.inputs, self.work[0]
        torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True, out=self.norms)
        self.norms.clamp_(min=eps)
        x.div_(self.norms)
        for _ in range(steps):
            torch.bmm(x, x.mT, out=self.gram)
            torch.baddbmm(self.gram, self.gram, self.gram, beta=b, alpha=c, out=self.polynomial)
            torch.baddbmm(x, self.polynomial, x, beta=a, out=spare)
            x, spare = spare, x
        if self.transposed:
            self.inputs.copy_(x.mT)
            return self.input_views
        return self.input_views if x is self.inputs else list(x.unbind(0))


class MuonBucketPlan:
    """A Muon bucket's batches: its matrices grouped by shape, and the
    momentum pass's output tensor of each matrix."""

    def __init__(self, params: List[torch.Tensor]):
        by_shape: Dict[Tuple[int, int], List[int]] = {}
        for i, p in enumerate(params):
            by_shape.setdefault(tuple(p.shape), []).append(i)
        device = params[0].device if params else torch.device("cpu")
        self.batches = [NewtonSchulzBatch(positions, shape, device) for shape, positions in by_shape.items()]
        self.updates: List[Optional[torch.Tensor]] = [None] * len(params)
        for batch in self.batches:
            for position, view in zip(batch.positions, batch.input_views):
                self.updates[position] = view
        self._shapes = [tuple(p.shape) for p in params]
        self._ratios: Tuple[Any, List[float]] = (object(), [])  # (adjust_lr_fn, a ratio per matrix)

    def lr_ratios(self, adjust_lr_fn: Optional[str]) -> List[float]:
        """Each matrix's adjust_lr_fn factor, computed again only when the group's adjust_lr_fn changed."""
        if self._ratios[0] != adjust_lr_fn:
            self._ratios = (adjust_lr_fn, [lr_ratio(adjust_lr_fn, shape) for shape in self._shapes])
        return self._ratios[1]

    def orthogonalize(self, coefficients: Sequence[float], steps: int, eps: float) -> List[torch.Tensor]:
        results: List[Optional[torch.Tensor]] = [None] * len(self.updates)
        for batch in self.batches:
            for position, matrix in zip(batch.positions, batch.orthogonalize(coefficients, steps, eps)):
                results[position] = matrix
        return results


class FusedMuon(FusedOptimizer):
    """``torch.optim.Muon`` for 2-D parameters and ``torch.optim.AdamW`` for
    the groups with ``use_muon=False``, with one lr schedule computed on the
    device for every group (each from its own initial lr), inside the step.

    A Muon group steps as torch's Muon (momentum ``lerp``, nesterov, the
    bfloat16 Newton-Schulz iteration with its transposition of tall matrices
    and its norm clamp, ``adjust_lr_fn``, decoupled weight decay): its
    matrices' iterations are batched per shape and the elementwise passes
    fused (NOTE: [Muon step] in lrsched_fused/muon.py). An AdamW group takes
    ``lr``, ``betas``, ``eps``, ``weight_decay`` (and ``amsgrad``,
    ``maximize``, ``decoupled_weight_decay``) from the group, torch AdamW's
    defaults where it does not say (``lr=1e-3``, ``betas=(0.9, 0.999)``,
    ``eps=1e-8``, ``weight_decay=1e-2``, decoupled), not the Muon defaults
    below.

    The keyword arguments ``schedule``, ``schedule_interval``,
    ``skip_schedule_on_overflow``, ``max_grad_norm`` and ``grad_norm_type``
    are every optimizer's, documented on
    [`FusedOptimizer`][lrsched_fused.optimizers.FusedOptimizer];
    ``master_weights``, ``stochastic_rounding`` and ``state_dtype`` are not
    taken. A schedule that cycles momentum cycles a Muon group's
    ``momentum`` and an AdamW group's beta1.

    Args:
        params (Iterable): tensors, ``(name, tensor)`` pairs or param-group
            dicts, all on one device; a Muon group's tensors are 2-D,
            contiguous, not DTensor shards.
        lr: The initial lr of the Muon groups.
        weight_decay: Decoupled weight decay of the Muon groups
            (``p *= 1 - lr * weight_decay``).
        momentum: The momentum of the buffers (``buf.lerp_(grad, 1 - momentum)``).
        nesterov: Orthogonalize ``grad.lerp(buf, momentum)`` instead of ``buf``.
        ns_coefficients: ``(a, b, c)`` of the quintic Newton-Schulz iteration.
        eps: The lower clamp of each matrix's norm before it is normalized.
        ns_steps: The iterations, in [0, 100).
        adjust_lr_fn: The lr factor per shape (rows A, columns B): ``None``
            or ``"original"`` sqrt(max(1, A / B)), ``"match_rms_adamw"``
            0.2 * sqrt(max(A, B)), ``"spectral_unclamped"`` sqrt(A / B).

    Raises:
        ValueError: A parameter of a Muon group that is not 2-D (its shape is
            named; the way out is a group with ``use_muon=False``), not
            contiguous, or a DTensor shard (FSDP2: Newton-Schulz needs the
            whole matrix); an invalid hyperparameter; before anything changes.
        TypeError: An argument of the wrong type.

    Example:
        ```python
        matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
        others = [p for p in model.parameters() if all(p is not q for q in matrices)]
        opt = FusedMuon([{"params": matrices}, {"params": others, "use_muon": False, "lr": 3e-4}],
                        lr=0.02, schedule=schedules.CosineAnnealingLR(T_max=10_000), schedule_interval="step")
        ```
    """

    update_op = "adam_step_"  # the AdamW groups'; a Muon group's buckets are stepped by _update
    momentum_field = MomentumByKind()
    hyperparameter_slots = HyperparametersByKind()

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: Tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: Optional[str] = None, *,
                 schedule: Optional[Schedule] = None, schedule_interval: str = "epoch",
                 skip_schedule_on_overflow: bool = False, max_grad_norm: Optional[float] = None,
                 grad_norm_type: float = 2.0):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                        use_muon=True)
        validation.normalize_lr(defaults, type(self).__name__, "defaults")
        super().__init__(params, defaults, schedule, schedule_interval, skip_schedule_on_overflow, max_grad_norm,
                         grad_norm_type)

    # ------------------------------------------------------------ groups
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """As every optimizer's; a group with ``use_muon=False`` gets torch
        AdamW's defaults where it does not say, a Muon group's parameters
        are checked to be whole 2-D matrices (before anything changes)."""
        name = type(self).__name__
        if isinstance(param_group, dict):
            where = f"param group {len(self.param_groups)}"
            validation.check_flag({"use_muon": param_group.get("use_muon", True)}, "use_muon", name, where)
            if uses_muon(param_group):
                listed = validation.group_params(param_group, name, where)  # a generator is read once, here
                param_group = {**param_group, "params": listed}
                check_matrices(validation.split_names(listed, name, where)[0], name, where)
            else:
                param_group = {**ADAMW_GROUP_DEFAULTS, **param_group}
        super().add_param_group(param_group)

    def _hyperparameters_of(self, group: Dict[str, Any]) -> tuple:
        return tuple(map(group.get, ALL_KEYS))

    def _complete_loaded_group(self, group: Dict[str, Any]) -> None:
        """A loaded group (torch.optim.Muon's has no ``use_muon``) gets this kind's defaults where a key is missing."""
        group.setdefault("use_muon", True)
        defaults = self.defaults if uses_muon(group) else {**self.defaults, **ADAMW_GROUP_DEFAULTS}
        for key, value in defaults.items():
            group.setdefault(key, value)

    def _check_hyperparameters(self, group: Dict[str, Any], where: str, momentum_on_device: bool = False) -> None:
        name = type(self).__name__
        validation.check_flag(group, "use_muon", name, where)
        if not uses_muon(group):
            validation.check_adam_hyperparameters(group, name, where, momentum_on_device)
            return
        check_muon_hyperparameters(group, name, where, momentum_on_device)

    def _normalize_hyperparameters(self, group: Dict[str, Any], where: str) -> None:
        if "betas" in group:
            validation.normalize_betas(group, type(self).__name__, where)

    # -------------------------------------------------------------- step
    def _update_op_of(self, group: Dict[str, Any]) -> Optional[str]:
        return None if uses_muon(group) else self.update_op

    def _flags(self, group: Dict[str, Any], master: bool, coded: bool) -> int:
        if uses_muon(group):
            return int(bool(group["nesterov"]))
        return _ops.update_flags(self.update_op, amsgrad=group["amsgrad"],
                                 decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
                                 master_weights=False, stochastic_rounding=False, states_8bit=False)

    def _start_state(self, p: torch.Tensor, state: Dict[str, Any], flags: int) -> None:
        if "step" not in state:  # an AdamW group's parameter (Muon's are filled by _fill_states)
            state["step"] = torch.zeros((), dtype=torch.float64, device=p.device)

    def _fill_states(self, bucket: Bucket) -> None:
        """A Muon bucket: its momentum buffers (``momentum_buffer``, torch's
        name) and its Newton-Schulz batches (``bucket.extra``)."""
        if not uses_muon(bucket.group):
            super()._fill_states(bucket)
            return
        check_matrices(bucket.params, type(self).__name__, f"param group {bucket.group_index}")
        bucket.flags = self._flags(bucket.group, False, False)
        bucket.states = [self._state_tensor(p, self.state[p], "momentum_buffer") for p in bucket.params]
        bucket.extra = self._bucket_plan(bucket)

    def _bucket_plan(self, bucket: Bucket) -> "MuonBucketPlan":
        """The bucket's Newton-Schulz batches, kept across rebuilds of the
        step plan (an edited hyperparameter rebuilds it) while the bucket
        holds the same parameters: a captured CUDA graph keeps reading and
        writing the buffers it was captured with."""
        plans = self.__dict__.setdefault("_newton_schulz_plans", {})
        key = (bucket.group_index, bucket.params[0].dtype if bucket.params else None)
        identity = tuple(map(id, bucket.params))
        kept = plans.get(key)
        if kept is None or kept[0] != identity:
            kept = (identity, MuonBucketPlan(bucket.params))
            plans[key] = kept
        return kept[1]

    def __getstate__(self) -> Dict[str, Any]:
        """As every optimizer's, without the Newton-Schulz scratch buffers (a copy makes its own)."""
        state = super().__getstate__()
        state.pop("_newton_schulz_plans", None)
        return state

    def _update(self, bucket: Bucket, grad_scale: Optional[torch.Tensor], found_inf: Optional[torch.Tensor],
                clip_coef: Optional[torch.Tensor]) -> None:
        if not uses_muon(bucket.group):
            super()._update(bucket, grad_scale, found_inf, clip_coef)
            return
        group, plan = bucket.group, bucket.extra
        grads = bucket.op_grads()
        _ops.muon_momentum_(grads, bucket.states, plan.updates, self.schedule_state, bucket.group_index,
                            bool(bucket.flags), grad_scale, found_inf, clip_coef)
        orthogonalized = plan.orthogonalize(group["ns_coefficients"], group["ns_steps"], group["eps"])
        _ops.muon_apply_(bucket.params, orthogonalized, self.schedule_state, bucket.group_index,
                         plan.lr_ratios(group["adjust_lr_fn"]), found_inf)
        if grad_scale is not None:  # the kernel unscaled the grads in place; a copy goes back
            for i in bucket.relayout:
                bucket.grads[i].copy_(grads[i])
        bucket.release_grads()


MUON_KEYS = ("momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")
ALL_KEYS = ("use_muon", "weight_decay", *MUON_KEYS, *(k for k in ADAMW_GROUP_DEFAULTS if k not in ("lr", "eps",
                                                                                                  "weight_decay")))


def check_matrices(params: Sequence[torch.Tensor], owner: str, where: str) -> None:
    """A Muon group's parameters: whole, contiguous 2-D matrices."""
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            continue  # validation names it
        if p.dim() != 2:
            raise ValueError(f"{owner}: parameter {i} of {where} has shape {tuple(p.shape)}; Muon steps 2-D "
                             "matrices only: put it in a param group with use_muon=False (stepped as AdamW)")
        if validation.is_dtensor(p):
            raise ValueError(f"{owner}: parameter {i} of {where} is a DTensor shard (FSDP2 / tensor parallel); "
                             "Muon's Newton-Schulz iteration needs the whole matrix: use DDP for the Muon "
                             "matrices, or put them in a param group with use_muon=False")
        if not p.is_contiguous():
            raise ValueError(f"{owner}: parameter {i} of {where} (shape {tuple(p.shape)}, strides {p.stride()}) is "
                             "not contiguous; Muon steps contiguous matrices (row-major, as the iteration reads them)")


def check_muon_hyperparameters(group: Dict[str, Any], owner: str, where: str, momentum_on_device: bool) -> None:
    """torch.optim.Muon's checks, and the ones it makes only when it steps (ns_steps, ns_coefficients)."""
    fail = validation.fail
    validation.check_nonnegative(group, "weight_decay", owner, where)
    validation.check_nonnegative(group, "eps", owner, where)
    if not momentum_on_device:
        validation.check_nonnegative(group, "momentum", owner, where)
    validation.check_flag(group, "nesterov", owner, where)
    coefficients = group["ns_coefficients"]
    if (not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3
            or not all(validation.is_real(c) and math.isfinite(c) for c in coefficients)):
        fail(ValueError if isinstance(coefficients, (tuple, list)) else TypeError, owner, where,
             f"ns_coefficients must be three finite numbers (a, b, c), got {coefficients!r}")
    steps = group["ns_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int):
        fail(TypeError, owner, where, f"ns_steps must be an int in [0, 100), got {steps!r}")
    if not 0 <= steps < 100:
        fail(ValueError, owner, where, f"ns_steps must be in [0, 100), got {steps!r}")
    if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
        fail(ValueError, owner, where, f"adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {group['adjust_lr_fn']!r}")
