"""Property tests: random optimizer options, schedules, horizons, metric
sequences, parameter shapes, missing grads and a mid-run state_dict reload,
driven step by step beside the stock torch optimizer + scheduler.

The default run draws a fixed (derandomized) set of examples; the long run
(``-m slow --run-slow``) draws 1,000 fresh ones. LRSCHED_FUZZ_EXAMPLES
overrides the default count."""
import copy
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedule_specs import leaf
from torch_pair import OUR_OPTIMIZERS, assert_lr_sequences_close, compare

NAN, INF = math.nan, math.inf
# exact: measured 0.0 over every fuzz case (CPU, ATEN_CPU_CAPABILITY=default as
# tests/conftest.py pins it), as in tests/test_against_torch.py
TOLERANCE = {torch.float32: 0.0, torch.float64: 0.0}
LR_RTOL = 1e-12


def unit(low, high):
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def sgd_options(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]) | unit(0.0, 0.99))
    dampening = draw(st.sampled_from([0.0, 0.1]) | unit(0.0, 1.0))
    nesterov = momentum > 0 and dampening == 0 and draw(st.booleans())
    return {"lr": draw(unit(0.0, 0.5)), "momentum": momentum, "dampening": dampening,
            "weight_decay": draw(st.just(0.0) | unit(0.0, 0.5)), "nesterov": nesterov, "maximize": draw(st.booleans())}


def adam_options(decoupled: bool):
    extra = {} if decoupled else {"decoupled_weight_decay": st.booleans()}
    return st.fixed_dictionaries({
        "lr": unit(0.0, 0.2),
        "betas": st.tuples(st.sampled_from([0.0, 0.9]) | unit(0.0, 0.999), st.sampled_from([0.999]) | unit(0.0, 0.9999)),
        "eps": st.sampled_from([1e-8, 1e-3]) | unit(1e-10, 1e-2),
        "weight_decay": st.just(0.0) | unit(0.0, 0.5),
        "amsgrad": st.booleans(),
        "maximize": st.booleans(),
        **extra,
    })


OPTIMIZER_OPTIONS = {"sgd": sgd_options(), "adam": adam_options(False), "adamw": adam_options(True)}

# One entry per schedule: torch's keyword arguments minus the optimizer.
# Every optimizer here has two param groups (per-group min_lr lists are drawn).
SCHEDULE_KWARGS = {
    None: st.just({}),
    "StepLR": st.fixed_dictionaries({"step_size": st.integers(1, 8), "gamma": st.just(0.1) | unit(0.0, 1.5)}),
    "CosineAnnealingLR": st.fixed_dictionaries({"T_max": st.integers(1, 12), "eta_min": st.just(0.0) | unit(0.0, 0.01)}),
    "ReduceLROnPlateau": st.fixed_dictionaries({
        "mode": st.sampled_from(["min", "max"]),
        "factor": st.just(0.1) | unit(0.0, 0.95),
        "patience": st.integers(0, 4),
        "threshold": st.sampled_from([0.0, 1e-4]) | unit(0.0, 0.3),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "min_lr": st.just(0.0) | unit(0.0, 1e-3) | st.lists(unit(0.0, 1e-3), min_size=2, max_size=2),
        "eps": st.sampled_from([0.0, 1e-8, 1e-4]),
    }),
    "MultiStepLR": st.fixed_dictionaries({"milestones": st.lists(st.integers(0, 20), min_size=1, max_size=4),
                                          "gamma": unit(0.05, 1.0)}),
    "ConstantLR": st.fixed_dictionaries({"factor": unit(0.05, 1.0), "total_iters": st.integers(0, 8)}),
    "LinearLR": st.fixed_dictionaries({"start_factor": unit(0.05, 1.0), "end_factor": unit(0.0, 1.0),
                                       "total_iters": st.integers(1, 10)}),
    "ExponentialLR": st.fixed_dictionaries({"gamma": unit(0.5, 1.0)}),
    "PolynomialLR": st.fixed_dictionaries({"total_iters": st.integers(1, 10), "power": unit(0.0, 3.0)}),
    "CosineAnnealingWarmRestarts": st.fixed_dictionaries({"T_0": st.integers(1, 6), "T_mult": st.integers(1, 3),
                                                          "eta_min": st.just(0.0) | unit(0.0, 0.01)}),
    # OneCycleLR, CyclicLR and the composites: tests/test_all_schedules.py's property test
}
METRIC_SCHEDULES = {"ReduceLROnPlateau"}

