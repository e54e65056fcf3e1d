"""A group hyperparameter edited mid-run, as torch users do
(``group["weight_decay"] = x``), gives the torch pair's result from the next
step on (NOTE: [hyperparameters on the device]): the value reaches the
kernels through the group's block of the device state, and the structural
ones (nesterov, maximize, amsgrad) through the op's flags."""
import pytest
import torch

from lrsched_fused import FusedAdam, FusedSGD, schedules
from schedule_specs import leaf
from torch_pair import compare, record_worst, worst_lr_error, worst_param_error

# (optimizer, starting kwargs, key, value it is set to): each value differs
# enough from the start to move the parameters far past the tolerance.
EDITS = [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, "weight_decay", 0.3),
    ("sgd", {"lr": 0.05, "weight_decay": 0.01}, "weight_decay", 0.0),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "momentum", 0.5),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1}, "dampening", 0.6),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "nesterov", True),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "maximize", True),
    ("sgd", {"lr": 0.05}, "momentum", 0.8),  # buffers start at the edit, as torch's do
    ("adam", {"lr": 0.01, "weight_decay": 0.01}, "weight_decay", 0.5),
    ("adam", {"lr": 0.01}, "betas", (0.5, 0.9)),
    ("adam", {"lr": 0.01, "eps": 1e-8}, "eps", 1e-1),
    ("adam", {"lr": 0.01}, "maximize", True),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}, "weight_decay", 0.9),
    ("adamw", {"lr": 0.01}, "betas", (0.8, 0.95)),
]

PARAM_RTOL = 1e-12  # float64, as tests/test_against_torch.py (measured: 0 to 4e-16)
EDIT_AT = 7  # the step after which the edit is made
STEP_LR = leaf("StepLR", step_size=2, gamma=0.7)


def edit_after(step_index, key, value, sides=("torch_opt", "our_opt"), group=1):
    """after_step(pair, step) that sets param_groups[group][key] = value on the given sides."""
    def after_step(pair, step):
        if step == step_index:
            for side in sides:
                getattr(pair, side).param_groups[group][key] = value
    return after_step


def run_with_edit(kind, kwargs, after_step, **options):
    return compare(kind, kwargs, spec=STEP_LR, epochs=5, steps_per_epoch=4, dtype=torch.float64,
                   after_step=after_step, **options)


@pytest.mark.parametrize("kind,kwargs,key,value", EDITS,
                         ids=[f"{k}-{key}={v}" for k, _, key, v in EDITS])
def test_edit_mid_run_matches_torch(kind, kwargs, key, value):
    run = run_with_edit(kind, kwargs, edit_after(EDIT_AT, key, value))
    assert worst_lr_error(run) <= 1e-12
    assert worst_param_error(run) <= PARAM_RTOL
    record_worst(torch.float64, lr=worst_lr_error(run), param=worst_param_error(run))
    # The check can fail: the same run with the edit on torch's side only is far off.
    one_sided = run_with_edit(kind, kwargs, edit_after(EDIT_AT, key, value, sides=("torch_opt",)))
    assert worst_param_error(one_sided) > 1e3 * PARAM_RTOL


def test_after_a_capture_an_edit_reaches_the_block_at_once(monkeypatch):
    """Once a step was captured, the value is in the group's block right
    after the assignment (before any eager call), which is what the next
    replay of the graph reads. The capture is simulated on the CPU (as in
    tests/test_capture_guards.py); tests/test_cuda.py replays a real one."""
    from lrsched_fused import _C, device_schedule
    p = torch.zeros(3, requires_grad=True)
    opt = FusedAdam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.0)
    block = opt.schedule_state[_C.HEADER_SIZE:_C.HEADER_SIZE + _C.GROUP_STRIDE]
    assert block[_C.GROUP_BETA2].item() == 0.99 and block[_C.GROUP_EPS].item() == 1e-6
    p.grad = torch.ones(3)
    with monkeypatch.context() as capture:
        capture.setattr(device_schedule, "stream_is_capturing", lambda device: True)
        opt.step()
    opt.param_groups[0]["weight_decay"] = 0.25
    opt.param_groups[0]["betas"] = (0.5, 0.75)
    opt.param_groups[0].update(eps=1e-3)
    assert block[_C.GROUP_WEIGHT_DECAY].item() == 0.25
    assert block[_C.GROUP_MOMENTUM].item() == 0.5 and block[_C.GROUP_BETA2].item() == 0.75
    assert block[_C.GROUP_EPS].item() == 1e-3
    # A bad value is not written; the next step() refuses it before anything changes.
    before = p.detach().clone()
    opt.param_groups[0]["weight_decay"] = -1.0
    assert block[_C.GROUP_WEIGHT_DECAY].item() == 0.25
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_before_a_capture_groups_are_plain_dicts_and_edits_are_written_at_the_next_step():
    """torch.compile traces plain dicts only; an eager step() writes the edit before its kernels run."""
    from lrsched_fused import _C
    p = torch.zeros(3, requires_grad=True)
    opt = FusedSGD([p], lr=0.1, momentum=0.9)
    assert type(opt.param_groups[0]) is dict
    opt.param_groups[0]["dampening"] = 0.5
    assert opt.schedule_state[_C.HEADER_SIZE + _C.GROUP_DAMPENING].item() == 0.0
    opt.schedule_step()
    assert opt.schedule_state[_C.HEADER_SIZE + _C.GROUP_DAMPENING].item() == 0.5


def test_edit_of_a_plain_dict_group_is_written_at_the_next_step():
    """A group replaced by a plain dict (bypassing ParamGroup) is still written before the kernels run."""
    from lrsched_fused import _C
    p = torch.zeros(3, requires_grad=True)
    opt = FusedSGD([p], lr=0.1, momentum=0.9)
    opt.param_groups[0] = dict(opt.param_groups[0], dampening=0.5)
    p.grad = torch.ones(3)
    opt.step()
    assert opt.schedule_state[_C.HEADER_SIZE + _C.GROUP_DAMPENING].item() == 0.5


def test_cycled_momentum_is_left_to_the_schedule():
    """With cycle_momentum the schedule owns beta1's slot: an edit of beta2
    writes beta2 only, and beta1 keeps cycling as torch's OneCycleLR moves it."""
    def edit_beta2(pair, step):
        if step == EDIT_AT:
            for opt in (pair.torch_opt, pair.our_opt):
                opt.param_groups[1]["betas"] = (opt.param_groups[1]["betas"][0], 0.9)

    run = compare("adam", {"lr": 0.01}, spec=leaf("OneCycleLR", max_lr=0.1, total_steps=30), epochs=6,
                  steps_per_epoch=4, total_steps=24, interval="step", dtype=torch.float64, after_step=edit_beta2)
    assert worst_lr_error(run) <= 1e-12
    assert worst_param_error(run) <= PARAM_RTOL
    assert schedules.OneCycleLR(0.1, 30).cycles_momentum
