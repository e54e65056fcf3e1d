"""schedules.get_scheduler(name, ...) against the installed transformers'
get_scheduler(name, optimizer, ...) on a torch optimizer, for every name
transformers accepts: the lr of every group after construction and after
every schedule step, to 1e-12 relative (measured: equal), over horizons that
cross the end of warmup, the restarts, the stable-to-decay hand-over and the
end of training."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers", reason="transformers is not installed (tests/build.sh installs it)")
from transformers.trainer_utils import SchedulerType  # noqa: E402

from lrsched_fused import FusedAdamW, FusedSGD, schedules  # noqa: E402
from torch_pair import assert_lr_sequences_close, plateau_metric  # noqa: E402

LR_RTOL = 1e-12
LRS = (0.1, 0.03, 0.7)  # three param groups; the optimizer's lr is LRS[0]

# (name, num_warmup_steps, num_training_steps, scheduler_specific_kwargs, horizon)
CASES = [
    ("linear", 5, 30, {}, 40),
    ("linear", 0, 12, {}, 16),
    ("linear", 8, 8, {}, 12),
    ("cosine", 5, 30, {}, 45),
    ("cosine", 3, 20, {"num_cycles": 1.5}, 30),
    ("cosine", 0, 1, {}, 6),
    ("cosine_with_restarts", 4, 40, {"num_cycles": 3}, 50),
    ("cosine_with_restarts", 0, 25, {}, 30),
    ("cosine_with_restarts", 2, 17, {"num_cycles": 4}, 20),
    ("polynomial", 5, 30, {"lr_end": 1e-4, "power": 2.0}, 40),
    ("polynomial", 3, 20, {}, 25),
    ("polynomial", 0, 9, {"lr_end": 1e-3, "power": 0.5}, 12),
    ("constant", None, None, {}, 10),
    ("constant", 4, 20, {"ignored": 1}, 10),
    ("constant_with_warmup", 7, None, {}, 15),
    ("inverse_sqrt", 6, None, {}, 40),
    ("inverse_sqrt", 0, None, {}, 20),
    ("inverse_sqrt", 4, None, {"timescale": 9}, 30),
    ("cosine_with_min_lr", 5, 30, {"min_lr_rate": 0.1}, 40),
    ("cosine_with_min_lr", 5, 30, {"min_lr": 1e-3}, 40),
    ("cosine_with_min_lr", 2, 15, {"min_lr": 0.0, "num_cycles": 1.0}, 20),
    ("cosine_warmup_with_min_lr", 5, 30, {"min_lr_rate": 0.05}, 40),
    ("cosine_warmup_with_min_lr", 4, 25, {"min_lr": 2e-3, "warmup_lr_rate": 0.2, "num_cycles": 0.7}, 35),
    ("cosine_warmup_with_min_lr", 1, 10, {"min_lr_rate": 0.0, "warmup_lr_rate": 0.5}, 14),
    ("warmup_stable_decay", 5, 40, {"num_decay_steps": 10}, 50),
    ("warmup_stable_decay", 4, None, {"num_decay_steps": 6, "num_stable_steps": 5, "warmup_type": "1-sqrt",
                                      "decay_type": "linear"}, 25),
    ("warmup_stable_decay", 0, 12, {"num_decay_steps": 12, "min_lr_ratio": 0.2, "num_cycles": 1.0}, 15),
] + [
    ("warmup_stable_decay", 4, 20, {"num_decay_steps": 7, "warmup_type": warmup, "decay_type": decay,
                                    "min_lr_ratio": 0.1}, 24)
    for warmup in ("linear", "cosine", "1-sqrt") for decay in ("linear", "cosine", "1-sqrt")
] + [
    ("reduce_lr_on_plateau", None, None, {"factor": 0.5, "patience": 1, "cooldown": 1}, 30),
    ("reduce_lr_on_plateau", 3, 10, {"mode": "max", "threshold_mode": "abs", "min_lr": 0.01}, 30),
]
#: the names read the optimizer's lr (optimizer.defaults["lr"]); ours read each group's initial lr
#: unless optimizer_lr is given
READS_THE_OPTIMIZER_LR = {"polynomial", "cosine_with_min_lr", "cosine_warmup_with_min_lr"}


def case_id(case):
    name, warmup, total, kwargs, _ = case
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}(W={warmup},T={total}{',' if args else ''}{args})"


def lr_sequences(name, warmup, total, kwargs, horizon, *, lrs=LRS, optimizer_lr=None):
    """(transformers' lrs, ours) of every group, from construction on."""
    torch_opt = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs],
                                lr=lrs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: a scheduler stepped before the optimizer
        theirs = transformers.get_scheduler(name, torch_opt, num_warmup_steps=warmup, num_training_steps=total,
                                            scheduler_specific_kwargs=dict(kwargs))
    schedule = schedules.get_scheduler(name, num_warmup_steps=warmup, num_training_steps=total,
                                       scheduler_specific_kwargs=dict(kwargs), optimizer_lr=optimizer_lr)
    ours = FusedSGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs], lr=lrs[0],
                    schedule=schedule)
    plateau = isinstance(theirs, torch.optim.lr_scheduler.ReduceLROnPlateau)
    expected = [[float(g["lr"]) for g in torch_opt.param_groups]]
    got = [ours.get_last_lr()]
    for epoch in range(horizon):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step(plateau_metric(epoch)) if plateau else theirs.step()
        ours.schedule_step(plateau_metric(epoch)) if plateau else ours.schedule_step()
        expected.append([float(g["lr"]) for g in torch_opt.param_groups])
        got.append(ours.get_last_lr())
    return expected, got


