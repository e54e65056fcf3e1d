"""The stock torch scheduler for any of our schedules: what lrsched_fused is
verified against, for the tests, the plot helper and anyone checking a run.

``torch_scheduler(schedule, optimizer)`` builds torch's
``torch.optim.lr_scheduler`` object(s) on a torch optimizer from one of our
schedule specifications; ``step(scheduler, metric)`` steps it as a user would.
A composite holding a ReduceLROnPlateau, which torch's SequentialLR and
ChainedScheduler refuse, becomes the two torch schedulers stepped by hand
(``ByHand``), as users write it today. The twin of a transformers schedule
(``schedules.get_scheduler``) is the ``LambdaLR`` that transformers itself
builds, so it needs ``transformers``.
"""
from __future__ import annotations

import warnings
from bisect import bisect_right
from typing import List, Optional, Sequence, Tuple

import torch
from torch.optim import lr_scheduler

from .. import schedules

__all__ = ["ByHand", "torch_scheduler", "transformers_lambda_lr", "step", "lr_curves"]


class ByHand:
    """SequentialLR / ChainedScheduler over torch schedulers that include a
    ReduceLROnPlateau: the scheduler in charge steps (the plateau one with the
    metric); at a SequentialLR milestone the incoming scheduler restarts as
    torch's SequentialLR restarts it (``_update_lr(0)``), except a plateau
    one, which takes its first ``step(metric)`` from the lr it is handed."""

    def __init__(self, optimizer, parts: list, milestones: Optional[List[int]]):
        self.optimizer, self.parts, self.milestones, self.last_epoch = optimizer, parts, milestones, 0
        if milestones is not None:  # what torch's SequentialLR constructor does
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"])
            for part in parts:
                part.last_epoch -= 1
            if not isinstance(parts[0], lr_scheduler.ReduceLROnPlateau):
                parts[0]._initial_step()

    @staticmethod
    def _step(part, metric):
        if isinstance(part, lr_scheduler.ReduceLROnPlateau):
            part.step(metric)
        else:
            part.step()

    def step(self, metric=None) -> None:
        self.last_epoch += 1
        if self.milestones is None:
            for part in self.parts:
                self._step(part, metric)
            return
        index = bisect_right(self.milestones, self.last_epoch)
        part = self.parts[index]
        at_milestone = index > 0 and self.milestones[index - 1] == self.last_epoch
        if at_milestone and not isinstance(part, lr_scheduler.ReduceLROnPlateau):
            part._update_lr(0)
        else:
            self._step(part, metric)

    def get_last_lr(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


def torch_scheduler(schedule: schedules.Schedule, optimizer: torch.optim.Optimizer):
    """torch's scheduler for `schedule` on `optimizer` (None for Constant)."""
    if isinstance(schedule, schedules.Constant):
        return None
    if isinstance(schedule, (schedules.SequentialLR, schedules.ChainedScheduler)):
        parts = [torch_scheduler(s, optimizer) for s in schedule.schedulers]
        milestones = list(schedule.milestones) if isinstance(schedule, schedules.SequentialLR) else None
        if schedule.requires_metric:
            return ByHand(optimizer, parts, milestones)
        if milestones is not None:
            return lr_scheduler.SequentialLR(optimizer, parts, milestones)
        return lr_scheduler.ChainedScheduler(parts)
    if isinstance(schedule, schedules._TransformersSchedule):
        return transformers_lambda_lr(schedule, optimizer)
    return getattr(lr_scheduler, type(schedule).__name__)(optimizer, **schedule.config())


def transformers_lambda_lr(schedule: schedules.Schedule, optimizer: torch.optim.Optimizer) -> lr_scheduler.LambdaLR:
    """``LambdaLR(optimizer, [lr_lambda per group])`` with the lr_lambdas that
    ``transformers.optimization.<schedule.transformers_function>`` builds from
    the schedule's arguments, for an optimizer whose lr is the group's initial
    lr (or ``lr_init``): what ours computes for each group."""
    try:
        from transformers import optimization
    except ImportError as exc:
        raise ImportError(f"the torch twin of {type(schedule).__name__} is transformers' LambdaLR: "
                          "pip install transformers") from exc
    kwargs = schedule.config()
    lr_init = kwargs.pop("lr_init", None)
    build = getattr(optimization, schedule.transformers_function)
    lambdas = []
    for group in optimizer.param_groups:
        initial_lr = float(group.get("initial_lr", group["lr"]))
        stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=initial_lr if lr_init is None else lr_init)
        with warnings.catch_warnings():  # WarmupStableDecay with both step counts warns, as ours does
            warnings.simplefilter("ignore")
            lambdas.append(build(stand_in, **kwargs).lr_lambdas[0])
    return lr_scheduler.LambdaLR(optimizer, lambdas)


def step(scheduler, metric=None) -> None:
    """One scheduler step, with the metric where the scheduler takes one."""
    if scheduler is None:
        return
    if isinstance(scheduler, (ByHand, lr_scheduler.ReduceLROnPlateau)):
        scheduler.step(metric)
    else:
        scheduler.step()


def lr_curves(schedule: schedules.Schedule, steps: int, lrs: Sequence[float] = (0.1,),
              metrics: Optional[Sequence[float]] = None) -> Tuple[List[List[float]], List[List[float]]]:
    """The lr of every group after construction and after each of `steps`
    schedule steps: (ours, torch's), for SGD with momentum 0.9 (so that
    cycle_momentum has a momentum to move). `metrics[k]` feeds step k of a
    schedule that needs one."""
    from .optimizers import FusedSGD

    if schedule.requires_metric and (metrics is None or len(metrics) < steps):
        raise ValueError(f"{type(schedule).__name__} needs a metric per step: pass {steps} metrics")
    ours = FusedSGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs], lr=lrs[0],
                    momentum=0.9, schedule=schedule)
    reference = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs],
                                lr=lrs[0], momentum=0.9)
    with warnings.catch_warnings():  # torch warns that no optimizer.step() came first
        warnings.simplefilter("ignore")
        theirs = torch_scheduler(schedule, reference)
    our_curve = [ours.get_last_lr()]
    torch_curve = [[float(g["lr"]) for g in reference.param_groups]]
    for k in range(steps):
        metric = metrics[k] if schedule.requires_metric else None
        ours.schedule_step(metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step(theirs, metric)
        our_curve.append(ours.get_last_lr())
        torch_curve.append([float(g["lr"]) for g in reference.param_groups])
    return our_curve, torch_curve
