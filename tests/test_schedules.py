"""The lr sequence of every schedule variant against torch's scheduler driving
a torch optimizer, to 1e-12 relative, over horizons that cross every boundary."""
import dataclasses
import math

import pytest
import torch

from lrsched_fused import FusedSGD, _C, schedules
from torch_pair import plateau_metric

LR_RTOL = 1e-12


def lr_sequences(schedule_name, kwargs, epochs, *, lrs=(0.1, 0.03, 0.7), metric=None, metric_kind="tensor64"):
    torch_params = [torch.zeros(2, requires_grad=True) for _ in lrs]
    our_params = [torch.zeros(2, requires_grad=True) for _ in lrs]
    torch_opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(torch_params, lrs)], lr=lrs[0])
    torch_sched = getattr(torch.optim.lr_scheduler, schedule_name)(torch_opt, **kwargs)
    our_opt = FusedSGD([{"params": [p], "lr": lr} for p, lr in zip(our_params, lrs)], lr=lrs[0],
                       schedule=getattr(schedules, schedule_name)(**kwargs))
    expected, got = [torch_sched.get_last_lr()], [our_opt.get_last_lr()]
    for epoch in range(epochs):
        for p in torch_params + our_params:
            p.grad = torch.ones(2)
        torch_opt.step()
        our_opt.step()
        if metric is None:
            torch_sched.step()
            our_opt.schedule_step()
        else:
            value = metric(epoch)
            torch_sched.step(value)
            if metric_kind == "tensor64":
                our_opt.schedule_step(torch.tensor(value, dtype=torch.float64))
            elif metric_kind == "tensor32":
                our_opt.schedule_step(torch.tensor(value, dtype=torch.float32))
            else:
                our_opt.schedule_step(value)
        expected.append(list(torch_sched.get_last_lr()))
        got.append(our_opt.get_last_lr())
    return expected, got


def assert_same_lrs(expected, got):
    assert len(expected) == len(got)
    for epoch, (e, g) in enumerate(zip(expected, got)):
        for group, (a, b) in enumerate(zip(e, g)):
            err = abs(a - b) / abs(a) if a != 0 else abs(b)
            assert err <= LR_RTOL, f"epoch {epoch} group {group}: torch {a!r}, ours {b!r}"


@pytest.mark.parametrize("kwargs,epochs", [
    ({"step_size": 1}, 40),
    ({"step_size": 3, "gamma": 0.5}, 40),
    ({"step_size": 7, "gamma": 0.9}, 100),
    ({"step_size": 5, "gamma": 1.5}, 30),
    ({"step_size": 4, "gamma": 0.0}, 12),
], ids=lambda v: str(v))
def test_step_lr(kwargs, epochs):
    assert_same_lrs(*lr_sequences("StepLR", kwargs, epochs))


@pytest.mark.parametrize("kwargs,epochs", [
    ({"T_max": 1}, 10),
    ({"T_max": 2, "eta_min": 0.01}, 15),
    ({"T_max": 10}, 25),
    ({"T_max": 10, "eta_min": 1e-3}, 60),
    ({"T_max": 7, "eta_min": 0.05}, 40),
    ({"T_max": 100, "eta_min": 1e-5}, 250),
], ids=lambda v: str(v))
def test_cosine_annealing_lr_does_not_clamp(kwargs, epochs):
    expected, got = lr_sequences("CosineAnnealingLR", kwargs, epochs)
    assert_same_lrs(expected, got)
    t_max = kwargs["T_max"]
    if epochs > 2 * t_max:
        assert got[2 * t_max][0] == pytest.approx(0.1, rel=1e-9)  # back up after 2 * T_max


