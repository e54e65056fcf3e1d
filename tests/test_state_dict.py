"""state_dict round-trips exactly: a resumed run continues bit-identically,
and load_state_dict copies into the existing buffers."""
import copy
import io

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD, schedules
import schedule_specs

OPTIMIZERS = {
    "sgd": lambda ps, s: FusedSGD(ps, lr=0.1, momentum=0.9, schedule=s),
    "adam": lambda ps, s: FusedAdam(ps, lr=0.01, amsgrad=True, weight_decay=0.1, schedule=s),
    "adamw": lambda ps, s: FusedAdamW(ps, lr=0.01, schedule=s),
    "lion": lambda ps, s: FusedLion(ps, lr=1e-3, weight_decay=0.1, schedule=s),
}
SCHEDULES = schedule_specs.STATE_DICT_SCHEDULES


def train(opt, params, epochs, start_epoch=0):
    for epoch in range(start_epoch, start_epoch + epochs):
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        metric = torch.tensor([1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9][epoch % 10])
        if isinstance(opt.schedule, schedules.ReduceLROnPlateau):
            opt.schedule_step(metric)
        else:
            opt.schedule_step()


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_resume_is_bit_identical(optimizer, schedule):
    torch.manual_seed(0)
    init = [torch.randn(4, 3), torch.randn(50000)]
    straight = [t.clone().requires_grad_() for t in init]
    opt = OPTIMIZERS[optimizer](straight, schedule_specs.ours(SCHEDULES[schedule]))
    train(opt, straight, 12)

    first = [t.clone().requires_grad_() for t in init]
    opt_a = OPTIMIZERS[optimizer](first, schedule_specs.ours(SCHEDULES[schedule]))
    train(opt_a, first, 5)  # stops mid-cooldown / mid-cycle
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optimizer": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = [t.clone().requires_grad_() for t in checkpoint["params"]]
    opt_b = OPTIMIZERS[optimizer](resumed, schedule_specs.ours(SCHEDULES[schedule]))
    opt_b.load_state_dict(checkpoint["optimizer"])
    train(opt_b, resumed, 7, start_epoch=5)

    assert opt_b.get_last_lr() == opt.get_last_lr()
    assert torch.equal(opt_b.schedule_state, opt.schedule_state)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


def test_state_uses_torch_names_and_float_lr():
    p = torch.randn(3, requires_grad=True)
    opt = FusedAdam([p], lr=0.01, amsgrad=True, schedule=schedules.StepLR(1, gamma=0.5))
    p.grad = torch.ones(3)
    opt.step()
    opt.schedule_step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"].dtype == torch.float64 and float(sd["state"][0]["step"]) == 1.0
    assert sd["param_groups"][0]["lr"] == 0.005 and sd["param_groups"][0]["initial_lr"] == 0.01
    sgd = FusedSGD([p], lr=0.1, momentum=0.9)
    sgd.step()
    assert set(sgd.state_dict()["state"][0]) == {"momentum_buffer", "step"}  # the steps the buffer took (FusedSGD._update)


def test_load_copies_into_existing_buffers():
    p = torch.randn(5, requires_grad=True)
    opt = FusedAdam([p], lr=0.01, schedule=schedules.CosineAnnealingLR(T_max=3))
    p.grad = torch.ones(5)
    opt.step()
    opt.schedule_step()
    saved = copy.deepcopy(opt.state_dict())
    ptrs = {k: v.data_ptr() for k, v in opt.state[p].items()}
    schedule_ptr = opt.schedule_state.data_ptr()
    lr_view = opt.param_groups[0]["lr"]
    for _ in range(3):
        opt.step()
        opt.schedule_step()
    opt.load_state_dict(saved)
    assert {k: v.data_ptr() for k, v in opt.state[p].items()} == ptrs
    assert opt.schedule_state.data_ptr() == schedule_ptr
    assert opt.param_groups[0]["lr"].data_ptr() == lr_view.data_ptr()
    assert float(opt.state[p]["step"]) == 1.0
    assert opt.get_last_lr()[0] == saved["param_groups"][0]["lr"]


def test_a_torch_adam_state_dict_loads_and_continues_identically():
    torch.manual_seed(0)
    init = torch.randn(6)
    p_torch = init.clone().requires_grad_()
    p_ours = init.clone().requires_grad_()
    ref = torch.optim.Adam([p_torch], lr=0.01, fused=True)
    for _ in range(4):
        p_torch.grad = torch.randn(6)
        ref.step()
    p_ours.data.copy_(p_torch.detach())
    ours = FusedAdam([p_ours], lr=0.5)
    ours.load_state_dict(ref.state_dict())
    assert ours.get_last_lr() == [0.01]
    step_both(p_torch, ref, p_ours, ours, steps=4)


def step_both(p_torch, ref, p_ours, ours, steps):
    """`steps` steps of both optimizers with the same random grads; then the parameters agree."""
    for _ in range(steps):
        g = torch.randn(p_torch.shape)
        p_torch.grad, p_ours.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    torch.testing.assert_close(p_ours, p_torch, rtol=1e-6, atol=0)