def assert_same_lrs(expected, got, what):
    assert_lr_sequences_close(expected, got, what, "transformers schedules", reference="transformers", rtol=LR_RTOL)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_group_matches_transformers(case):
    """Three groups with their own lrs; where transformers reads the
    optimizer's lr, ours is told it (optimizer_lr)."""
    name = case[0]
    optimizer_lr = LRS[0] if name in READS_THE_OPTIMIZER_LR else None
    expected, got = lr_sequences(*case, optimizer_lr=optimizer_lr)
    assert_same_lrs(expected, got, case_id(case))
    assert len({round(lrs[0], 15) for lrs in expected}) > 1 or name.startswith("constant")


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in READS_THE_OPTIMIZER_LR], ids=case_id)
def test_groups_on_the_optimizer_lr_need_no_optimizer_lr(case):
    """The usual set-up (decay and no-decay groups on the optimizer's lr): each
    group's initial lr is the optimizer's lr, so optimizer_lr is not needed."""
    expected, got = lr_sequences(*case, lrs=(0.02, 0.02))
    assert_same_lrs(expected, got, case_id(case))


def test_every_transformers_name_is_matched_or_refused_with_a_reason():
    names = {member.value for member in SchedulerType}
    assert names == set(schedules.TRANSFORMERS_SCHEDULER_NAMES)
    assert names - {"greedy"} == {case[0] for case in CASES}
    with pytest.raises(ValueError, match="'greedy' is not supported: .*not a function of the step"):
        schedules.get_scheduler("greedy")
    assert schedules.get_scheduler(SchedulerType.LINEAR, num_warmup_steps=2, num_training_steps=9) == \
        schedules.LinearWithWarmup(2, 9)


def test_the_step_interval_run_matches_transformers_with_torch_adamw():
    """As a Trainer runs it: one schedule step per optimizer step (here inside
    step()), FusedAdamW against torch's fused AdamW: lrs equal, parameters bit-identical."""
    values = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(2)]
    ref_params = [v.clone().requires_grad_() for v in values]
    our_params = [v.clone().requires_grad_() for v in values]
    ref = torch.optim.AdamW(ref_params, lr=0.01, fused=True)
    ref_sched = transformers.get_scheduler("warmup_stable_decay", ref, num_warmup_steps=4, num_training_steps=20,
                                           scheduler_specific_kwargs={"num_decay_steps": 8, "decay_type": "1-sqrt"})
    ours = FusedAdamW(our_params, lr=0.01, schedule_interval="step", schedule=schedules.get_scheduler(
        "warmup_stable_decay", num_warmup_steps=4, num_training_steps=20,
        scheduler_specific_kwargs={"num_decay_steps": 8, "decay_type": "1-sqrt"}))
    gen = torch.Generator().manual_seed(0)
    for _ in range(22):
        for a, b in zip(ref_params, our_params):
            a.grad = torch.randn(a.shape, generator=gen, dtype=torch.float64)
            b.grad = a.grad.clone()
        ref.step()
        ref_sched.step()
        ours.step()
        assert ours.get_last_lr() == ref_sched.get_last_lr()
    for a, b in zip(ref_params, our_params):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_a_transformers_schedule_round_trips_through_the_state_dict():
    schedule = schedules.get_scheduler("cosine_warmup_with_min_lr", num_warmup_steps=3, num_training_steps=12,
                                       scheduler_specific_kwargs={"min_lr": 1e-3, "warmup_lr_rate": 0.1})
    opt = FusedSGD([torch.zeros(2, requires_grad=True)], lr=0.1, schedule=schedule)
    for _ in range(5):
        opt.schedule_step()
    saved = opt.state_dict()
    assert saved["schedule"]["name"] == "CosineWarmupWithMinLr"
    restored = FusedSGD([torch.zeros(2, requires_grad=True)], lr=0.1, schedule=schedules.from_config(
        saved["schedule"]["name"], saved["schedule"]["config"]))
    restored.load_state_dict(saved)
    for _ in range(10):
        opt.schedule_step()
        restored.schedule_step()
        assert restored.get_last_lr() == opt.get_last_lr()


W, T = 3, 20


