"""Ours vs the stock torch pair (torch.optim.X(fused=True) + lr_scheduler.Y),
same parameters, same gradients, step by step, across named configurations."""
import pytest
import torch

from schedule_specs import PAIR_SCHEDULES as SCHEDULES
from torch_pair import (EXTRA_OPTIMIZER_INPUTS, TORCH_OPTIMIZER_INPUTS, compare, record_worst, worst_lr_error,
                        worst_param_error)

# Relative tolerance of the parameters, ||ours - torch|| / ||torch||, per dtype:
# exact. Measured 0.0 on every run of these tables (CPU, ATEN_CPU_CAPABILITY=
# default as tests/conftest.py pins it, this build: -std=c++20 keeps gcc from
# contracting to FMA): ours rounds every operation as torch's fused CPU kernel.
PARAM_RTOL = {torch.float32: 0.0, torch.float64: 0.0}
LR_RTOL = 1e-12


def check(run, dtype):
    lr_error, param_error = worst_lr_error(run), worst_param_error(run)
    record_worst(dtype, lr=lr_error, param=param_error)
    assert lr_error <= LR_RTOL
    assert param_error <= PARAM_RTOL[dtype]


CONFIGS = [
    pytest.param(kind, kwargs, id=f"{kind}-{desc}")
    for table in (TORCH_OPTIMIZER_INPUTS, EXTRA_OPTIMIZER_INPUTS)
    for kind, inputs in table.items()
    for desc, kwargs in inputs.items()
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("kind,kwargs", CONFIGS)
def test_matches_torch_pair(kind, kwargs, schedule, dtype):
    spec = SCHEDULES[schedule]
    run = compare(kind, kwargs, spec=spec, dtype=dtype)
    assert spec["epochs"] * spec["steps_per_epoch"] >= 300
    check(run, dtype)


@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adamw", {"lr": 0.01}),
], ids=["sgd-momentum", "adam-amsgrad", "adamw"])
@pytest.mark.parametrize("schedule", ["StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"])
def test_matches_torch_pair_with_520_tensors(kind, kwargs, schedule):
    spec = SCHEDULES[schedule]
    run = compare(kind, kwargs, spec=spec, layout="many")
    check(run, torch.float32)


@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "amsgrad": True}),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["StepLR", "CosineAnnealingLR"])
def test_step_interval_matches_scheduler_stepped_every_iteration(kind, kwargs, schedule):
    run = compare(kind, kwargs, spec=SCHEDULES[schedule], epochs=30, steps_per_epoch=10, interval="step",
                  dtype=torch.float64)
    check(run, torch.float64)


def test_a_wrong_lr_would_fail():
    """The comparison can fail: a schedule that differs from torch's is caught."""
    run = compare("adam", {"lr": 0.01}, spec=SCHEDULES["StepLR"], epochs=8, steps_per_epoch=5, dtype=torch.float64)
    assert worst_lr_error(run) <= LR_RTOL
    run.our_lrs[-1][0] *= 1 + 1e-9
    assert worst_lr_error(run) > LR_RTOL
    run.our_params[2] = run.our_params[2] * (1 + 1e-9)
    assert worst_param_error(run) > PARAM_RTOL[torch.float64]
