"""Bad input raises ValueError/TypeError naming the argument, the value and
what is accepted, before anything changes: every case below snapshots the
parameters, their grads, the optimizer state, the param groups and the
schedule state, and checks they are untouched after the error."""
import copy
import math

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, schedules


def params():
    return [torch.randn(3, requires_grad=True)]


# ------------------------------------------------------------------ snapshots
def snapshot(opt, tensors):
    """Everything a failed call must leave as it was."""
    return {
        "params": [p.detach().clone() for p in tensors],
        "grads": [None if p.grad is None else p.grad.to_dense() for p in tensors],
        "state": [(id(p), {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()})
                  for p, s in opt.state.items()],
        # each group's lr lives in the schedule state
        "groups": [{k: ([id(p) for p in v] if k == "params" else v) for k, v in g.items() if k != "lr"}
                   for g in opt.param_groups],
        "schedule_state": opt.schedule_state.clone(),
        "schedule": copy.deepcopy(opt.schedule),
    }


def assert_same(before, after):
    assert after["schedule_state"].shape == before["schedule_state"].shape
    assert torch.equal(after["schedule_state"], before["schedule_state"])
    assert after["groups"] == before["groups"]
    assert after["schedule"] == before["schedule"]
    for a, b in zip(after["params"], before["params"]):
        assert torch.equal(a, b)
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert [i for i, _ in after["state"]] == [i for i, _ in before["state"]]
    for (_, a), (_, b) in zip(after["state"], before["state"]):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]