@pytest.mark.parametrize("call,error,words", [
    (lambda: schedules.get_scheduler("cosine_annealing"), ValueError,
     r"unknown scheduler name 'cosine_annealing'; accepted: \['constant', "),
    (lambda: schedules.get_scheduler("linear", num_training_steps=T), ValueError, "linear requires `num_warmup_steps`"),
    (lambda: schedules.get_scheduler("cosine", num_warmup_steps=W), ValueError, "cosine requires `num_training_steps`"),
    (lambda: schedules.get_scheduler("cosine", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"min_lr": 0.1}), ValueError,
     r"cosine takes the scheduler_specific_kwargs \['num_cycles'\], got \['min_lr'\]"),
    (lambda: schedules.get_scheduler("linear", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"last_epoch": 4}), ValueError,
     r"linear takes the scheduler_specific_kwargs \[\], got \['last_epoch'\]"),
    (lambda: schedules.get_scheduler("cosine_with_min_lr", num_warmup_steps=W, num_training_steps=T), ValueError,
     "needs one of min_lr or min_lr_rate"),
    (lambda: schedules.get_scheduler("cosine_with_min_lr", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"min_lr": 0.1, "min_lr_rate": 0.1}), ValueError,
     "give min_lr or min_lr_rate, not both"),
    (lambda: schedules.get_scheduler("warmup_stable_decay", num_warmup_steps=W, num_training_steps=T), ValueError,
     "needs num_decay_steps"),
    (lambda: schedules.get_scheduler("warmup_stable_decay", num_warmup_steps=W,
                                     scheduler_specific_kwargs={"num_decay_steps": 4}), ValueError,
     "give num_training_steps or num_stable_steps"),
    (lambda: schedules.get_scheduler("warmup_stable_decay", num_warmup_steps=W, num_training_steps=5,
                                     scheduler_specific_kwargs={"num_decay_steps": 4}), ValueError,
     r"num_training_steps \(5\) must be at least num_warmup_steps \+ num_decay_steps \(3 \+ 4\)"),
    (lambda: schedules.get_scheduler("warmup_stable_decay", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"num_decay_steps": 4, "decay_type": "exp"}),
     ValueError, r"decay_type must be one of \['linear', 'cosine', '1-sqrt'\], got 'exp'"),
    (lambda: schedules.get_scheduler("polynomial", num_warmup_steps=T, num_training_steps=T), ValueError,
     "num_training_steps must differ from num_warmup_steps"),
    (lambda: schedules.get_scheduler("polynomial", num_warmup_steps=W, num_training_steps=T, optimizer_lr=1e-8),
     ValueError, r"lr_end \(1e-07\) must be smaller than lr_init \(1e-08\)"),
    (lambda: schedules.get_scheduler("polynomial", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"power": -1.0}), ValueError,
     "power must be a finite real number >= 0.0, got -1.0"),
    (lambda: schedules.get_scheduler("linear", num_warmup_steps=-1, num_training_steps=T), ValueError,
     "num_warmup_steps must be an int >= 0, got -1"),
    (lambda: schedules.get_scheduler("linear", num_warmup_steps=2.5, num_training_steps=T), TypeError,
     r"num_warmup_steps must be an int >= 0, got 2.5 \(float\)"),
    (lambda: schedules.get_scheduler("inverse_sqrt", num_warmup_steps=W, scheduler_specific_kwargs={"timescale": 0}),
     ValueError, "timescale must be an int >= 1, got 0"),
    (lambda: schedules.get_scheduler("cosine", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs={"num_cycles": float("nan")}), ValueError,
     "num_cycles must be a finite real number, got nan"),
    (lambda: schedules.get_scheduler("reduce_lr_on_plateau", scheduler_specific_kwargs={"factor": 2.0}), ValueError,
     "factor must be .* < 1.0, got 2.0"),
    (lambda: schedules.get_scheduler("reduce_lr_on_plateau", scheduler_specific_kwargs={"verbose": True}), ValueError,
     r"reduce_lr_on_plateau takes the scheduler_specific_kwargs \['mode', .*\], got \['verbose'\]"),
    (lambda: schedules.get_scheduler("linear", num_warmup_steps=W, num_training_steps=T, optimizer_lr=-0.1),
     ValueError, "optimizer_lr must be a finite real number > 0.0, got -0.1"),
    (lambda: schedules.get_scheduler("linear", num_warmup_steps=W, num_training_steps=T,
                                     scheduler_specific_kwargs=[("x", 1)]), ValueError,
     "scheduler_specific_kwargs must be a dict or None"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_names_and_arguments_are_refused_naming_what_is_accepted(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_polynomial_refuses_a_group_lr_not_above_lr_end_as_transformers_does():
    """transformers raises when the optimizer's lr is not above lr_end; ours
    checks each group's initial lr, at construction and add_param_group."""
    schedule = schedules.get_scheduler("polynomial", num_warmup_steps=2, num_training_steps=10,
                                       scheduler_specific_kwargs={"lr_end": 1e-3})
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"lr_end \(0.001\) must be smaller than the initial lr of every param group"):
        FusedAdamW([p], lr=1e-3, schedule=schedule)
    opt = FusedAdamW([p], lr=1e-2, schedule=schedule)
    with pytest.raises(ValueError, match=r"got 0.0005 \(param group 1"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "lr": 5e-4})
    assert len(opt.param_groups) == 1 and opt.schedule_state.numel() == opt.device_schedule.offset(1, 0)