PLATEAU_VARIANTS = {
    "defaults": {},
    "patience 0": {"patience": 0},
    "patience 2, cooldown 1": {"patience": 2, "cooldown": 1, "factor": 0.5},
    "patience 1, cooldown 3": {"patience": 1, "cooldown": 3, "factor": 0.3},
    "mode max": {"mode": "max", "patience": 1, "factor": 0.5},
    "threshold_mode abs": {"threshold_mode": "abs", "threshold": 0.05, "patience": 1},
    "max abs": {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 0, "cooldown": 2},
    "per-group min_lr": {"patience": 0, "factor": 0.5, "min_lr": [0.01, 0.02, 0.5]},
    "scalar min_lr": {"patience": 0, "factor": 0.2, "min_lr": 0.004},
    "eps blocks small updates": {"patience": 0, "factor": 0.5, "eps": 0.02},
    "large threshold": {"patience": 1, "threshold": 0.5},
}


@pytest.mark.parametrize("variant", list(PLATEAU_VARIANTS))
@pytest.mark.parametrize("metric_kind", ["tensor64", "tensor32", "float"])
def test_reduce_lr_on_plateau(variant, metric_kind):
    kwargs = PLATEAU_VARIANTS[variant]
    mode = kwargs.get("mode", "min")
    expected, got = lr_sequences("ReduceLROnPlateau", kwargs, 70, metric=lambda e: plateau_metric(e, mode),
                                 metric_kind=metric_kind)
    assert_same_lrs(expected, got)
    assert got[-1] != got[0], "the metric sequence must trigger reductions"


def test_plateau_nan_and_inf_metrics_are_bad_epochs_as_in_torch():
    metrics = [1.0, math.nan, math.nan, math.inf, -math.inf, math.nan, 0.5, math.inf, math.inf, math.inf]
    expected, got = lr_sequences("ReduceLROnPlateau", {"patience": 1, "factor": 0.5}, len(metrics),
                                 metric=lambda e: metrics[e])
    assert_same_lrs(expected, got)


def test_plateau_state_matches_torch_counters():
    """best, num_bad_epochs and cooldown_counter as torch keeps them."""
    from lrsched_fused import _C
    kwargs = {"patience": 2, "cooldown": 2, "factor": 0.5}
    p = torch.zeros(1, requires_grad=True)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([p], lr=0.1), **kwargs)
    ours = FusedSGD([torch.zeros(1, requires_grad=True)], lr=0.1, schedule=schedules.ReduceLROnPlateau(**kwargs))
    for epoch in range(40):
        metric = plateau_metric(epoch)
        torch_sched.step(metric)
        ours.schedule_step(torch.tensor(metric, dtype=torch.float64))
        state = ours.schedule_state.tolist()
        assert state[_C.LAST_EPOCH] == torch_sched.last_epoch
        assert state[_C.FIRST_LEAF + _C.LEAF_LAST_EPOCH] == torch_sched.last_epoch
        assert state[_C.FIRST_LEAF + _C.PLATEAU_BEST] == torch_sched.best
        assert state[_C.FIRST_LEAF + _C.PLATEAU_BAD_EPOCHS] == torch_sched.num_bad_epochs
        assert state[_C.FIRST_LEAF + _C.PLATEAU_COOLDOWN] == torch_sched.cooldown_counter


def test_no_schedule_keeps_the_lr():
    opt = FusedSGD([torch.zeros(3, requires_grad=True)], lr=0.25)
    for _ in range(5):
        opt.schedule_step()
    assert opt.get_last_lr() == [0.25]


def test_group_lr_is_a_live_device_view():
    opt = FusedSGD([torch.zeros(3, requires_grad=True)], lr=0.2, schedule=schedules.StepLR(1, gamma=0.5))
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float64
    opt.schedule_step()
    assert float(opt.param_groups[0]["lr"]) == 0.1 and float(lr) == 0.1
    assert opt.lr_tensor.tolist() == [0.1]


def test_assigning_group_lr_by_hand_is_honoured_like_torch():
    p_ref = torch.ones(3, requires_grad=True)
    p = torch.ones(3, requires_grad=True)
    ref = torch.optim.SGD([p_ref], lr=0.2)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref, step_size=2, gamma=0.5)
    opt = FusedSGD([p], lr=0.2, schedule=schedules.StepLR(step_size=2, gamma=0.5))
    for epoch in range(6):
        if epoch == 3:
            ref.param_groups[0]["lr"] = 0.05
            opt.param_groups[0]["lr"] = 0.05
        p_ref.grad = torch.ones(3)
        p.grad = torch.ones(3)
        ref.step()
        opt.step()
        ref_sched.step()
        opt.schedule_step()
        assert opt.get_last_lr() == pytest.approx(ref_sched.get_last_lr(), rel=1e-15)
    torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-7)


