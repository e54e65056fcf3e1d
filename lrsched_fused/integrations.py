"""A fused optimizer's schedule, shaped like a torch lr scheduler, for the
trainers that step a scheduler object themselves: PyTorch Lightning
(``configure_optimizers``) and Hugging Face transformers' ``Trainer``
(``optimizers=(opt, scheduler)``).

The view owns nothing: the schedule state stays in the optimizer's device
tensor, ``step()`` is ``optimizer.schedule_step()``, and ``state_dict()``
carries the optimizer's ``schedule`` entry so a trainer's checkpoint of the
scheduler restores it.
"""
from __future__ import annotations

from typing import Any, Dict, List

from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from . import _C
from .optimizers import FusedOptimizer

__all__ = ["as_lr_scheduler", "ScheduleView", "PlateauScheduleView"]


def as_lr_scheduler(optimizer: FusedOptimizer) -> "ScheduleView":
    """The scheduler-shaped view of ``optimizer``'s schedule: a
    ``PlateauScheduleView`` (a ``ReduceLROnPlateau`` to trainers, stepped
    with the monitored metric) for ``schedules.ReduceLROnPlateau``, a
    ``ScheduleView`` (an ``LRScheduler``) otherwise.

    Raises:
        TypeError: ``optimizer`` is not one of this package's optimizers (``FusedSGD``, ``FusedAdam``, ...).
        ValueError: the optimizer was built with ``schedule_interval="step"``
            (the trainer would advance the schedule a second time).

    Example:
        ```python
        def configure_optimizers(self):   # PyTorch Lightning
            opt = FusedAdam(self.parameters(), lr=1e-3, schedule=schedules.StepLR(step_size=10))
            return {"optimizer": opt, "lr_scheduler": as_lr_scheduler(opt)}
        ```
    """
    plateau = getattr(getattr(optimizer, "schedule", None), "requires_metric", False)
    return PlateauScheduleView(optimizer) if plateau else ScheduleView(optimizer)


def _check_optimizer(optimizer, owner: str) -> None:
    if not isinstance(optimizer, FusedOptimizer):
        raise TypeError(f"{owner}: expected one of lrsched_fused's optimizers (FusedSGD, FusedAdam, FusedAdamW, "
                        f"FusedLion), got {type(optimizer).__name__} "
                        "(a torch.optim optimizer takes a torch.optim.lr_scheduler scheduler)")
    if optimizer.device_schedule.interval == "step":
        raise ValueError(f"{owner}: the optimizer's schedule advances inside step() (schedule_interval='step'); "
                         "a trainer stepping a scheduler would advance it again. Build the optimizer with "
                         "schedule_interval='epoch' and let the trainer step the view (every batch: Lightning's "
                         "'interval': 'step', or Hugging Face's Trainer)")


class ScheduleView(LRScheduler):
    """``optimizer``'s schedule as an ``LRScheduler``: ``step()``,
    ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``, ``optimizer``,
    ``last_epoch`` and ``base_lrs`` (the last three read the device: they
    sync on CUDA, as ``get_last_lr()`` does).

    ``LRScheduler.__init__`` is not called: it would wrap
    ``optimizer.step`` and take a first scheduler step, and the schedule
    state already starts where torch's constructor leaves it.
    """

    def __init__(self, optimizer: FusedOptimizer):
        name = type(self).__name__
        _check_optimizer(optimizer, name)
        plateau = isinstance(self, PlateauScheduleView)
        if optimizer.schedule.requires_metric != plateau:
            raise TypeError(f"{name}: the optimizer's schedule is {optimizer.schedule!r}; use "
                            f"{'ScheduleView' if plateau else 'PlateauScheduleView'}, or as_lr_scheduler(optimizer)")
        self.optimizer = optimizer

    def step(self, epoch=None) -> None:
        """One ``optimizer.schedule_step()`` (device-side, no sync)."""
        if epoch is not None:
            raise TypeError(f"{type(self).__name__}.step() takes no epoch (torch deprecated it), got {epoch!r}")
        self.optimizer.schedule_step()

    def get_last_lr(self) -> List[float]:
        """The optimizer's current lr per group (reads the device: syncs on CUDA)."""
        return self.optimizer.get_last_lr()

    @property
    def last_epoch(self) -> int:
        """Schedule steps taken so far."""
        return self.optimizer.device_schedule.last_epoch

    @property
    def base_lrs(self) -> List[float]:
        """Each group's initial lr, as torch's ``scheduler.base_lrs``."""
        return self.optimizer.device_schedule.base_lrs

    def state_dict(self) -> Dict[str, Any]:
        """``{"schedule": ...}``: the same entry as in ``optimizer.state_dict()``."""
        self.optimizer.device_schedule.adopt_assigned(self.optimizer.param_groups)
        return {"schedule": self.optimizer.device_schedule.state_dict_entry()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Copies a saved schedule state into the optimizer's (its storage is
        kept, so a captured CUDA graph stays valid)."""
        name = type(self).__name__
        part = state_dict.get("schedule") if isinstance(state_dict, dict) else None
        if not isinstance(part, dict) or not {"name", "config", "state"} <= part.keys():
            got = f"keys {sorted(map(str, state_dict))}" if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}: expected a state_dict from {name}.state_dict() ({{'schedule': {{'name', "
                             f"'config', 'interval', 'state'}}}}), got {got}")
        self.optimizer.device_schedule.check_entry(part)
        self.optimizer.device_schedule.load_entry(part, self.optimizer.param_groups)


class PlateauScheduleView(ScheduleView, ReduceLROnPlateau):
    """The view of a ``schedules.ReduceLROnPlateau`` schedule; also a
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``, which is how Lightning
    and Hugging Face's Trainer know to pass it the monitored metric."""

    def step(self, metrics, epoch=None) -> None:  # type: ignore[override]
        """One ``optimizer.schedule_step(metrics)``: a one-element tensor is
        read on its device (no sync), a number is accepted too."""
        if epoch is not None:
            raise TypeError(f"{type(self).__name__}.step() takes no epoch (torch deprecated it), got {epoch!r}")
        self.optimizer.schedule_step(metrics)

    @property
    def best(self) -> float:
        """The best metric so far, as torch's ``ReduceLROnPlateau.best``."""
        return self.optimizer.device_schedule.plateau_value(_C.PLATEAU_BEST)

    @property
    def num_bad_epochs(self) -> int:
        """Epochs since the last improvement (torch's counter)."""
        return int(self.optimizer.device_schedule.plateau_value(_C.PLATEAU_BAD_EPOCHS))

    @property
    def cooldown_counter(self) -> int:
        """Epochs of cooldown left (torch's counter)."""
        return int(self.optimizer.device_schedule.plateau_value(_C.PLATEAU_COOLDOWN))
