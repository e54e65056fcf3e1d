"""as_lr_scheduler(opt): the schedule as a torch lr scheduler, driven the way
PyTorch Lightning and Hugging Face's Trainer drive one, against the torch pair
driven the same way."""
import io

import pytest
import torch

from lrsched_fused import FusedAdam, FusedSGD, PlateauScheduleView, ScheduleView, as_lr_scheduler, schedules
import schedule_specs
from torch_pair import record_worst, relative_error

SCHEDULES = schedule_specs.INTEGRATION_SCHEDULES
# one per evaluation: improvements, plateaus, a rise, a NaN (a bad epoch)
METRICS = [1.0, 0.9, 0.9, 0.95, 0.9, 0.5, 0.5, 0.5, float("nan"), 0.5, 0.4, 0.4, 0.4, 0.4]


def make_pair(schedule_name, seed=0):
    """(model, torch Adam, its scheduler, our model, FusedAdam, its view) from the same init."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    ours = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    ours.load_state_dict(model.state_dict())
    spec = SCHEDULES[schedule_name]
    ref_opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01, fused=True)
    ref_sched = schedule_specs.torchs(spec, ref_opt)
    opt = FusedAdam(ours.parameters(), lr=0.01, weight_decay=0.01, schedule=schedule_specs.ours(spec))
    return model, ref_opt, ref_sched, ours, opt, as_lr_scheduler(opt)


def hf_style_steps(model, opt, scheduler, steps, first_step=0, eval_every=2):
    """What transformers' Trainer does: scheduler.step() after every optimizer
    step, or, for a ReduceLROnPlateau, scheduler.step(metric) after every
    evaluation with the metric as a Python float. Returns the lr it would log
    at every step (get_last_lr()[0], or param_groups[0]["lr"] for a plateau)."""
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    logged = []
    for step in range(first_step, first_step + steps):
        gen = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 2, generator=gen)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if not plateau:
            scheduler.step()
        opt.zero_grad()
        if plateau and step % eval_every == eval_every - 1:
            scheduler.step(METRICS[(step // eval_every) % len(METRICS)])
        logged.append(float(opt.param_groups[0]["lr"]) if plateau else scheduler.get_last_lr()[0])
    return logged


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_the_view_stepped_like_hf_trainer_matches_the_torch_pair(schedule_name):
    model, ref_opt, ref_sched, ours, opt, view = make_pair(schedule_name)
    assert isinstance(view, torch.optim.lr_scheduler.LRScheduler) and view.optimizer is opt
    assert isinstance(view, torch.optim.lr_scheduler.ReduceLROnPlateau) == (schedule_name == "ReduceLROnPlateau")
    assert view.last_epoch == ref_sched.last_epoch and view.base_lrs == [0.01]
    torch_lrs = hf_style_steps(model, ref_opt, ref_sched, 28)
    our_lrs = hf_style_steps(ours, opt, view, 28)
    assert our_lrs == torch_lrs and len(set(our_lrs)) > 3
    assert view.get_last_lr() == [float(g["lr"]) for g in ref_opt.param_groups]
    assert view.last_epoch == ref_sched.last_epoch
    if schedule_name == "ReduceLROnPlateau":
        assert (view.best, view.num_bad_epochs, view.cooldown_counter, view.in_cooldown) == (
            ref_sched.best, ref_sched.num_bad_epochs, ref_sched.cooldown_counter, ref_sched.in_cooldown)
    worst = max(relative_error(a, b) for a, b in zip(ours.parameters(), model.parameters()))
    record_worst(torch.float32, param=worst)
    assert worst <= 1e-6


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_a_checkpoint_of_the_view_resumes_bit_identically(schedule_name):
    """As Trainer saves it: torch.save(scheduler.state_dict()); torch.load(weights_only=True)."""
    _, _, _, straight, opt, view = make_pair(schedule_name)
    straight_lrs = hf_style_steps(straight, opt, view, 20)

    _, _, _, first, opt_a, view_a = make_pair(schedule_name)
    hf_style_steps(first, opt_a, view_a, 9)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt_a.state_dict(), "scheduler": view_a.state_dict()},
               buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    _, _, _, resumed, opt_b, view_b = make_pair(schedule_name, seed=1)
    resumed.load_state_dict(checkpoint["model"])
    opt_b.load_state_dict(checkpoint["optimizer"])
    opt_b.schedule_step(0.1) if schedule_name == "ReduceLROnPlateau" else opt_b.schedule_step()  # moved on...
    view_b.load_state_dict(checkpoint["scheduler"])  # ...and restored by the scheduler checkpoint alone
    resumed_lrs = hf_style_steps(resumed, opt_b, view_b, 11, first_step=9)

    assert resumed_lrs == straight_lrs[9:]
    assert torch.equal(opt_b.schedule_state, opt.schedule_state)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)


def test_bad_input_is_refused_with_a_clear_error():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(TypeError, match="expected one of lrsched_fused.s optimizers .*got Adam"):
        as_lr_scheduler(torch.optim.Adam([p]))
    with pytest.raises(ValueError, match="schedule_interval='step'"):
        as_lr_scheduler(FusedAdam([p], schedule=schedules.StepLR(2), schedule_interval="step"))
    with pytest.raises(TypeError, match="use PlateauScheduleView"):
        ScheduleView(FusedAdam([p], schedule=schedules.ReduceLROnPlateau()))
    with pytest.raises(TypeError, match="use ScheduleView"):
        PlateauScheduleView(FusedSGD([p], schedule=schedules.StepLR(2)))

    view = as_lr_scheduler(FusedAdam([p], schedule=schedules.StepLR(2)))
    with pytest.raises(TypeError, match="takes no epoch"):
        view.step(3)
    with pytest.raises(ValueError, match=r"from ScheduleView.state_dict.*got keys \[.last_epoch.\]"):
        view.load_state_dict({"last_epoch": 3})
    other = as_lr_scheduler(FusedAdam([p], schedule=schedules.StepLR(3))).state_dict()
    with pytest.raises(ValueError, match=r"holds the schedule StepLR\(step_size=3"):
        view.load_state_dict(other)
    two_groups = FusedAdam([{"params": [p]}, {"params": [torch.nn.Parameter(torch.randn(2))]}],
                           schedule=schedules.StepLR(2))
    with pytest.raises(ValueError, match=r"tensor of shape"):
        view.load_state_dict(as_lr_scheduler(two_groups).state_dict())
    plateau = as_lr_scheduler(FusedAdam([p], schedule=schedules.ReduceLROnPlateau()))
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'metrics'"):
        plateau.step()


def test_the_view_of_warmup_then_plateau_reads_the_plateau_counters():
    """A composite with a ReduceLROnPlateau is a plateau view; its counters
    are the plateau leaf's, equal to torch's two schedulers stepped by hand."""
    from lrsched_fused.testing import torch_reference
    from torch_pair import plateau_metric

    schedule = schedules.SequentialLR(
        [schedules.LinearLR(start_factor=0.1, total_iters=4), schedules.ReduceLROnPlateau(patience=1, cooldown=2)],
        milestones=[4])
    opt = FusedSGD([torch.zeros(2, requires_grad=True)], lr=0.1, schedule=schedule)
    view = as_lr_scheduler(opt)
    assert isinstance(view, PlateauScheduleView)
    reference = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    by_hand = torch_reference.torch_scheduler(schedule, reference)
    plateau = by_hand.parts[1]
    for epoch in range(30):
        metric = plateau_metric(epoch)
        view.step(torch.tensor(metric, dtype=torch.float64))
        by_hand.step(metric)
        assert view.get_last_lr() == [group["lr"] for group in reference.param_groups]
        assert (view.best, view.num_bad_epochs, view.cooldown_counter) == (
            plateau.best, plateau.num_bad_epochs, plateau.cooldown_counter)
    assert view.last_epoch == 30


def test_a_torch_scheduler_stepping_our_lr_views_matches_the_torch_pair():
    """Trainer(optimizers=(opt, None)) makes Hugging Face build its own torch
    scheduler (a LambdaLR) on our optimizer: it writes our group["lr"] views
    with fill_, and the kernels use what it writes."""
    import warnings

    values = torch.randn(3, 4, dtype=torch.float64)
    ours_p, ref_p = values.clone().requires_grad_(), values.clone().requires_grad_()
    ours = FusedAdam([ours_p], lr=0.1)
    ref = torch.optim.Adam([ref_p], lr=0.1, fused=True)
    warmup_then_decay = lambda step: min(1.0, (step + 1) / 4) * max(0.0, 1 - step / 20)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_sched = torch.optim.lr_scheduler.LambdaLR(ours, warmup_then_decay)
        ref_sched = torch.optim.lr_scheduler.LambdaLR(ref, warmup_then_decay)
    gen = torch.Generator().manual_seed(0)
    for _ in range(12):
        grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        ours_p.grad, ref_p.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
        ours_sched.step()
        ref_sched.step()
        assert ours.get_last_lr() == [float(g["lr"]) for g in ref.param_groups]
    torch.testing.assert_close(ours_p, ref_p, rtol=0, atol=0)


def test_the_old_torch_reference_path_warns_and_gives_the_moved_module():
    """lrsched_fused.torch_reference moved to lrsched_fused.testing; the old
    import still works (the README named it) and says where it went."""
    import importlib
    import sys

    from lrsched_fused.testing import torch_reference

    sys.modules.pop("lrsched_fused.torch_reference", None)
    with pytest.warns(DeprecationWarning, match="lrsched_fused.testing.torch_reference"):
        old = importlib.import_module("lrsched_fused.torch_reference")
    assert old.torch_scheduler is torch_reference.torch_scheduler
    assert old.ByHand is torch_reference.ByHand