# ------------------------------------------------ one list of fields, one size limit
LEAF_CLASSES = [cls for name, cls in sorted(schedules._BY_NAME.items())
                if dataclasses.is_dataclass(cls) and issubclass(cls, schedules.Schedule)]


def test_every_leaf_kind_has_the_fields_of_its_cpp_struct_in_program_order():
    """NOTE: [one list of fields]: the names C++ decodes each leaf's program
    into (_C.SCHEDULE_FIELDS) are the Python dataclass's program fields, in
    order, and every C++ kind has its Python schedule."""
    assert {cls.kind for cls in LEAF_CLASSES} == set(_C.SCHEDULE_FIELDS)
    for cls in LEAF_CLASSES:
        assert cls.program_fields() == _C.SCHEDULE_FIELDS[cls.kind], cls.__name__


def test_a_saved_config_of_every_leaf_rebuilds_an_equal_schedule():
    examples = [schedules.StepLR(3), schedules.MultiStepLR([9, 2, 2], 0.5), schedules.ConstantLR(),
                schedules.LinearLR(), schedules.ExponentialLR(0.9), schedules.PolynomialLR(),
                schedules.CosineAnnealingLR(10), schedules.CosineAnnealingWarmRestarts(3, 2),
                schedules.OneCycleLR([0.1, 0.2], epochs=3, steps_per_epoch=4), schedules.CyclicLR(0.01, 0.1),
                schedules.ReduceLROnPlateau(min_lr=[0.0, 0.1]), schedules.Constant(),
                schedules.ConstantWithWarmup(3), schedules.LinearWithWarmup(2, 10),
                schedules.CosineWithWarmup(2, 10, min_lr=1e-3), schedules.CosineWithHardRestarts(1, 9, 2),
                schedules.PolynomialDecayWithWarmup(2, 10, lr_init=0.1), schedules.InverseSqrt(4),
                schedules.CosineWarmupWithMinLr(2, 10, warmup_lr_rate=0.1),
                schedules.WarmupStableDecay(2, 3, num_training_steps=10)]
    assert {type(s) for s in examples} == set(LEAF_CLASSES)
    for schedule in examples:
        rebuilt = schedules.from_config(type(schedule).__name__, schedule.config())
        assert rebuilt == schedule and rebuilt.program() == schedule.program()
        with pytest.raises(dataclasses.FrozenInstanceError):
            schedule.kind_of_change = 1


@pytest.mark.parametrize("make,size", [
    (lambda n: schedules.MultiStepLR(list(range(1, n + 1))), lambda n: 2 + 2 + n + 1),
    (lambda n: schedules.SequentialLR([schedules.ExponentialLR(0.9), schedules.MultiStepLR(list(range(n)))], [4]),
     lambda n: 2 + 1 + 3 + 2 + n + 1),
    (lambda n: schedules.ChainedScheduler([schedules.StepLR(2), schedules.MultiStepLR(list(range(n)))]),
     lambda n: 2 + 4 + 2 + n + 1),
], ids=["MultiStepLR", "SequentialLR", "ChainedScheduler"])
def test_a_program_over_the_device_limit_is_refused_at_construction(make, size):
    """The CUDA kernel takes the program in its arguments (_C.MAX_PROGRAM_SIZE
    values): the limit holds on every device, checked when the schedule is built."""
    limit = _C.MAX_PROGRAM_SIZE
    largest = next(n for n in range(limit, 0, -1) if size(n) <= limit)
    schedule = make(largest)
    assert len(schedule.program()) == limit
    opt = FusedSGD([torch.zeros(2, requires_grad=True)], lr=0.1, schedule=schedule)
    opt.schedule_step()
    with pytest.raises(ValueError, match=rf"has {limit + 1} values, more than the {limit} the device takes"):
        make(largest + 1)