# Repeated values make plateaus; NaN and +-inf are bad epochs or new bests as in torch.
METRIC_VALUES = st.sampled_from([0.0, 0.5, 1.0, 1.0, 1.00001, 2.0, NAN, INF, -INF]) | unit(-5.0, 5.0)
SHAPES = st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3)


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(OPTIMIZER_OPTIONS)))
    schedule = draw(st.sampled_from(list(SCHEDULE_KWARGS)))
    epochs = draw(st.integers(1, 25))
    interval = "epoch" if schedule in METRIC_SCHEDULES or schedule is None else draw(st.sampled_from(["epoch", "step"]))
    return {
        "kind": kind,
        "options": draw(OPTIMIZER_OPTIONS[kind]),
        "schedule": schedule,
        "schedule_kwargs": draw(SCHEDULE_KWARGS[schedule]),
        "interval": interval,
        "epochs": epochs,
        "steps_per_epoch": draw(st.integers(1, 3)),
        "metrics": draw(st.lists(METRIC_VALUES, min_size=epochs, max_size=epochs)),
        "metric_as": draw(st.sampled_from(["float", "float64 tensor", "float32 tensor"])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "shapes": [draw(SHAPES), draw(SHAPES)],
        "group1_lr_scale": draw(st.sampled_from([0.5, 1.0, 2.0])),
        "none_grad_rate": draw(st.sampled_from([0.0, 0.3])),
        "reload_after_epoch": draw(st.none() | st.integers(0, epochs - 1)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def assert_close(ours, reference, dtype, what):
    tol = TOLERANCE[dtype]
    finite = reference[torch.isfinite(reference)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(ours, reference, rtol=tol, atol=tol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


def check_against_torch(case):
    gen = torch.Generator().manual_seed(case["seed"])
    values = [[torch.randn(s, generator=gen, dtype=torch.float64).mul_(0.5).to(case["dtype"]) for s in group]
              for group in case["shapes"]]

    def grads(step, index, param):
        # every parameter has a grad on the first step: torch's fused SGD starts
        # all momentum buffers of a group on its first step (see test_edge_cases)
        if step > 0 and torch.rand((), generator=gen).item() < case["none_grad_rate"]:
            return None
        return torch.randn(param.shape, generator=gen, dtype=torch.float64).to(case["dtype"])

    def check_epoch(pair, epoch):
        for i, (a, b) in enumerate(zip(pair.torch_params, pair.our_params)):
            assert_close(b.detach(), a.detach(), case["dtype"], f"epoch {epoch} param {i}")

    spec = leaf(case["schedule"], **case["schedule_kwargs"]) if case["schedule"] else None
    run = compare(case["kind"], case["options"], spec=spec, values=values, interval=case["interval"],
                  group1_lr_scale=case["group1_lr_scale"], epochs=case["epochs"],
                  steps_per_epoch=case["steps_per_epoch"], grads=grads, metric=lambda epoch: case["metrics"][epoch],
                  metric_as=case["metric_as"], after_epoch=check_epoch,
                  reload_after_epoch=case["reload_after_epoch"])
    assert_lr_sequences_close(run.torch_lrs, run.our_lrs, "lr", "fuzz", rtol=LR_RTOL, zero_atol=0.0)


FUZZ_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=int(os.environ.get("LRSCHED_FUZZ_EXAMPLES", "100")), derandomize=True, **FUZZ_SETTINGS)
@given(cases())
def test_fuzz_against_torch(case):
    check_against_torch(case)


@pytest.mark.slow
@settings(max_examples=1000, **FUZZ_SETTINGS)
@given(cases())
def test_fuzz_against_torch_long(case):
    check_against_torch(case)


def test_the_fuzz_check_can_fail():
    """A case whose torch side sees another option must be caught."""
    case = {"kind": "adam", "options": {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                        "amsgrad": False, "maximize": False},
            "schedule": "StepLR", "schedule_kwargs": {"step_size": 1, "gamma": 0.5}, "interval": "epoch",
            "epochs": 2, "steps_per_epoch": 1, "metrics": [1.0, 1.0], "metric_as": "float",
            "dtype": torch.float32, "shapes": [[(3,)], [(2,)]], "group1_lr_scale": 1.0, "none_grad_rate": 0.0,
            "reload_after_epoch": None, "seed": 0}
    check_against_torch(case)
    original = OUR_OPTIMIZERS["adam"]
    try:
        OUR_OPTIMIZERS["adam"] = lambda groups, **kw: original(groups, **dict(kw, eps=1e-3))
        with pytest.raises(AssertionError, match="epoch 0 param 0"):
            check_against_torch(case)
    finally:
        OUR_OPTIMIZERS["adam"] = original
