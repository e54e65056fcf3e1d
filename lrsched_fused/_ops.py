"""Typed wrappers over torch.ops.lrsched_fused.* and their fake implementations
(so torch.compile traces through them without a graph break)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from . import _C  # loads the library and registers the ops

_LIB = "lrsched_fused"

# The overloads, bound once: calling an OpOverload skips the packet's overload
# resolution on every step.
_update_ops = {name: getattr(torch.ops.lrsched_fused, name).default for name in _C.UPDATE_OPS}
_schedule_step = torch.ops.lrsched_fused.schedule_step_.default
_grad_norm_partial = torch.ops.lrsched_fused.grad_norm_partial_.default
_clip_coefficient = torch.ops.lrsched_fused.clip_coefficient_.default
_muon_momentum = torch.ops.lrsched_fused.muon_momentum_.default
_muon_apply = torch.ops.lrsched_fused.muon_apply_.default


def update_flags(op_name: str, **flags: bool) -> int:
    """The ``flags`` argument of update op ``op_name`` from its flags by name
    (NOTE: [update op declaration] in csrc/update_ops.h); every flag must be named."""
    bits = _C.UPDATE_OPS[op_name]["flags"]
    if set(flags) != set(bits):
        raise TypeError(f"{op_name}: flags {sorted(flags)} given, its flags are {sorted(bits)}")
    return sum(bit for name, bit in bits.items() if flags[name])


def state_names(op_name: str, flags: int) -> List[str]:
    """The state slots present in update op ``op_name``'s ``states`` with
    ``flags``, in order (each holds one tensor per parameter)."""
    return [name for name, needs in _C.UPDATE_OPS[op_name]["states"] if needs == 0 or flags & needs]


def update_step_(
    op_name: str,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    states: Sequence[torch.Tensor],
    schedule_state: torch.Tensor,
    group_index: int,
    flags: int,
    grad_scale: Optional[torch.Tensor] = None,
    found_inf: Optional[torch.Tensor] = None,
    clip_coef: Optional[torch.Tensor] = None,
    element_offsets: Sequence[int] = (),
) -> None:
    """One step of update op ``op_name`` ("adam_step_", "sgd_step_", "lion_step_"): ``states``
    holds the slots ``state_names(op_name, flags)`` names, slot after slot; the
    group's lr and hyperparameters are read from its block of
    ``schedule_state`` (NOTE: [hyperparameters on the device]). With the
    ``stochastic_rounding`` flag, ``element_offsets`` holds each param's first
    element's global index (NOTE: [stochastic rounding])."""
    _update_ops[op_name](params, grads, states, schedule_state, group_index, flags, grad_scale, found_inf,
                         clip_coef, list(element_offsets))


def muon_momentum_(
    grads: Sequence[torch.Tensor],
    momentum_buffers: Sequence[torch.Tensor],
    updates: Sequence[torch.Tensor],
    schedule_state: torch.Tensor,
    group_index: int,
    nesterov: bool,
    grad_scale: Optional[torch.Tensor] = None,
    found_inf: Optional[torch.Tensor] = None,
    clip_coef: Optional[torch.Tensor] = None,
) -> None:
    """Muon's momentum pass (NOTE: [Muon's passes] in csrc/ops.cpp): each
    buffer moves toward its grad by 1 - the group's momentum, and its bfloat16
    ``updates`` tensor receives the buffer (nesterov: the grad moved toward it)."""
    _muon_momentum(grads, momentum_buffers, updates, schedule_state, group_index, int(nesterov), grad_scale,
                   found_inf, clip_coef)


def muon_apply_(
    params: Sequence[torch.Tensor],
    orthogonalized: Sequence[torch.Tensor],
    schedule_state: torch.Tensor,
    group_index: int,
    lr_ratios: Sequence[float],
    found_inf: Optional[torch.Tensor] = None,
) -> None:
    """Muon's last pass: param * (1 - lr * weight_decay) - lr * lr_ratio * orthogonalized,
    lr and weight_decay the group's in ``schedule_state``."""
    _muon_apply(params, orthogonalized, schedule_state, group_index, list(lr_ratios), found_inf)


def grad_norm_partial_(
    grads: Sequence[torch.Tensor],
    norm_type: float,
    grad_scale: Optional[torch.Tensor],
    partial: torch.Tensor,
) -> None:
    """partial <- the sum of ||g||_p ** p over grads (max for p = inf), each
    norm rounded to its grad's dtype first (NOTE: [grad norm])."""
    _grad_norm_partial(grads, norm_type, grad_scale, partial)


def clip_coefficient_(partial: torch.Tensor, norm_type: float, max_norm: float, total_norm: torch.Tensor,
                      clip_coef: torch.Tensor) -> None:
    """total_norm <- partial ** (1/p), clip_coef <- min(1, max_norm / (total_norm + 1e-6)),
    rounded as clip_grad_norm_'s tensor ops round them (NOTE: [grad norm])."""
    _clip_coefficient(partial, norm_type, max_norm, total_norm, clip_coef)


def schedule_step_(
    schedule_state: torch.Tensor,
    program: Sequence[float],
    metric: Optional[torch.Tensor] = None,
    skip_if: Optional[torch.Tensor] = None,
    *,
    initial: bool = False,
) -> None:
    _schedule_step(schedule_state, list(program), metric, skip_if, initial)


# The ops only mutate their inputs in place, so their fake implementations
# have nothing to compute.
def _update_step_fake(params, grads, states, schedule_state, group_index, flags, grad_scale=None,
                      found_inf=None, clip_coef=None, element_offsets=()) -> None:
    return None


for _name in _C.UPDATE_OPS:
    torch.library.register_fake(f"{_LIB}::{_name}")(_update_step_fake)


@torch.library.register_fake(f"{_LIB}::muon_momentum_")
def _muon_momentum_fake(grads, momentum_buffers, updates, schedule_state, group_index, flags, grad_scale=None,
                        found_inf=None, clip_coef=None) -> None:
    return None


@torch.library.register_fake(f"{_LIB}::muon_apply_")
def _muon_apply_fake(params, orthogonalized, schedule_state, group_index, lr_ratios, found_inf=None) -> None:
    return None


@torch.library.register_fake(f"{_LIB}::grad_norm_partial_")
def _grad_norm_partial_fake(grads, norm_type, grad_scale, partial) -> None:
    return None


@torch.library.register_fake(f"{_LIB}::clip_coefficient_")
def _clip_coefficient_fake(partial, norm_type, max_norm, total_norm, clip_coef) -> None:
    return None


@torch.library.register_fake(f"{_LIB}::schedule_step_")
def _schedule_step_fake(schedule_state, program, metric=None, skip_if=None, initial=False) -> None:
    return None
