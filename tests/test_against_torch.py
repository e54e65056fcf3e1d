"""Ours vs the stock torch pair (torch.optim.X(fused=True) + lr_scheduler.Y),
same parameters, same gradients, step by step, across named configurations."""
import pytest
import torch

from torch_pair import (EXTRA_OPTIMIZER_INPUTS, TORCH_OPTIMIZER_INPUTS, record_worst, run_pair, worst_lr_error,
                        worst_param_error)

# Relative tolerance of the parameters, ||ours - torch|| / ||torch||, per dtype.
PARAM_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12}
LR_RTOL = 1e-12


def check(run, dtype):
    lr_error, param_error = worst_lr_error(run), worst_param_error(run)
    record_worst(dtype, lr_error, param_error)
    assert lr_error <= LR_RTOL
    assert param_error <= PARAM_RTOL[dtype]


# (schedule name, kwargs, epochs, steps per epoch): horizons cross every step_size,
# T_max to 2.5 x T_max (torch's cosine does not clamp), patience and cooldown.
SCHEDULES = {
    "StepLR": ("StepLR", {"step_size": 7, "gamma": 0.5}, 25, 12),
    "CosineAnnealingLR": ("CosineAnnealingLR", {"T_max": 10, "eta_min": 1e-4}, 25, 12),
    "ReduceLROnPlateau": ("ReduceLROnPlateau",
                          {"factor": 0.5, "patience": 2, "cooldown": 1, "min_lr": [1e-5, 2e-4]}, 30, 10),
    "constant": (None, {}, 3, 100),
}

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
    name, schedule_kwargs, epochs, steps = SCHEDULES[schedule]
    run = run_pair(kind, kwargs, schedule_name=name, schedule_kwargs=schedule_kwargs, epochs=epochs,
                   steps_per_epoch=steps, dtype=dtype)
    assert epochs * steps >= 300
    check(run, dtype)


@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adamw", {"lr": 0.01}),
], ids=["sgd-momentum", "adam-amsgrad", "adamw"])
@pytest.mark.parametrize("schedule", ["StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"])
def test_matches_torch_pair_with_520_tensors(kind, kwargs, schedule):
    name, schedule_kwargs, epochs, steps = SCHEDULES[schedule]
    run = run_pair(kind, kwargs, schedule_name=name, schedule_kwargs=schedule_kwargs, epochs=epochs,
                   steps_per_epoch=steps, layout="many")
    check(run, torch.float32)


@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "amsgrad": True}),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["StepLR", "CosineAnnealingLR"])
def test_step_interval_matches_scheduler_stepped_every_iteration(kind, kwargs, schedule):
    name, schedule_kwargs, _, _ = SCHEDULES[schedule]
    run = run_pair(kind, kwargs, schedule_name=name, schedule_kwargs=schedule_kwargs, epochs=30, steps_per_epoch=10,
                   interval="step", dtype=torch.float64)
    check(run, torch.float64)


def test_a_wrong_lr_would_fail():
    """The comparison can fail: a schedule that differs from torch's is caught."""
    from torch_pair import build_pair
    run = run_pair("adam", {"lr": 0.01}, schedule_name="StepLR", schedule_kwargs={"step_size": 7, "gamma": 0.5},
                   epochs=8, steps_per_epoch=5, dtype=torch.float64)
    assert worst_lr_error(run) <= LR_RTOL
    run.our_lrs[-1][0] *= 1 + 1e-9
    assert worst_lr_error(run) > LR_RTOL
    run.our_params[2] = run.our_params[2] * (1 + 1e-9)
    assert worst_param_error(run) > PARAM_RTOL[torch.float64]