def test_our_state_dict_loads_into_torch_adam():
    p = torch.randn(6, requires_grad=True)
    ours = FusedAdam([p], lr=0.01, schedule=schedules.StepLR(1, gamma=0.5))
    p.grad = torch.ones(6)
    ours.step()
    ours.schedule_step()
    ref = torch.optim.Adam([torch.randn(6, requires_grad=True)], lr=0.3)
    ref.load_state_dict(ours.state_dict())
    assert ref.param_groups[0]["lr"] == 0.005
    assert torch.equal(ref.state[ref.param_groups[0]["params"][0]]["exp_avg"], ours.state[p]["exp_avg"])


@pytest.mark.parametrize("edit,words", [
    (lambda part: part.pop("state"), "'name', 'config', 'interval' and 'state'"),
    (lambda part: part.update(name="NoSuchLR"), "cannot be rebuilt"),
    (lambda part: part.update(config={"step_size": 0}), "cannot be rebuilt"),
    (lambda part: part.update(config={"gamma": 0.5}), "cannot be rebuilt"),
    (lambda part: part.update(config={"step_size": 3, "gamma": 0.5}), "holds the schedule"),
    (lambda part: part.update(interval="step"), "advances per 'step'"),
    (lambda part: part.update(state=[0.0] * 3), "must be a tensor"),
    (lambda part: part.update(state=part["state"][:-1]), "must be a tensor of shape"),
], ids=["missing state", "unknown name", "bad config", "missing argument", "other schedule", "other interval",
        "a list", "short"])
def test_a_malformed_schedule_entry_is_refused_before_anything_changes(edit, words):
    p = torch.randn(4, requires_grad=True)
    opt = FusedAdam([p], lr=0.1, schedule=schedules.StepLR(step_size=2))
    p.grad = torch.randn(4)
    opt.step()
    opt.schedule_step()
    saved = opt.state_dict()
    edit(saved["schedule"])
    before = (p.detach().clone(), opt.schedule_state.clone(), {k: v.clone() for k, v in opt.state[p].items()})
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        opt.load_state_dict(saved)
    assert torch.equal(p, before[0]) and torch.equal(opt.schedule_state, before[1])
    assert all(torch.equal(opt.state[p][k], v) for k, v in before[2].items())


@pytest.mark.parametrize("source", ["torch SGD", "FusedSGD without step"])
def test_a_momentum_buffer_saved_without_a_step_continues_as_torch(source):
    """torch's SGD (and FusedSGD before it kept a step) saves momentum_buffer
    alone; a buffer with history must not be taken for a new one (which the
    next step would overwrite with the grad): loading sets its step to 1."""
    torch.manual_seed(0)
    init = torch.randn(6)
    p_torch = init.clone().requires_grad_()
    p_ours = init.clone().requires_grad_()
    options = dict(lr=0.05, momentum=0.9, dampening=0.2)
    ref = torch.optim.SGD([p_torch], foreach=False, **options)
    for _ in range(3):
        p_torch.grad = torch.randn(6)
        ref.step()
    saved = ref.state_dict()
    if source == "FusedSGD without step":
        saved["state"][0] = {"momentum_buffer": saved["state"][0]["momentum_buffer"]}
        saved["param_groups"][0]["initial_lr"] = options["lr"]
    assert set(saved["state"][0]) == {"momentum_buffer"}
    p_ours.data.copy_(p_torch.detach())
    ours = FusedSGD([p_ours], lr=0.5, momentum=0.9, dampening=0.2)
    ours.load_state_dict(saved)
    assert float(ours.state[p_ours]["step"]) == 1.0
    step_both(p_torch, ref, p_ours, ours, steps=3)


def test_a_momentum_buffer_set_without_load_state_dict_has_history():
    """ZeroRedundancyOptimizer.load_state_dict writes its optimizer's state
    directly: a buffer that arrives without a step is taken as one with history."""
    torch.manual_seed(0)
    init = torch.randn(6)
    p_torch = init.clone().requires_grad_()
    p_ours = init.clone().requires_grad_()
    ref = torch.optim.SGD([p_torch], lr=0.05, momentum=0.9, foreach=False)
    p_torch.grad = torch.randn(6)
    ref.step()
    p_ours.data.copy_(p_torch.detach())
    ours = FusedSGD([p_ours], lr=0.05, momentum=0.9)
    ours.state[p_ours] = {"momentum_buffer": ref.state[p_torch]["momentum_buffer"].clone()}
    step_both(p_torch, ref, p_ours, ours, steps=3)
    assert float(ours.state[p_ours]["step"]) == 4.0
    torch.testing.assert_close(ours.state[p_ours]["momentum_buffer"], ref.state[p_torch]["momentum_buffer"],
                               rtol=1e-6, atol=0)
