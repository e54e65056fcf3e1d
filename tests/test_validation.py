"""Bad input raises ValueError/TypeError naming the value and what is
accepted, before anything changes."""
import math

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, schedules


def params():
    return [torch.randn(3, requires_grad=True)]


@pytest.mark.parametrize("ctor,kwargs,exc,match", [
    (FusedAdam, {"lr": -1.0}, ValueError, r"lr must be .*>= 0, got -1.0"),
    (FusedAdam, {"lr": math.nan}, ValueError, r"lr must be .*got nan"),
    (FusedAdam, {"lr": "0.1"}, TypeError, r"lr must be a real number"),
    (FusedAdam, {"eps": -1e-8}, ValueError, r"eps must be a real number >= 0, got -1e-08"),
    (FusedAdam, {"weight_decay": -0.1}, ValueError, r"weight_decay must be a real number >= 0, got -0.1"),
    (FusedAdam, {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be in \[0, 1\), got 1.0"),
    (FusedAdam, {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be in \[0, 1\), got -0.1"),
    (FusedAdam, {"betas": (0.9,)}, ValueError, r"betas must be a pair"),
    (FusedAdam, {"betas": 0.9}, TypeError, r"betas must be a pair"),
    (FusedAdam, {"amsgrad": "yes"}, TypeError, r"amsgrad must be a bool"),
    (FusedAdamW, {"weight_decay": math.nan}, ValueError, r"weight_decay must be a real number >= 0, got nan"),
    (FusedSGD, {"lr": -0.1}, ValueError, r"lr must be"),
    (FusedSGD, {"momentum": -0.5}, ValueError, r"momentum must be a real number >= 0, got -0.5"),
    (FusedSGD, {"nesterov": True}, ValueError, r"nesterov=True requires momentum > 0 and dampening == 0"),
    (FusedSGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, r"nesterov=True requires"),
    (FusedSGD, {"schedule": "cosine"}, TypeError, r"schedule must be None or an lrsched_fused.schedules"),
    (FusedSGD, {"schedule_interval": "batch"}, ValueError, r"schedule_interval must be one of \['epoch', 'step'\]"),
    (FusedSGD, {"schedule": schedules.ReduceLROnPlateau(), "schedule_interval": "step"}, ValueError,
     r"ReduceLROnPlateau needs a metric"),
    (FusedSGD, {"schedule": schedules.ReduceLROnPlateau(min_lr=[0.1, 0.2])}, ValueError,
     r"min_lr has 2 entries but the optimizer has 1 param groups"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_hyperparameters(ctor, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ctor(params(), **kwargs)


def test_torch_scheduler_object_is_refused_with_a_hint():
    opt = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(TypeError, match="its lrsched_fused.schedules twin"):
        FusedSGD(params(), schedule=torch.optim.lr_scheduler.StepLR(opt, 3))


@pytest.mark.parametrize("bad,exc,match", [
    ([], ValueError, "empty parameter list"),
    ([1.0], TypeError, r"params\[0\] must be a torch.Tensor"),
    ([torch.zeros(3, dtype=torch.int64)], TypeError, r"dtype torch.int64; accepted: float16, bfloat16"),
    ([torch.zeros(3, dtype=torch.complex64)], TypeError, r"is complex"),
    ([torch.zeros(4, 4)[:, 1]], ValueError, r"not a dense tensor"),
    ({torch.zeros(3)}, TypeError, r"not a set"),
])
def test_bad_params(bad, exc, match):
    with pytest.raises(exc, match=match):
        FusedAdam(bad)


def test_a_parameter_in_two_groups():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        FusedAdam([{"params": [p]}, {"params": [p]}])


def test_bad_group_override_is_refused_and_nothing_changes():
    opt = FusedAdam(params(), lr=0.1)
    before = opt.schedule_state.clone()
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\), got 2.0 \(param group 1\)"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "betas": (2.0, 0.9)})
    assert len(opt.param_groups) == 1
    assert torch.equal(opt.schedule_state, before)


@pytest.mark.parametrize("ctor,kwargs,exc,match", [
    (schedules.StepLR, {"step_size": 0}, ValueError, r"step_size must be an int >= 1, got 0"),
    (schedules.StepLR, {"step_size": 2.5}, TypeError, r"step_size must be an int >= 1, got 2.5"),
    (schedules.StepLR, {"step_size": 2, "gamma": -0.1}, ValueError, r"gamma must be .* >= 0.0, got -0.1"),
    (schedules.CosineAnnealingLR, {"T_max": 0}, ValueError, r"T_max must be an int >= 1, got 0"),
    (schedules.CosineAnnealingLR, {"T_max": 5, "eta_min": -1.0}, ValueError, r"eta_min must be"),
    (schedules.ReduceLROnPlateau, {"factor": 1.0}, ValueError, r"factor must be a finite real number >= 0.0 < 1.0, got 1.0"),
    (schedules.ReduceLROnPlateau, {"mode": "minimum"}, ValueError, r"mode must be one of \['min', 'max'\], got 'minimum'"),
    (schedules.ReduceLROnPlateau, {"threshold_mode": "relative"}, ValueError, r"threshold_mode must be one of"),
    (schedules.ReduceLROnPlateau, {"patience": -1}, ValueError, r"patience must be an int >= 0, got -1"),
    (schedules.ReduceLROnPlateau, {"cooldown": -2}, ValueError, r"cooldown must be an int >= 0, got -2"),
    (schedules.ReduceLROnPlateau, {"min_lr": -1e-3}, ValueError, r"min_lr must be"),
    (schedules.ReduceLROnPlateau, {"min_lr": [0.1, -0.1]}, ValueError, r"min_lr\[1\] must be"),
    (schedules.ReduceLROnPlateau, {"eps": -1.0}, ValueError, r"eps must be"),
    (schedules.ReduceLROnPlateau, {"threshold": math.inf}, ValueError, r"threshold must be"),
])
def test_bad_schedule_arguments(ctor, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ctor(**kwargs)


def plateau_optimizer():
    p = torch.randn(3, requires_grad=True)
    return FusedAdam([p], lr=0.1, schedule=schedules.ReduceLROnPlateau(patience=0)), p


@pytest.mark.parametrize("call,exc,match", [
    (lambda opt: opt.schedule_step(), TypeError, r"ReduceLROnPlateau needs a metric"),
    (lambda opt: opt.schedule_step(torch.ones(2)), ValueError, r"one-element tensor, got shape \(2,\)"),
    (lambda opt: opt.schedule_step("low"), TypeError, r"real number or a one-element tensor, got 'low'"),
    (lambda opt: opt.schedule_step(torch.tensor(True)), TypeError, r"real number, got a torch.bool tensor"),
    (lambda opt: opt.schedule_step(torch.tensor(1j)), TypeError, r"real number, got a torch.complex64 tensor"),
])
def test_wrong_metric_raises_before_anything_changes(call, exc, match):
    opt, _ = plateau_optimizer()
    before = opt.schedule_state.clone()
    with pytest.raises(exc, match=match):
        call(opt)
    assert torch.equal(opt.schedule_state, before)


def test_metric_for_a_schedule_without_one():
    opt = FusedAdam(params(), schedule=schedules.StepLR(2))
    before = opt.schedule_state.clone()
    with pytest.raises(TypeError, match=r"StepLR takes no metric, got 0.5"):
        opt.schedule_step(0.5)
    assert torch.equal(opt.schedule_state, before)


def test_schedule_step_with_step_interval_is_refused():
    opt = FusedAdam(params(), schedule=schedules.StepLR(2), schedule_interval="step")
    with pytest.raises(RuntimeError, match="would advance it twice"):
        opt.schedule_step()


def test_sparse_gradient_is_refused_before_any_group_changes():
    dense = torch.ones(3, requires_grad=True)
    sparse_p = torch.ones(4, requires_grad=True)
    opt = FusedAdam([{"params": [dense]}, {"params": [sparse_p]}], lr=0.1)
    dense.grad = torch.ones(3)
    sparse_p.grad = torch.ones(4).to_sparse()
    with pytest.raises(TypeError, match=r"params\[0\] of param group 1 has a sparse gradient"):
        opt.step()
    assert torch.equal(dense, torch.ones(3)) and len(opt.state) == 0


def test_mixed_devices_are_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to mix with the CPU")
    with pytest.raises(ValueError, match="several devices"):
        FusedAdam([torch.zeros(2, requires_grad=True), torch.zeros(2, device="cuda", requires_grad=True)])


def test_loading_a_state_dict_of_another_schedule_or_group_count():
    opt = FusedAdam(params(), schedule=schedules.StepLR(2))
    other = FusedAdam(params(), schedule=schedules.CosineAnnealingLR(5))
    with pytest.raises(ValueError, match=r"holds the schedule CosineAnnealingLR\(T_max=5, eta_min=0.0\)"):
        opt.load_state_dict(other.state_dict())
    two_groups = FusedAdam([{"params": params()}, {"params": params()}], schedule=schedules.StepLR(2))
    with pytest.raises(ValueError, match="the state_dict has 2 param groups, this optimizer 1"):
        opt.load_state_dict(two_groups.state_dict())


def test_a_bad_lr_assigned_by_hand_changes_nothing():
    opt = FusedSGD([{"params": params()}, {"params": params()}], lr=0.1)
    before = opt.schedule_state.clone()
    opt.param_groups[0]["lr"] = 0.05
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"lr must be a finite real number >= 0, got -1.0 \(param group 1\)"):
        opt.step()
    assert torch.equal(opt.schedule_state, before)
