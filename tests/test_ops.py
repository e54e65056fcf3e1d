"""torch.library.opcheck on every op: schema (alias annotations), fake
implementation and dispatch agree with what the kernels do."""
import pytest
import torch

import lrsched_fused  # noqa: F401  (registers the ops)
from lrsched_fused import _C, _ops, schedules

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def schedule_state(device, num_groups=2, lr=0.1, **hyperparameters):
    """A state tensor whose group blocks hold ``lr`` and ``hyperparameters``
    (``beta1=0.9`` -> the GROUP_MOMENTUM slot, ``beta2=...`` -> GROUP_BETA2, ...)."""
    values = [0.0] * _C.HEADER_SIZE
    values[_C.FIRST_LEAF + _C.PLATEAU_BEST] = float("inf")
    slot_of = {"beta1": _C.GROUP_MOMENTUM, "momentum": _C.GROUP_MOMENTUM, "beta2": _C.GROUP_BETA2,
               "eps": _C.GROUP_EPS, "weight_decay": _C.GROUP_WEIGHT_DECAY, "dampening": _C.GROUP_DAMPENING}
    for _ in range(num_groups):
        slots = [0.0] * _C.GROUP_STRIDE
        slots[_C.GROUP_LR] = lr
        slots[_C.GROUP_BASE_LR] = lr
        for name, value in hyperparameters.items():
            slots[slot_of[name]] = value
        values += slots
    return torch.tensor(values, dtype=torch.float64, device=device)


ADAM_VALUES = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)


def tensors(shapes, dtype, device):
    return [torch.randn(s, dtype=dtype, device=device) for s in shapes]


SHAPES = [(3, 4), (0,), (300,), (5,)]


def update_args(op, params, grads, state, group_index, amp=False, clip_coef=None, **flags):
    """The arguments of update op ``op`` for params/grads, its states made by
    name (zeros; step counters 0; masters from the params) for ``flags``."""
    bits = _C.UPDATE_OPS[op]["flags"]
    flags = {name: flags.get(name, False) for name in bits}
    flag_bits = _ops.update_flags(op, **flags)
    master = flags["master_weights"]
    states = []
    for name in _ops.state_names(op, flag_bits):
        if name == "step":
            states += [torch.zeros((), dtype=torch.float64, device=p.device) for p in params]
        elif name == "master_param":
            states += [p.float() for p in params]
        else:
            states += [torch.zeros_like(p, dtype=torch.float32 if master else p.dtype) for p in params]
    device = params[0].device if params else state.device
    amp_tensors = (torch.tensor(4.0, device=device), torch.tensor(0.0, device=device)) if amp else (None, None)
    return (params, grads, states, state, group_index, flag_bits) + amp_tensors + (clip_coef,)


def update_op(op):
    return getattr(torch.ops.lrsched_fused, op).default


