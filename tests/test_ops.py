"""torch.library.opcheck on every op: schema (alias annotations), fake
implementation and dispatch agree with what the kernels do."""
import pytest
import torch

import lrsched_fused  # noqa: F401  (registers the ops)
from lrsched_fused import _C, schedules

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def schedule_state(device, num_groups=2, lr=0.1):
    values = [0.0] * _C.HEADER_SIZE
    values[_C.FIRST_LEAF + _C.PLATEAU_BEST] = float("inf")
    for _ in range(num_groups):
        slots = [0.0] * _C.GROUP_STRIDE
        slots[_C.GROUP_LR] = lr
        slots[_C.GROUP_BASE_LR] = lr
        values += slots
    return torch.tensor(values, dtype=torch.float64, device=device)


def tensors(shapes, dtype, device):
    return [torch.randn(s, dtype=dtype, device=device) for s in shapes]


SHAPES = [(3, 4), (0,), (300,), (5,)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,amsgrad,amp", [
    (torch.float32, False, False), (torch.float64, True, True), (torch.bfloat16, True, False),
    (torch.float16, False, True),
], ids=["fp32", "fp64-amsgrad-amp", "bf16-amsgrad", "fp16-amp"])
def test_adam_step_opcheck(device, dtype, amsgrad, amp):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    exp_avgs = [torch.zeros_like(p) for p in params]
    exp_avg_sqs = [torch.zeros_like(p) for p in params]
    max_exp_avg_sqs = [torch.zeros_like(p) for p in params] if amsgrad else []
    steps = [torch.zeros((), dtype=torch.float64, device=device) for _ in params]
    extra = (torch.tensor(4.0, device=device), torch.tensor(0.0, device=device)) if amp else (None, None)
    args = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, schedule_state(device), 1, 0.9, 0.999,
            0.01, 1e-8, amsgrad, False, True) + extra
    torch.library.opcheck(torch.ops.lrsched_fused.adam_step_.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_ops_with_clip_coef_opcheck(device, dtype):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    clip_coef = torch.tensor(0.5, dtype=dtype, device=device)
    states = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    steps = [torch.zeros((), dtype=torch.float64, device=device) for _ in params]
    torch.library.opcheck(torch.ops.lrsched_fused.adam_step_.default, (
        params, grads, *states, [], steps, schedule_state(device), 1, 0.9, 0.999, 0.0, 1e-8, False, False, True,
        None, None, False, clip_coef))
    torch.library.opcheck(torch.ops.lrsched_fused.sgd_step_.default, (
        params, grads, states[0], steps, schedule_state(device), 0, 0.9, 0.0, 0.0, False, False, None, None,
        False, clip_coef))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
def test_grad_norm_ops_opcheck(device, norm_type):
    grads = [torch.randn(3, 4, device=device), torch.randn(0, device=device),
             torch.randn(70000, device=device, dtype=torch.float64), torch.randn(9, device=device).to(torch.bfloat16),
             torch.randn(6, 5, device=device).t()]
    partial = torch.zeros((), dtype=torch.float64, device=device)
    for grad_scale in (None, torch.tensor(4.0, device=device)):
        torch.library.opcheck(torch.ops.lrsched_fused.grad_norm_partial_.default,
                              (grads, norm_type, grad_scale, partial))
    total, coef = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(2))
    torch.library.opcheck(torch.ops.lrsched_fused.clip_coefficient_.default, (partial, norm_type, 1.0, total, coef))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_opcheck(device, dtype, momentum):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    buffers = [torch.zeros_like(p) for p in params] if momentum else []
    steps = [torch.tensor(float(i % 2), dtype=torch.float64, device=device) for i in range(len(params))] if momentum else []
    args = (params, grads, buffers, steps, schedule_state(device), 0, momentum, 0.0, 1e-4, False, True, None, None)
    torch.library.opcheck(torch.ops.lrsched_fused.sgd_step_.default, args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_momentum_from_schedule_opcheck(device, optimizer):
    """The cycle_momentum path: beta1 / momentum read from the schedule state."""
    params = tensors(SHAPES, torch.float32, device)
    grads = tensors(SHAPES, torch.float32, device)
    state = schedule_state(device)
    state[_C.HEADER_SIZE + _C.GROUP_MOMENTUM::_C.GROUP_STRIDE] = 0.85
    if optimizer == "adam":
        args = (params, grads, [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params], [],
                [torch.zeros((), dtype=torch.float64, device=device) for _ in params], state, 1, 0.0, 0.999, 0.0,
                1e-8, False, False, False, None, None, True)
        torch.library.opcheck(torch.ops.lrsched_fused.adam_step_.default, args)
    else:
        args = (params, grads, [torch.zeros_like(p) for p in params],
                [torch.zeros((), dtype=torch.float64, device=device) for _ in params], state, 0, 0.0, 0.0,
                0.0, False, False, None, None, True)
        torch.library.opcheck(torch.ops.lrsched_fused.sgd_step_.default, args)


PROGRAMS = {  # one of every schedule kind, and the composites (NOTE: [schedule program])
    "Constant": schedules.Constant(),
    "StepLR": schedules.StepLR(2, 0.5),
    "MultiStepLR": schedules.MultiStepLR([1, 3, 3], 0.5),
    "ConstantLR": schedules.ConstantLR(),
    "LinearLR": schedules.LinearLR(),
    "ExponentialLR": schedules.ExponentialLR(0.9),
    "PolynomialLR": schedules.PolynomialLR(),
    "CosineAnnealingLR": schedules.CosineAnnealingLR(10),
    "CosineAnnealingWarmRestarts": schedules.CosineAnnealingWarmRestarts(2, 2),
    "OneCycleLR": schedules.OneCycleLR(0.1, 10),
    "CyclicLR": schedules.CyclicLR(0.01, 0.1),
    "ReduceLROnPlateau": schedules.ReduceLROnPlateau(),
    "SequentialLR": schedules.SequentialLR([schedules.LinearLR(), schedules.ReduceLROnPlateau()], [3]),
    "ChainedScheduler": schedules.ChainedScheduler([schedules.ConstantLR(), schedules.ExponentialLR(0.9)]),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(PROGRAMS))
@pytest.mark.parametrize("initial", [False, True])
def test_schedule_step_opcheck(device, name, initial):
    schedule = PROGRAMS[name]
    metric = torch.tensor(1.0, device=device) if schedule.requires_metric else None
    args = (schedule_state(device), schedule.program(), metric, torch.tensor(0.0, device=device), initial)
    torch.library.opcheck(torch.ops.lrsched_fused.schedule_step_.default, args)


def test_found_inf_leaves_everything_untouched():
    params = tensors(SHAPES, torch.float32, "cpu")
    grads = tensors(SHAPES, torch.float32, "cpu")
    state = [torch.rand_like(p) for p in params]
    before = [t.clone() for t in params + grads + state]
    steps = [torch.full((), 3.0, dtype=torch.float64) for _ in params]
    torch.ops.lrsched_fused.adam_step_(params, grads, state, [s.clone() for s in state], [], steps,
                                       schedule_state("cpu"), 0, 0.9, 0.999, 0.0, 1e-8, False, False, False,
                                       torch.tensor(2.0), torch.tensor(1.0))
    for a, b in zip(params + grads + state, before):
        assert torch.equal(a, b)
    assert all(float(s) == 3.0 for s in steps)


def test_op_boundary_checks():
    p = [torch.zeros(3)]
    with pytest.raises(RuntimeError, match=r"grads\[0\] must match its parameter"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(4)], [], [], schedule_state("cpu"), 0, 0.0, 0.0, 0.0,
                                          False, False, None, None)
    with pytest.raises(RuntimeError, match="group_index 5 is out of range"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], [], [], schedule_state("cpu"), 5, 0.0, 0.0, 0.0,
                                          False, False, None, None)
    with pytest.raises(RuntimeError, match="ReduceLROnPlateau needs a metric"):
        torch.ops.lrsched_fused.schedule_step_(schedule_state("cpu"), PROGRAMS["ReduceLROnPlateau"].program(),
                                               None, None)
    for bad, words in [([0.0], "combinator"), ([0.0, 2.0, 0.0, 0.0, 0.0, 0.0], "a single schedule has one leaf"),
                       ([1.0, 9.0], "num_leaves"), ([0.0, 1.0, 99.0, 0.0], "malformed"),
                       ([0.0, 1.0, float(_C.KIND_STEP), 1.0, 2.0], "takes 2 fields"),
                       (PROGRAMS["StepLR"].program() + [1.0], "values, expected"),
                       ([0.0, 1.0, float(_C.KIND_MULTI_STEP), 96.0] + [1.0] * 96,
                        f"100 values, more than the {_C.MAX_PROGRAM_SIZE}")]:
        before = schedule_state("cpu")
        state = before.clone()
        with pytest.raises(RuntimeError, match=words):
            torch.ops.lrsched_fused.schedule_step_(state, bad, None, None)
        assert torch.equal(state, before)
    partial = torch.zeros((), dtype=torch.float64)
    for grads, norm_type, words in [([torch.zeros(2, dtype=torch.int32)], 2.0, "must be float64, float32"),
                                    ([torch.zeros(2)], 0.0, "norm_type must be > 0")]:
        with pytest.raises(RuntimeError, match=words):
            torch.ops.lrsched_fused.grad_norm_partial_(grads, norm_type, None, partial)
    with pytest.raises(RuntimeError, match="partial must be a one-element float64"):
        torch.ops.lrsched_fused.grad_norm_partial_([torch.zeros(2)], 2.0, None, torch.zeros(()))
    with pytest.raises(RuntimeError, match="one floating dtype"):
        torch.ops.lrsched_fused.clip_coefficient_(partial, 2.0, 1.0, torch.zeros(()), torch.zeros((), dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=["e4m3fn", "e5m2"])
def test_float8_params_are_refused_at_the_op_boundary(device, dtype):
    """float8 is a floating type to torch (is_floating_point), but no kernel
    handles it: the op must refuse it up front, naming what it accepts, before
    any state (a step counter, a CUDA table) changes."""
    params = [torch.zeros(4, device=device).to(dtype)]
    steps = [torch.zeros((), dtype=torch.float64, device=device)]
    zeros = [torch.zeros(4, device=device).to(dtype)]
    accepted = "accepted: float16, bfloat16, float32, float64"
    with pytest.raises(RuntimeError, match=rf"params\[0\] has dtype Float8_\w+; {accepted}"):
        torch.ops.lrsched_fused.adam_step_(params, zeros, zeros, zeros, [], steps, schedule_state(device), 0, 0.9,
                                           0.999, 0.0, 1e-8, False, False, False)
    with pytest.raises(RuntimeError, match=rf"params\[0\] has dtype Float8_\w+; {accepted}"):
        torch.ops.lrsched_fused.sgd_step_(params, zeros, zeros, steps, schedule_state(device), 0, 0.9, 0.0, 0.0,
                                          False, False, None, None)
    assert float(steps[0]) == 0.0


@pytest.mark.parametrize("op", ["adam_step_", "sgd_step_"])
def test_update_ops_refuse_grad_mode_with_parameters_that_require_grad(op):
    """The update ops have their own Autograd kernel (csrc/no_autograd.cpp):
    no derivative, so a parameter that requires grad is refused unless grad
    mode is off, as in the optimizers' step(); nothing changes."""
    p = torch.zeros(3, requires_grad=True)
    args = {"adam_step_": ([p], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [],
                           [torch.zeros((), dtype=torch.float64)], schedule_state("cpu"), 0, 0.9, 0.999, 0.0, 1e-8,
                           False, False, False),
            "sgd_step_": ([p], [torch.ones(3)], [], [], schedule_state("cpu"), 0, 0.0, 0.0, 0.0, False, False)}[op]
    with pytest.raises(RuntimeError, match="has no derivative: call it under torch.no_grad"):
        getattr(torch.ops.lrsched_fused, op)(*args)
    assert torch.equal(p.detach(), torch.zeros(3))
    with torch.no_grad():
        getattr(torch.ops.lrsched_fused, op)(*args)
    assert not torch.equal(p.detach(), torch.zeros(3))
