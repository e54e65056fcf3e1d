"""lrsched_fused: fused SGD/Adam/AdamW/Lion/Muon whose learning-rate schedule is
computed on the device, inside the step, with no host sync."""
import torch  # noqa: F401  (loads libc10 and libtorch before the extension)

from . import schedules
from .integrations import PlateauScheduleView, ScheduleView, as_lr_scheduler
from .muon import FusedMuon
from .optimizers import FusedAdam, FusedAdamW, FusedLion, FusedSGD

__all__ = ["FusedSGD", "FusedAdam", "FusedAdamW", "FusedLion", "FusedMuon", "schedules", "as_lr_scheduler",
           "ScheduleView", "PlateauScheduleView"]
__version__ = "0.1.0"