def test_update_op_declarations():
    """_C.UPDATE_OPS (csrc/update_ops.h) names each op's flag bits and state
    slots; every op of the declaration is registered, with the one shared schema."""
    assert set(_C.UPDATE_OPS) == {"adam_step_", "sgd_step_", "lion_step_"}
    for name, declaration in _C.UPDATE_OPS.items():
        bits = sorted(declaration["flags"].values())
        assert bits == [1 << i for i in range(len(bits))]
        assert "maximize" in declaration["flags"] and "master_weights" in declaration["flags"]
        for slot, needs in declaration["states"]:
            assert needs & ~sum(bits) == 0, (name, slot)  # some of the op's flags (any of them: present)
        schema = str(update_op(name)._schema)
        assert "float" not in schema, schema  # NOTE: [hyperparameters on the device]
        assert schema.endswith("(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, "
                               "Tensor schedule_state, int group_index, int flags, Tensor? grad_scale=None, "
                               "Tensor? found_inf=None, Tensor? clip_coef=None, int[] element_offsets=[]) -> ()"), schema
    assert _ops.state_names("adam_step_", _ops.update_flags(
        "adam_step_", amsgrad=True, decoupled_weight_decay=False, maximize=False, master_weights=True,
        stochastic_rounding=False, states_8bit=False)) == [
        "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step", "master_param"]
    adam_8bit = _C.UPDATE_OPS["adam_step_"]["flags"]["states_8bit"]
    assert _ops.state_names("adam_step_", adam_8bit) == [
        "exp_avg", "exp_avg_sq", "step", "exp_avg_absmax", "exp_avg_sq_absmax"]
    assert _C.UPDATE_OPS["adam_step_"]["coded"] == {
        "exp_avg": "signed", "exp_avg_sq": "unsigned", "max_exp_avg_sq": "unsigned",
        "exp_avg_absmax": "exp_avg", "exp_avg_sq_absmax": "exp_avg_sq"}
    assert _ops.state_names("sgd_step_", 0) == []
    assert _ops.state_names("sgd_step_", _C.UPDATE_OPS["sgd_step_"]["flags"]["stochastic_rounding"]) == ["step"]
    assert _ops.state_names("lion_step_", 0) == ["exp_avg"]
    lion_flags = _C.UPDATE_OPS["lion_step_"]["flags"]
    assert _ops.state_names("lion_step_", lion_flags["stochastic_rounding"] | lion_flags["master_weights"]) == [
        "exp_avg", "step", "master_param"]
    with pytest.raises(TypeError, match="its flags are"):
        _ops.update_flags("sgd_step_", momentum=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,amsgrad,amp", [
    (torch.float32, False, False), (torch.float64, True, True), (torch.bfloat16, True, False),
    (torch.float16, False, True),
], ids=["fp32", "fp64-amsgrad-amp", "bf16-amsgrad", "fp16-amp"])
def test_adam_step_opcheck(device, dtype, amsgrad, amp):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    args = update_args("adam_step_", params, grads, schedule_state(device, **ADAM_VALUES), 1, amp=amp,
                       amsgrad=amsgrad, decoupled_weight_decay=True)
    torch.library.opcheck(update_op("adam_step_"), args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["adam_step_", "sgd_step_"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_update_ops_with_master_weights_opcheck(device, op, dtype):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    state = schedule_state(device, **(ADAM_VALUES if op == "adam_step_" else {"momentum": 0.9}))
    flags = {"amsgrad": True} if op == "adam_step_" else {"momentum": True}
    args = update_args(op, params, grads, state, 0, amp=True, master_weights=True, **flags)
    torch.library.opcheck(update_op(op), args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_ops_with_clip_coef_opcheck(device, dtype):
    params = tensors(SHAPES, dtype, device)
    grads = tensors(SHAPES, dtype, device)
    clip_coef = torch.tensor(0.5, dtype=dtype, device=device)
    torch.library.opcheck(update_op("adam_step_"), update_args(
        "adam_step_", params, grads, schedule_state(device, **ADAM_VALUES), 1, clip_coef=clip_coef,
        decoupled_weight_decay=True))
    torch.library.opcheck(update_op("sgd_step_"), update_args(
        "sgd_step_", params, grads, schedule_state(device, momentum=0.9), 0, clip_coef=clip_coef, momentum=True))


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
    args = update_args("sgd_step_", params, grads, schedule_state(device, momentum=momentum, weight_decay=1e-4), 0,
                       momentum=momentum != 0, maximize=True)
    if momentum:  # one buffer with history, one without
        for i, step in enumerate(args[2][len(params):]):
            step.fill_(float(i % 2))
    torch.library.opcheck(update_op("sgd_step_"), args)


@pytest.mark.parametrize("op", ["adam_step_", "sgd_step_"])
@pytest.mark.parametrize("key", ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum", "dampening"])
def test_update_ops_read_every_hyperparameter_from_the_group_block(op, key):
    """NOTE: [hyperparameters on the device]: each value a kernel reads comes
    from the group's block; editing only that slot changes the update exactly
    as torch's optimizer with that value does."""
    adam = op == "adam_step_"
    if key in (("momentum", "dampening") if adam else ("beta1", "beta2", "eps")):
        pytest.skip(f"{op} reads no {key}")
    base = dict(ADAM_VALUES) if adam else dict(momentum=0.9, dampening=0.1, weight_decay=0.01)
    edited = dict(base, **{key: {"lr": 0.03, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.2,
                                 "momentum": 0.5, "dampening": 0.3}[key]})
    lr = edited.pop("lr", 0.1)
    torch.manual_seed(0)
    p0, grads = torch.randn(2, 50, dtype=torch.float64).unbind()
    ours = p0.clone()
    flags = {"decoupled_weight_decay": False} if adam else {"momentum": True}
    args = update_args(op, [ours], [grads.clone()], schedule_state("cpu", num_groups=3, lr=0.1, **base), 2, **flags)
    state = args[3]
    block = state[_C.HEADER_SIZE + 2 * _C.GROUP_STRIDE:]
    block.copy_(schedule_state("cpu", num_groups=1, lr=lr, **edited)[_C.HEADER_SIZE:])
    reference = p0.clone().requires_grad_()
    if adam:
        torch_opt = torch.optim.Adam([reference], lr=lr, betas=(edited["beta1"], edited["beta2"]), eps=edited["eps"],
                                     weight_decay=edited["weight_decay"])
    else:
        torch_opt = torch.optim.SGD([reference], lr=lr, momentum=edited["momentum"], dampening=edited["dampening"],
                                    weight_decay=edited["weight_decay"])
    for _ in range(3):
        update_op(op)(*args)
        reference.grad = grads.clone()
        torch_opt.step()
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-14, atol=0)


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
    update_op("adam_step_")(params, grads, state + [s.clone() for s in state] + steps,
                            schedule_state("cpu", **ADAM_VALUES), 0, 0, torch.tensor(2.0), torch.tensor(1.0))
    for a, b in zip(params + grads + state, before):
        assert torch.equal(a, b)
    assert all(float(s) == 3.0 for s in steps)


def test_op_boundary_checks():
    p = [torch.zeros(3)]
    with pytest.raises(RuntimeError, match=r"grads\[0\] must match its parameter"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(4)], [], schedule_state("cpu"), 0, 0)
    with pytest.raises(RuntimeError, match="group_index 5 is out of range"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], [], schedule_state("cpu"), 5, 0)
    with pytest.raises(RuntimeError, match="flags 64 has bits no flag names"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], [], schedule_state("cpu"), 0, 64)
    sr = _C.UPDATE_OPS["sgd_step_"]["flags"]["stochastic_rounding"]
    step = [torch.zeros((), dtype=torch.float64)]
    with pytest.raises(RuntimeError, match=r"element_offsets has 0 values, expected 1 \(one per param"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], step, schedule_state("cpu"), 0, sr)
    with pytest.raises(RuntimeError, match=r"element_offsets has 1 values, expected 0 \(it is for stochastic"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], [], schedule_state("cpu"), 0, 0, None, None, None, [0])
    with pytest.raises(RuntimeError, match=r"element_offsets\[0\] is -1"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], step, schedule_state("cpu"), 0, sr, None, None, None,
                                          [-1])
    with pytest.raises(RuntimeError, match="states of dtype Double are not taken"):
        torch.ops.lrsched_fused.sgd_step_([torch.zeros(3)], [torch.zeros(3)],
                                          [torch.zeros(3, dtype=torch.float64)] + step, schedule_state("cpu"), 0, 1)
    with pytest.raises(RuntimeError, match=r"states has 1 tensors, expected 2 \(1 per present slot\)"):
        torch.ops.lrsched_fused.sgd_step_(p, [torch.zeros(3)], [torch.zeros(3)], schedule_state("cpu"), 0, 1)
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
        torch.ops.lrsched_fused.adam_step_(params, zeros, zeros + zeros + steps, schedule_state(device), 0, 0)
    with pytest.raises(RuntimeError, match=rf"params\[0\] has dtype Float8_\w+; {accepted}"):
        torch.ops.lrsched_fused.sgd_step_(params, zeros, zeros + steps, schedule_state(device), 0, 1)
    assert float(steps[0]) == 0.0