# ------------------------------------------------- constructor arguments
NAN = math.nan
BAD_CONSTRUCTOR_ARGUMENTS = [
    # (optimizer, kwargs, exception, message)
    (FusedAdam, {"lr": -1.0}, ValueError, r"lr must be .*>= 0, got -1.0"),
    (FusedAdam, {"lr": NAN}, ValueError, r"lr must be .*got nan"),
    (FusedAdam, {"lr": math.inf}, ValueError, r"lr must be a finite real number >= 0, got inf"),
    (FusedAdam, {"lr": "0.1"}, TypeError, r"lr must be a real number >= 0, got '0.1'"),
    (FusedAdam, {"lr": True}, TypeError, r"lr must be a real number >= 0, got True"),
    (FusedAdam, {"lr": torch.tensor([0.1, 0.2])}, ValueError, r"lr as a tensor must hold one real value, got shape \(2,\)"),
    (FusedAdam, {"eps": -1e-8}, ValueError, r"eps must be a real number >= 0, got -1e-08"),
    (FusedAdam, {"eps": NAN}, ValueError, r"eps must be a real number >= 0, got nan"),
    (FusedAdam, {"eps": "tiny"}, TypeError, r"eps must be a real number >= 0, got 'tiny'"),
    (FusedAdam, {"weight_decay": -0.1}, ValueError, r"weight_decay must be a real number >= 0, got -0.1"),
    (FusedAdamW, {"weight_decay": NAN}, ValueError, r"weight_decay must be a real number >= 0, got nan"),
    (FusedAdam, {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be in \[0, 1\), got 1.0"),
    (FusedAdam, {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be in \[0, 1\), got -0.1"),
    (FusedAdam, {"betas": (NAN, 0.9)}, ValueError, r"betas\[0\] must be in \[0, 1\), got nan"),
    (FusedAdamW, {"betas": (0.9, 1.5)}, ValueError, r"betas\[1\] must be in \[0, 1\), got 1.5"),
    (FusedAdam, {"betas": (0.9,)}, ValueError, r"betas must be a pair of numbers in \[0, 1\), got \(0.9,\)"),
    (FusedAdam, {"betas": (0.9, 0.99, 0.999)}, ValueError, r"betas must be a pair .*got \(0.9, 0.99, 0.999\)"),
    (FusedAdam, {"betas": 0.9}, TypeError, r"betas must be a pair of numbers in \[0, 1\), got 0.9"),
    (FusedAdam, {"betas": ("0.9", 0.99)}, TypeError, r"betas\[0\] must be a number in \[0, 1\), got '0.9'"),
    (FusedAdam, {"betas": (torch.tensor([0.9, 0.8]), 0.99)}, ValueError, r"betas\[0\] as a tensor must hold one"),
    (FusedAdam, {"amsgrad": "yes"}, TypeError, r"amsgrad must be a bool, got 'yes'"),
    (FusedAdam, {"maximize": 1}, TypeError, r"maximize must be a bool, got 1"),
    (FusedAdam, {"decoupled_weight_decay": None}, TypeError, r"decoupled_weight_decay must be a bool, got None"),
    (FusedSGD, {"lr": -0.1}, ValueError, r"lr must be a finite real number >= 0, got -0.1"),
    (FusedSGD, {"momentum": -0.5}, ValueError, r"momentum must be a real number >= 0, got -0.5"),
    (FusedSGD, {"momentum": NAN}, ValueError, r"momentum must be a real number >= 0, got nan"),
    (FusedSGD, {"dampening": NAN}, TypeError, r"dampening must be a real number, got nan"),
    (FusedSGD, {"weight_decay": -1}, ValueError, r"weight_decay must be a real number >= 0, got -1"),
    (FusedSGD, {"nesterov": True}, ValueError, r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0"),
    (FusedSGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.1"),
    (FusedSGD, {"nesterov": "yes", "momentum": 0.9}, TypeError, r"nesterov must be a bool, got 'yes'"),
    (FusedSGD, {"schedule": "cosine"}, TypeError, r"schedule must be None or an lrsched_fused.schedules .*got 'cosine'"),
    (FusedSGD, {"schedule": schedules.StepLR}, TypeError, r"schedule must be None or an lrsched_fused.schedules"),
    (FusedSGD, {"schedule_interval": "batch"}, ValueError, r"schedule_interval must be one of \['epoch', 'step'\], got 'batch'"),
    (FusedSGD, {"schedule_interval": None}, ValueError, r"schedule_interval must be one of \['epoch', 'step'\], got None"),
    (FusedSGD, {"schedule": schedules.ReduceLROnPlateau(), "schedule_interval": "step"}, ValueError,
     r"ReduceLROnPlateau needs a metric, so it cannot advance inside step\(\)"),
    (FusedSGD, {"skip_schedule_on_overflow": "no"}, TypeError, r"skip_schedule_on_overflow must be a bool, got 'no'"),
    (FusedSGD, {"schedule": schedules.ReduceLROnPlateau(min_lr=[0.1, 0.2])}, ValueError,
     r"min_lr has 2 entries but the optimizer has 1 param groups"),
]


@pytest.mark.parametrize("ctor,kwargs,exc,match", BAD_CONSTRUCTOR_ARGUMENTS,
                         ids=[f"{c.__name__}-{m.split(' must')[0].split(' ')[0]}-{i}"
                              for i, (c, _, _, m) in enumerate(BAD_CONSTRUCTOR_ARGUMENTS)])
def test_bad_constructor_argument(ctor, kwargs, exc, match):
    ps = params()
    before = [p.detach().clone() for p in ps]
    with pytest.raises(exc, match=match):
        ctor(ps, **kwargs)
    assert all(torch.equal(p, b) for p, b in zip(ps, before)) and ps[0].grad is None


def test_torch_scheduler_object_is_refused_with_a_hint():
    opt = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(TypeError, match="its lrsched_fused.schedules twin"):
        FusedSGD(params(), schedule=torch.optim.lr_scheduler.StepLR(opt, 3))


def _two_groups_sharing_a_param():
    p = torch.zeros(3, requires_grad=True)
    return [{"params": [p]}, {"params": [p]}]


def _one_group_with_a_param_twice():
    p = torch.zeros(3, requires_grad=True)
    return [p, p]


BAD_PARAMS = {
    "empty list": (lambda: [], ValueError, "empty parameter list"),
    "None": (lambda: None, TypeError, r"params must be an iterable of Tensors or of param-group dicts, got NoneType"),
    "a bare tensor": (lambda: torch.zeros(3, requires_grad=True), TypeError,
                      r"params must be an iterable of Tensors or of param-group dicts, got Tensor"),
    "a float": (lambda: [1.0], TypeError, r"params\[0\] must be a torch.Tensor, got float"),
    "int64": (lambda: [torch.zeros(3, dtype=torch.int64)], TypeError,
              r"params\[0\] has dtype torch.int64; accepted: float16, bfloat16, float32, float64"),
    "bool": (lambda: [torch.zeros(3, dtype=torch.bool)], TypeError, r"params\[0\] has dtype torch.bool"),
    "complex": (lambda: [torch.zeros(3, dtype=torch.complex64)], TypeError,
                r"params\[0\] is complex \(torch.complex64\); accepted: .*torch.view_as_real"),
    "strided view": (lambda: [torch.zeros(4, 4)[:, 1]], ValueError, r"params\[0\] is not a dense tensor"),
    "sparse": (lambda: [torch.zeros(3).to_sparse()], ValueError, r"params\[0\] is not a dense tensor"),
    "a set": (lambda: {torch.zeros(3)}, TypeError, r"not a set"),
    "non-leaf": (lambda: [torch.zeros(3, requires_grad=True) * 2], ValueError, "can't optimize a non-leaf Tensor"),
    "one param in two groups": (_two_groups_sharing_a_param, ValueError,
                                r"params\[0\] \(shape \(3,\)\) is already in param group 0; accepted: each "
                                r"parameter once"),
    "one param twice in a group": (_one_group_with_a_param_twice, ValueError,
                                   r"params\[1\] \(shape \(3,\)\) is already in this group \(params\[0\]\)"),
    "a bad group lr": (lambda: [{"params": params()}, {"params": params(), "lr": -2.0}], ValueError,
                       r"lr must be a finite real number >= 0, got -2.0 \(param group 1\)"),
}


@pytest.mark.parametrize("name", list(BAD_PARAMS))
def test_bad_params(name):
    make, exc, match = BAD_PARAMS[name]
    with pytest.raises(exc, match=match):
        FusedAdam(make())


# ---------------------------------------------------- schedule arguments
BAD_SCHEDULE_ARGUMENTS = [
    (schedules.StepLR, {"step_size": 0}, ValueError, r"step_size must be an int >= 1, got 0"),
    (schedules.StepLR, {"step_size": -3}, ValueError, r"step_size must be an int >= 1, got -3"),
    (schedules.StepLR, {"step_size": 2.5}, TypeError, r"step_size must be an int >= 1, got 2.5 \(float\)"),
    (schedules.StepLR, {"step_size": 2.0}, TypeError, r"step_size must be an int >= 1, got 2.0 \(float\)"),
    (schedules.StepLR, {"step_size": True}, TypeError, r"step_size must be an int >= 1, got True \(bool\)"),
    (schedules.StepLR, {"step_size": "3"}, TypeError, r"step_size must be an int >= 1, got '3' \(str\)"),
    (schedules.StepLR, {"step_size": 2, "gamma": -0.1}, ValueError, r"gamma must be .* >= 0.0, got -0.1"),
    (schedules.StepLR, {"step_size": 2, "gamma": NAN}, ValueError, r"gamma must be a finite real number >= 0.0, got nan"),
    (schedules.StepLR, {"step_size": 2, "gamma": math.inf}, ValueError, r"gamma must be .*, got inf"),
    (schedules.CosineAnnealingLR, {"T_max": 0}, ValueError, r"T_max must be an int >= 1, got 0"),
    (schedules.CosineAnnealingLR, {"T_max": -5}, ValueError, r"T_max must be an int >= 1, got -5"),
    (schedules.CosineAnnealingLR, {"T_max": 10.0}, TypeError, r"T_max must be an int >= 1, got 10.0 \(float\)"),
    (schedules.CosineAnnealingLR, {"T_max": 5, "eta_min": -1.0}, ValueError, r"eta_min must be .* >= 0.0, got -1.0"),
    (schedules.CosineAnnealingLR, {"T_max": 5, "eta_min": NAN}, ValueError, r"eta_min must be .*, got nan"),
    (schedules.ReduceLROnPlateau, {"factor": 1.0}, ValueError, r"factor must be a finite real number >= 0.0 < 1.0, got 1.0"),
    (schedules.ReduceLROnPlateau, {"factor": 2.0}, ValueError, r"factor must be .* < 1.0, got 2.0"),
    (schedules.ReduceLROnPlateau, {"factor": -0.1}, ValueError, r"factor must be .* >= 0.0 < 1.0, got -0.1"),
    (schedules.ReduceLROnPlateau, {"factor": NAN}, ValueError, r"factor must be .*, got nan"),
    (schedules.ReduceLROnPlateau, {"mode": "minimum"}, ValueError, r"mode must be one of \['min', 'max'\], got 'minimum'"),
    (schedules.ReduceLROnPlateau, {"mode": None}, ValueError, r"mode must be one of \['min', 'max'\], got None"),
    (schedules.ReduceLROnPlateau, {"threshold_mode": "relative"}, ValueError,
     r"threshold_mode must be one of \['rel', 'abs'\], got 'relative'"),
    (schedules.ReduceLROnPlateau, {"patience": -1}, ValueError, r"patience must be an int >= 0, got -1"),
    (schedules.ReduceLROnPlateau, {"patience": 1.5}, TypeError, r"patience must be an int >= 0, got 1.5"),
    (schedules.ReduceLROnPlateau, {"cooldown": -2}, ValueError, r"cooldown must be an int >= 0, got -2"),
    (schedules.ReduceLROnPlateau, {"cooldown": "2"}, TypeError, r"cooldown must be an int >= 0, got '2'"),
    (schedules.ReduceLROnPlateau, {"min_lr": -1e-3}, ValueError, r"min_lr must be .* >= 0.0, got -0.001"),
    (schedules.ReduceLROnPlateau, {"min_lr": NAN}, ValueError, r"min_lr must be .*, got nan"),
    (schedules.ReduceLROnPlateau, {"min_lr": "0"}, TypeError, r"min_lr must be .*, got '0'"),
    (schedules.ReduceLROnPlateau, {"min_lr": [0.1, -0.1]}, ValueError, r"min_lr\[1\] must be .* >= 0.0, got -0.1"),
    (schedules.ReduceLROnPlateau, {"eps": -1.0}, ValueError, r"eps must be .* >= 0.0, got -1.0"),
    (schedules.ReduceLROnPlateau, {"threshold": math.inf}, ValueError, r"threshold must be .*, got inf"),
    (schedules.ReduceLROnPlateau, {"threshold": -0.1}, ValueError, r"threshold must be .* >= 0.0, got -0.1"),
]


@pytest.mark.parametrize("ctor,kwargs,exc,match", BAD_SCHEDULE_ARGUMENTS,
                         ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, k, _, _) in enumerate(BAD_SCHEDULE_ARGUMENTS)])
def test_bad_schedule_argument(ctor, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ctor(**kwargs)


# ----------------------------------------- calls on a trained optimizer
def trained(kind="adam", schedule=None, interval="epoch"):
    """An optimizer with two groups after two steps and one schedule step,
    its parameters (grads set) and a spare parameter."""
    torch.manual_seed(0)
    ps = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    schedule = schedule if schedule is not None else schedules.ReduceLROnPlateau(patience=0, cooldown=1)
    ctor = {"adam": lambda g: FusedAdam(g, lr=0.1, amsgrad=True, schedule=schedule, schedule_interval=interval),
            "sgd": lambda g: FusedSGD(g, lr=0.1, momentum=0.9, schedule=schedule, schedule_interval=interval)}[kind]
    opt = ctor([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.05}])
    for metric in (1.0, 2.0):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
        if interval == "epoch":
            opt.schedule_step(torch.tensor(metric)) if schedule.requires_metric else opt.schedule_step()
    return opt, ps


def _other(opt, **kwargs):
    """A state_dict of another optimizer over like-shaped parameters."""
    ps = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    groups = kwargs.pop("groups", [{"params": [ps[0]]}, {"params": [ps[1]]}])
    other = FusedAdam(groups, lr=0.1, amsgrad=True, **kwargs)
    for p in ps:
        p.grad = torch.ones_like(p)
    other.step()
    return other.state_dict()


def _with_state(opt, key, value):
    state_dict = opt.state_dict()
    state_dict["state"][1] = {**state_dict["state"][1], key: value}  # the packed dict is the optimizer's own
    return state_dict


HAND_EDITS = []


def _assign(opt, group, key, value):
    """A hand edit of a group; recorded so the test can undo it: it is the
    caller's change, not the optimizer's."""
    HAND_EDITS.append((group, key, opt.param_groups[group][key]))
    opt.param_groups[group][key] = value


def _set_sparse_grad(opt, ps):
    ps[1].grad = torch.ones(5).to_sparse()


PLATEAU = schedules.ReduceLROnPlateau(patience=0, cooldown=1)
BAD_CALLS = {
    # name: (optimizer kind, schedule or None (plateau), call(opt, params) or (prepare, call), exception, message)
    "add_param_group: not a dict": (
        "adam", None, lambda o, ps: o.add_param_group([torch.zeros(2)]), TypeError, r"a param group must be a dict, got list"),
    "add_param_group: no params": (
        "adam", None, lambda o, ps: o.add_param_group({"lr": 0.1}), TypeError,
        r"params must be an iterable of Tensors, got None \(param group 2\)"),
    "add_param_group: bad betas": (
        "adam", None, lambda o, ps: o.add_param_group({"params": [torch.zeros(2)], "betas": (2.0, 0.9)}), ValueError,
        r"betas\[0\] must be in \[0, 1\), got 2.0 \(param group 2\)"),
    "add_param_group: bad lr": (
        "sgd", None, lambda o, ps: o.add_param_group({"params": [torch.zeros(2)], "lr": NAN}), ValueError,
        r"lr must be a finite real number >= 0, got nan \(param group 2\)"),
    "add_param_group: bad momentum": (
        "sgd", None, lambda o, ps: o.add_param_group({"params": [torch.zeros(2)], "momentum": -1.0}), ValueError,
        r"momentum must be a real number >= 0, got -1.0 \(param group 2\)"),
    "add_param_group: param already in a group": (
        "adam", None, lambda o, ps: o.add_param_group({"params": [ps[1]]}), ValueError,
        r"params\[0\] \(shape \(5,\)\) is already in param group 1"),
    "add_param_group: integer param": (
        "adam", None, lambda o, ps: o.add_param_group({"params": [torch.zeros(2, dtype=torch.int32)]}), TypeError,
        r"params\[0\] has dtype torch.int32; accepted: float16, bfloat16, float32, float64 \(param group 2\)"),
    "add_param_group: complex param": (
        "adam", None, lambda o, ps: o.add_param_group({"params": [torch.zeros(2, dtype=torch.complex128)]}), TypeError,
        r"params\[0\] is complex \(torch.complex128\)"),
    "add_param_group: a per-group min_lr list cannot grow": (
        "adam", schedules.ReduceLROnPlateau(min_lr=[0.0, 1e-3]),
        lambda o, ps: o.add_param_group({"params": [torch.zeros(2)]}), ValueError,
        r"per-group lists \(min_lr\), which cannot grow"),
    "schedule_step: metric missing": (
        "adam", None, lambda o, ps: o.schedule_step(), TypeError, r"ReduceLROnPlateau needs a metric"),
    "schedule_step: metric not scalar": (
        "adam", None, lambda o, ps: o.schedule_step(torch.ones(2)), ValueError,
        r"the metric must be a one-element tensor, got shape \(2,\)"),
    "schedule_step: metric a string": (
        "sgd", None, lambda o, ps: o.schedule_step("low"), TypeError,
        r"the metric must be a real number or a one-element tensor, got 'low'"),
    "schedule_step: metric a list": (
        "sgd", None, lambda o, ps: o.schedule_step([0.5]), TypeError,
        r"the metric must be a real number or a one-element tensor, got \[0.5\]"),
    "schedule_step: metric a Python bool": (
        "adam", None, lambda o, ps: o.schedule_step(True), TypeError,
        r"the metric must be a real number or a one-element tensor, got True"),
    "schedule_step: metric a bool tensor": (
        "adam", None, lambda o, ps: o.schedule_step(torch.tensor(True)), TypeError,
        r"the metric must be a real number, got a torch.bool tensor"),
    "schedule_step: metric a complex tensor": (
        "adam", None, lambda o, ps: o.schedule_step(torch.tensor(1j)), TypeError,
        r"the metric must be a real number, got a torch.complex64 tensor"),
    "schedule_step: metric for StepLR": (
        "adam", schedules.StepLR(2), lambda o, ps: o.schedule_step(0.5), TypeError,
        r"StepLR takes no metric, got 0.5; call schedule_step\(\)"),
    "schedule_step: metric for CosineAnnealingLR": (
        "sgd", schedules.CosineAnnealingLR(3), lambda o, ps: o.schedule_step(torch.tensor(0.5)), TypeError,
        r"CosineAnnealingLR takes no metric"),
    "schedule_step: with schedule_interval='step'": (
        "adam", schedules.StepLR(2), None, RuntimeError, r"would advance it twice"),
    "schedule_step: a bad lr assigned by hand": (
        "sgd", None, lambda o, ps: (_assign(o, 0, "lr", 0.01), _assign(o, 1, "lr", -1.0), o.schedule_step(1.0)),
        ValueError, r"lr must be a finite real number >= 0, got -1.0 \(param group 1\)"),
    "step: a closure that is not callable": (
        "sgd", None, lambda o, ps: o.step(0.5), TypeError, r"step\(\) takes a callable closure or None, got 0.5"),
    "step: sparse gradient": (
        "adam", None, (_set_sparse_grad, lambda o, ps: o.step()), TypeError,
        r"params\[0\] of param group 1 has a sparse gradient; accepted: dense gradients"),
    "step: a bad lr assigned by hand": (
        "adam", None, lambda o, ps: (_assign(o, 0, "lr", 0.01), _assign(o, 1, "lr", "x"), o.step()), TypeError,
        r"lr must be a real number >= 0, got 'x' \(param group 1\)"),
    "step: an lr tensor of two values assigned by hand": (
        "adam", None, lambda o, ps: (_assign(o, 1, "lr", torch.ones(2)), o.step()), ValueError,
        r"lr as a tensor must hold one real value, got shape \(2,\) \(param group 1\)"),
    "step: bad betas assigned by hand": (
        "adam", None, lambda o, ps: (_assign(o, 1, "betas", (0.9, 1.0)), o.step()), ValueError,
        r"betas\[1\] must be in \[0, 1\), got 1.0 \(param group 1\)"),
    "step: negative weight_decay assigned by hand": (
        "sgd", None, lambda o, ps: (_assign(o, 1, "weight_decay", -0.5), o.step()), ValueError,
        r"weight_decay must be a real number >= 0, got -0.5 \(param group 1\)"),
    "step: nesterov with dampening assigned by hand": (
        "sgd", None, lambda o, ps: (_assign(o, 0, "nesterov", True), _assign(o, 0, "dampening", 0.5), o.step()),
        ValueError, r"nesterov=True requires momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.5 "
                    r"\(param group 0\)"),
    "load_state_dict: not a dict": (
        "adam", None, lambda o, ps: o.load_state_dict([1, 2]), TypeError,
        r"load_state_dict takes the dict state_dict\(\) returns, got list"),
    "load_state_dict: another schedule": (
        "adam", None, lambda o, ps: o.load_state_dict(_other(o, schedule=schedules.CosineAnnealingLR(5))), ValueError,
        r"the state_dict holds the schedule CosineAnnealingLR\(T_max=5, eta_min=0.0\), this optimizer has "
        r"ReduceLROnPlateau\("),
    "load_state_dict: the schedule with other arguments": (
        "adam", schedules.StepLR(2), lambda o, ps: o.load_state_dict(_other(o, schedule=schedules.StepLR(3))),
        ValueError, r"holds the schedule StepLR\(step_size=3, gamma=0.1\), this optimizer has StepLR\(step_size=2"),
    "load_state_dict: another schedule interval": (
        "adam", schedules.StepLR(2),
        lambda o, ps: o.load_state_dict(_other(o, schedule=schedules.StepLR(2), schedule_interval="step")),
        ValueError, r"the state_dict's schedule advances per 'step', this optimizer's per 'epoch'"),
    "load_state_dict: another group count": (
        "adam", None, lambda o, ps: o.load_state_dict(
            _other(o, schedule=PLATEAU, groups=[torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)])),
        ValueError, r"the state_dict has 1 param groups, this optimizer 2"),
    "load_state_dict: another parameter count in a group": (
        "adam", None, lambda o, ps: o.load_state_dict(_other(o, schedule=PLATEAU, groups=[
            {"params": [torch.randn(4, 3, requires_grad=True)]},
            {"params": [torch.randn(5, requires_grad=True), torch.randn(1, requires_grad=True)]}])),
        ValueError, r"doesn't match the size of optimizer's group"),
    "load_state_dict: a state tensor of another shape": (
        "adam", None, lambda o, ps: o.load_state_dict(_with_state(o, "exp_avg", torch.zeros(7))), ValueError,
        r"the state_dict's exp_avg of parameter 1 has shape \(7,\), the parameter \(5,\)"),
    "load_state_dict: a step that is not a number": (
        "adam", None, lambda o, ps: o.load_state_dict(_with_state(o, "step", "three")), ValueError,
        r"the state_dict's step of parameter 1 is 'three'; accepted: a number or a one-element tensor"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_call_raises_and_changes_nothing(name):
    kind, schedule, call, exc, match = BAD_CALLS[name]
    interval = "step" if call is None else "epoch"
    opt, ps = trained(kind, schedule, interval)
    if call is None:
        call = lambda o, _: o.schedule_step()  # noqa: E731
    if isinstance(call, tuple):
        prepare, call = call
        prepare(opt, ps)
    before = snapshot(opt, ps)
    HAND_EDITS.clear()
    with pytest.raises(exc, match=match):
        call(opt, ps)
    for group, key, value in reversed(HAND_EDITS):
        opt.param_groups[group][key] = value
    assert_same(before, snapshot(opt, ps))


def test_the_snapshot_sees_a_change():
    opt, ps = trained()
    before = snapshot(opt, ps)
    opt.schedule_step(5.0)  # a bad epoch: only the plateau counters move
    with pytest.raises(AssertionError):
        assert_same(before, snapshot(opt, ps))


def test_mixed_devices_are_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to mix with the CPU")
    with pytest.raises(ValueError, match="several devices"):
        FusedAdam([torch.zeros(2, requires_grad=True), torch.zeros(2, device="cuda", requires_grad=True)])
