"""Typed wrappers over torch.ops.lrsched_fused.* and their fake implementations
(so torch.compile traces through them without a graph break)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import _C  # noqa: F401  (loads the library and registers the ops)

_LIB = "lrsched_fused"

# The overloads, bound once: calling an OpOverload skips the packet's overload
# resolution on every step.
_adam_step = torch.ops.lrsched_fused.adam_step_.default
_sgd_step = torch.ops.lrsched_fused.sgd_step_.default
_schedule_step = torch.ops.lrsched_fused.schedule_step_.default
_grad_norm_partial = torch.ops.lrsched_fused.grad_norm_partial_.default
_clip_coefficient = torch.ops.lrsched_fused.clip_coefficient_.default


def adam_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor],
    steps: Sequence[torch.Tensor],
    schedule_state: torch.Tensor,
    group_index: int,
    *,
    beta1: float,
    beta2: float,
    weight_decay: float,
    eps: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Optional[torch.Tensor] = None,
    found_inf: Optional[torch.Tensor] = None,
    momentum_from_schedule: bool = False,
    clip_coef: Optional[torch.Tensor] = None,
    master_params: Optional[Sequence[torch.Tensor]] = None,
) -> None:
    """master_params: float32 masters of bf16/fp16 params (NOTE: [master
    weights] in csrc/op_checks.h); the states are then float32 too."""
    _adam_step(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state, group_index,
        beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf,
        momentum_from_schedule, clip_coef, master_params,
    )


def sgd_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    momentum_buffers: Sequence[torch.Tensor],
    steps: Sequence[torch.Tensor],
    schedule_state: torch.Tensor,
    group_index: int,
    *,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Optional[torch.Tensor] = None,
    found_inf: Optional[torch.Tensor] = None,
    momentum_from_schedule: bool = False,
    clip_coef: Optional[torch.Tensor] = None,
    master_params: Optional[Sequence[torch.Tensor]] = None,
) -> None:
    _sgd_step(
        params, grads, momentum_buffers, steps, schedule_state, group_index,
        momentum, dampening, weight_decay, nesterov, maximize, grad_scale, found_inf, momentum_from_schedule,
        clip_coef, master_params,
    )


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
@torch.library.register_fake(f"{_LIB}::adam_step_")
def _adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state,
                    group_index, beta1, beta2, weight_decay, eps, amsgrad, maximize,
                    decoupled_weight_decay, grad_scale=None, found_inf=None, momentum_from_schedule=False,
                    clip_coef=None, master_params=None) -> None:
    return None


@torch.library.register_fake(f"{_LIB}::sgd_step_")
def _sgd_step_fake(params, grads, momentum_buffers, steps, schedule_state, group_index, momentum,
                   dampening, weight_decay, nesterov, maximize, grad_scale=None, found_inf=None,
                   momentum_from_schedule=False, clip_coef=None, master_params=None) -> None:
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
