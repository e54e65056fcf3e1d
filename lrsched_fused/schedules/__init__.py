"""Learning-rate schedule specifications.

A schedule here is a description (its kind and hyperparameters); the optimizer
owns its state in a device tensor and advances it with one op per
``schedule_step()`` (see csrc/state_layout.h, NOTE: [schedule state layout],
and csrc/schedule_math.h, NOTE: [schedule program]). Names, arguments,
defaults and semantics are torch's (``torch.optim.lr_scheduler``, minus the
optimizer argument: torch_schedules.py) and transformers'
(``transformers.get_scheduler``: :func:`get_scheduler`,
transformers_schedules.py). All arithmetic is the C++ code's, on the device;
this package only validates arguments and encodes them.

NOTE: [one list of fields]
Each leaf schedule is a frozen dataclass (base.py). Its fields, in order, are
its constructor's arguments, its ``config()`` (what a state_dict stores) and,
for those declared with ``_program``, the values of its program, in the order
of the C++ kind struct that reads them (NOTE: [schedule fields] in
csrc/schedules/kind.h; ``_C.SCHEDULE_FIELDS`` exports its names and a test
ties the two). Each field's metadata (fields.py) says how it is checked and
encoded; per-group fields (``_per_group``) go to the group slots of the
schedule state instead.
"""
from .base import _BY_NAME, Schedule, from_config
from .torch_schedules import (ChainedScheduler, Constant, ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts,
                              CyclicLR, ExponentialLR, LambdaLR, LinearLR, MultiplicativeLR, MultiStepLR, OneCycleLR,
                              PolynomialLR, ReduceLROnPlateau, SequentialLR, StepLR)
from .transformers_schedules import (TRANSFORMERS_SCHEDULER_NAMES, ConstantWithWarmup, CosineWarmupWithMinLr,
                                     CosineWithHardRestarts, CosineWithWarmup, InverseSqrt, LinearWithWarmup,
                                     PolynomialDecayWithWarmup, WarmupStableDecay, _TransformersSchedule,
                                     get_scheduler)

__all__ = [
    "Schedule", "Constant", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR", "ReduceLROnPlateau",
    "SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR",
    "ConstantWithWarmup", "LinearWithWarmup", "CosineWithWarmup", "CosineWithHardRestarts",
    "PolynomialDecayWithWarmup", "InverseSqrt", "CosineWarmupWithMinLr", "WarmupStableDecay",
    "get_scheduler", "TRANSFORMERS_SCHEDULER_NAMES", "from_config",
]

_BY_NAME.update({cls.__name__: cls for cls in (
    Constant, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
    CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR, ReduceLROnPlateau, SequentialLR, ChainedScheduler,
    ConstantWithWarmup, LinearWithWarmup, CosineWithWarmup, CosineWithHardRestarts, PolynomialDecayWithWarmup,
    InverseSqrt, CosineWarmupWithMinLr, WarmupStableDecay)})