@pytest.mark.parametrize("op", ["adam_step_", "sgd_step_"])
def test_update_ops_refuse_grad_mode_with_parameters_that_require_grad(op):
    """The update ops have their own Autograd kernel (csrc/no_autograd.cpp):
    no derivative, so a parameter that requires grad is refused unless grad
    mode is off, as in the optimizers' step(); nothing changes."""
    p = torch.zeros(3, requires_grad=True)
    args = {"adam_step_": ([p], [torch.ones(3)], [torch.zeros(3), torch.zeros(3), torch.zeros((), dtype=torch.float64)],
                           schedule_state("cpu", **ADAM_VALUES), 0, 0),
            "sgd_step_": ([p], [torch.ones(3)], [], schedule_state("cpu"), 0, 0)}[op]
    with pytest.raises(RuntimeError, match="has no derivative: call it under torch.no_grad"):
        getattr(torch.ops.lrsched_fused, op)(*args)
    assert torch.equal(p.detach(), torch.zeros(3))
    with torch.no_grad():
        getattr(torch.ops.lrsched_fused, op)(*args)
    assert not torch.equal(p.detach(), torch.zeros(3))


def coded_args(op, params, state, **flags):
    """update_args with the states_8bit flag: uint8 codes and an fp32 absmax per 256 elements."""
    bits = _C.UPDATE_OPS[op]["flags"]
    flags = {name: flags.get(name, False) for name in bits}
    flags["states_8bit"] = True
    flag_bits = _ops.update_flags(op, **flags)
    coded = _C.UPDATE_OPS[op]["coded"]
    states = []
    for name in _ops.state_names(op, flag_bits):
        if name == "step":
            states += [torch.zeros((), dtype=torch.float64) for p in params]
        elif name == "master_param":
            states += [p.float() for p in params]
        elif coded.get(name) in ("signed", "unsigned"):
            states += [torch.zeros_like(p, dtype=torch.uint8) for p in params]
        else:
            states += [torch.zeros(-(-p.numel() // 256)) for p in params]
    grads = [torch.randn_like(p) for p in params]
    return (params, grads, states, state, 0, flag_bits)


@pytest.mark.parametrize("op, flags", [("adam_step_", {"decoupled_weight_decay": True}), ("sgd_step_", {"momentum": True}),
                                       ("lion_step_", {})], ids=["adam", "sgd", "lion"])
def test_8bit_update_ops_opcheck(op, flags):
    params = [torch.randn(s) for s in [(300,), (5000,), (0,), (3, 4)]]
    values = ADAM_VALUES if op == "adam_step_" else {}
    torch.library.opcheck(update_op(op), coded_args(op, params, schedule_state("cpu", **values), **flags))


def test_8bit_op_boundary_checks():
    """NOTE: [8-bit states]: the op refuses what its coded kernels cannot take."""
    params = [torch.randn(600)]
    args = list(coded_args("adam_step_", params, schedule_state("cpu", **ADAM_VALUES)))
    states = args[2]
    bad = list(states)
    bad[-1] = torch.zeros(2)  # 600 elements: 3 blocks
    with pytest.raises(RuntimeError, match=r"exp_avg_sq_absmax\[0\] must be a contiguous float32 vector of 3"):
        update_op("adam_step_")(*args[:2], bad, *args[3:])
    bad = list(states)
    bad[0] = torch.zeros(600)
    with pytest.raises(RuntimeError, match="states are uint8 codes"):
        update_op("adam_step_")(*args[:2], bad, *args[3:])
    doubles = [torch.randn(600, dtype=torch.float64)]
    with pytest.raises(RuntimeError, match="8-bit states are kept for float32, bfloat16 and float16"):
        update_op("adam_step_")(doubles, [torch.randn_like(doubles[0])], *args[2:])
    amsgrad = coded_args("adam_step_", params, schedule_state("cpu", **ADAM_VALUES), amsgrad=True)
    with pytest.raises(RuntimeError, match="a flag that states_8bit does not take"):
        update_op("adam_step_")(*amsgrad)
    sgd = coded_args("sgd_step_", params, schedule_state("cpu"))  # no momentum: nothing to code
    with pytest.raises(RuntimeError, match="momentum_buffer_absmax is there but momentum_buffer is not"):
        update_op("sgd_step_")(*sgd)
