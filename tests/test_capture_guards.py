"""What would silently break a captured CUDA graph is refused (NOTE: [CUDA
graph capture] in lrsched_fused/device_schedule.py). The logic runs here on
the CPU with the capture query answered "capturing" by hand; the same
cases on a real capture are in tests/test_cuda.py."""
import pytest
import torch

from lrsched_fused import FusedAdam, FusedSGD, device_schedule, schedules


@pytest.fixture
def capturing(monkeypatch):
    """Every capture query answers True, as inside ``torch.cuda.graph(g)``."""
    monkeypatch.setattr(device_schedule, "stream_is_capturing", lambda device: True)


def stepped(opt_cls=FusedAdam, **kwargs):
    params = [torch.randn(4, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = opt_cls(params, lr=0.1, **kwargs)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt, params


def snapshot(opt, params):
    return ([p.detach().clone() for p in params], opt.schedule_state.clone(),
            {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})


def assert_unchanged(opt, params, before):
    p_before, schedule_before, state_before = before
    assert all(torch.equal(p, b) for p, b in zip(params, p_before))
    assert torch.equal(opt.schedule_state, schedule_before)
    assert {id(p): set(s) for p, s in opt.state.items()} == {k: set(v) for k, v in state_before.items()}
    for p, s in opt.state.items():
        assert all(torch.equal(v, state_before[id(p)][k]) for k, v in s.items())


def test_a_captured_step_marks_the_optimizer(capturing):
    opt, _ = stepped()
    assert opt.device_schedule.captured


def test_a_metric_given_as_a_number_is_refused_in_a_capture(capturing):
    opt, params = stepped(schedule=schedules.ReduceLROnPlateau(patience=0))
    before = snapshot(opt, params)
    with pytest.raises(TypeError, match=r"a metric given as a number \(0.5\) would be baked into the CUDA graph"):
        opt.schedule_step(0.5)
    assert_unchanged(opt, params, before)
    opt.schedule_step(torch.tensor(0.5))  # a tensor on the device is what a graph replays


@pytest.mark.parametrize("what", ["lr", "momentum"])
def test_an_lr_or_momentum_assigned_by_hand_is_refused_in_a_capture(monkeypatch, what):
    opt, params = stepped(FusedSGD, momentum=0.9, schedule=schedules.OneCycleLR(max_lr=0.5, total_steps=10))
    if what == "lr":
        opt.param_groups[0]["lr"] = 0.3
    else:
        opt.param_groups[0]["momentum"] = 0.8
    before = snapshot(opt, params)
    monkeypatch.setattr(device_schedule, "stream_is_capturing", lambda device: True)
    with pytest.raises(RuntimeError, match="assigned by hand would be baked into the CUDA graph"):
        opt.step()
    assert_unchanged(opt, params, before)
    monkeypatch.undo()
    opt.step()  # outside a capture it is adopted
    adopted = opt.get_last_lr()[0] if what == "lr" else float(opt.param_groups[0]["momentum"])
    assert adopted == (0.3 if what == "lr" else 0.8)


def test_add_param_group_after_a_capture_is_refused(capturing):
    opt, params = stepped()
    before = snapshot(opt, params)
    with pytest.raises(RuntimeError, match="captured in a CUDA graph.*Add every param group before capturing"):
        opt.add_param_group({"params": [torch.randn(2, requires_grad=True)]})
    assert len(opt.param_groups) == 1
    assert_unchanged(opt, params, before)


def test_add_param_group_without_a_capture_grows_the_state():
    opt, params = stepped()
    opt.add_param_group({"params": [torch.randn(2, requires_grad=True)], "lr": 0.2})
    assert opt.get_last_lr() == [pytest.approx(0.1), pytest.approx(0.2)]


def test_load_state_dict_that_would_replace_a_captured_tensor_is_refused(capturing):
    """The optimizer has amsgrad's max_exp_avg_sq, the state_dict does not:
    loading it would drop the tensor the graph writes."""
    saved_opt, _ = stepped()
    saved = saved_opt.state_dict()
    opt, params = stepped(amsgrad=True)
    before = snapshot(opt, params)
    groups_before = opt.param_groups
    with pytest.raises(ValueError, match=r"captured in a CUDA graph, and the state_dict cannot be copied into its "
                                         r"'max_exp_avg_sq'"):
        opt.load_state_dict(saved)
    assert opt.param_groups is groups_before
    assert_unchanged(opt, params, before)


def test_load_state_dict_of_the_same_configuration_after_a_capture_copies_in_place(capturing):
    opt, params = stepped(amsgrad=True)
    saved = opt.state_dict()
    pointers = {k: v.data_ptr() for k, v in opt.state[params[0]].items()}
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.load_state_dict(saved)
    assert {k: v.data_ptr() for k, v in opt.state[params[0]].items()} == pointers
    assert torch.equal(opt.state[params[0]]["step"], saved["state"][0]["step"])


@pytest.mark.parametrize("dtype", [getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2")
                                   if hasattr(torch, name)])
def test_float8_parameters_are_refused_at_construction(dtype):
    with pytest.raises(TypeError, match=r"params\[0\] has dtype torch.float8.*accepted: float16, bfloat16, float32"):
        FusedAdam([torch.zeros(4, dtype=dtype)], lr=0.1)


@pytest.mark.parametrize("opt_cls,key,value", [(FusedAdam, "weight_decay", 0.3), (FusedAdam, "betas", (0.5, 0.9)),
                                               (FusedAdam, "eps", 1e-3), (FusedSGD, "dampening", 0.5)])
def test_a_hyperparameter_edited_in_a_capture_is_refused(monkeypatch, opt_cls, key, value):
    """NOTE: [hyperparameters on the device]: the write into the group's block
    would be baked into the graph; refused at the assignment, which is not made."""
    opt, params = stepped(opt_cls, **({"momentum": 0.9} if opt_cls is FusedSGD else {}))
    monkeypatch.setattr(device_schedule, "stream_is_capturing", lambda device: True)
    opt.step()  # captured: from now on the groups write an edit at once
    before = snapshot(opt, params)
    kept = opt.param_groups[0][key]
    with pytest.raises(RuntimeError, match="edited while a CUDA graph is being captured"):
        opt.param_groups[0][key] = value
    assert opt.param_groups[0][key] == kept
    assert_unchanged(opt, params, before)
