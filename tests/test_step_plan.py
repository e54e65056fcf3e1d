"""The step plan (NOTE: [step plan] in lrsched_fused/step_plan.py) against the
torch pair: every way a plan can go stale, applied to both optimizers at the
same step, with the parameters compared after every step; and a count of
the plan's rebuilds, so that reuse is what the fast path really does."""
import copy
import gc
import weakref
from typing import Callable, List

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, step_plan
from torch_pair import record_worst, relative_error

# torch's fused Adam/AdamW; for SGD torch's for-loop (foreach=False), whose
# first momentum step is per parameter as ours (torch's fused SGD decides per
# group and fails when a parameter's first grad comes late).
OPTIMIZERS = {
    "sgd": (FusedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False)),
    "sgd-nesterov": (FusedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, foreach=False)),
    "adam": (FusedAdam, torch.optim.Adam, dict(lr=0.01, weight_decay=1e-2, fused=True)),
    "adamw-amsgrad": (FusedAdamW, torch.optim.AdamW, dict(lr=0.01, amsgrad=True, fused=True)),
}
SHAPES = [(5, 3), (0,), (7,), (70000,), (2, 2, 2), (11,)]
STEPS = 24
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6}


class Pair:
    """Both optimizers and their parameters, mutated alike by a scenario."""

    def __init__(self, name: str, dtypes=(torch.float64,)):
        ours_cls, torch_cls, kwargs = OPTIMIZERS[name]
        gen = torch.Generator().manual_seed(0)
        values = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtypes[i % len(dtypes)])
                  for i, s in enumerate(SHAPES)]
        self.torch_params = [v.clone().requires_grad_() for v in values]
        self.our_params = [v.clone().requires_grad_() for v in values]
        our_kwargs = {k: v for k, v in kwargs.items() if k not in ("fused", "foreach")}
        lr = kwargs["lr"]
        self.torch = torch_cls([{"params": self.torch_params[:3]}, {"params": self.torch_params[3:], "lr": lr / 2}],
                               **kwargs)
        self.ours = ours_cls([{"params": self.our_params[:3]}, {"params": self.our_params[3:], "lr": lr / 2}],
                             **our_kwargs)
        self.no_grad = set()  # indices of parameters that get no grad this step

    def new_params(self, *shapes):
        """A fresh parameter per shape on each side (the same values)."""
        values = [torch.randn(s, dtype=torch.float64) for s in shapes]
        theirs = [v.clone().requires_grad_() for v in values]
        ours = [v.clone().requires_grad_() for v in values]
        return theirs, ours

    def both(self, fn: Callable) -> None:
        fn(self.torch, self.torch_params)
        fn(self.ours, self.our_params)


def run(name: str, scenario: Callable[[int, Pair], None], *, replace_grads=True, dtypes=(torch.float64,)):
    pair = Pair(name, dtypes)
    gen = torch.Generator().manual_seed(1)
    worst = {}
    for step in range(STEPS):
        pair.no_grad = set()
        scenario(step, pair)
        for i, (t, o) in enumerate(zip(pair.torch_params, pair.our_params)):
            if i in pair.no_grad:
                t.grad = o.grad = None
                continue
            grad = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            if replace_grads or o.grad is None:
                t.grad, o.grad = grad.clone(), grad.clone()
            else:
                t.grad.copy_(grad)
                o.grad.copy_(grad)
        pair.torch.step()
        pair.ours.step()
        for t, o in zip(pair.torch_params, pair.our_params):
            error = relative_error(o.detach(), t.detach())
            worst[t.dtype] = max(worst.get(t.dtype, 0.0), error)
            assert error <= TOLERANCE[t.dtype], f"step {step}: {error:.3e} on a {tuple(t.shape)} parameter"
    for dtype, error in worst.items():
        record_worst(dtype, param=error)
    return pair


def steady(step, pair):
    pass


def some_grads_missing(step, pair):
    if step % 3 == 1:
        pair.no_grad = {0, 4}
    if step in (5, 6, 7):
        pair.no_grad = {2}


def group_added(step, pair):
    if step == 8:
        theirs, ours = pair.new_params((4, 4), (9,))
        pair.torch.add_param_group({"params": theirs, "lr": 0.02})
        pair.ours.add_param_group({"params": ours, "lr": 0.02})
        pair.torch_params += theirs
        pair.our_params += ours


def state_dict_reloaded(step, pair):
    if step == 5:
        pair.saved = (copy.deepcopy(pair.torch.state_dict()), copy.deepcopy(pair.ours.state_dict()))
    if step == 12:  # back to the state of step 5 (the parameters stay)
        pair.torch.load_state_dict(pair.saved[0])
        pair.ours.load_state_dict(pair.saved[1])


def params_list_replaced(step, pair):
    if step == 7:
        theirs, ours = pair.new_params((6,))
        pair.torch.param_groups[1]["params"] = list(pair.torch.param_groups[1]["params"]) + theirs
        pair.ours.param_groups[1]["params"] = list(pair.ours.param_groups[1]["params"]) + ours
        pair.torch_params += theirs
        pair.our_params += ours


def param_replaced_in_place(step, pair):
    if step == 9:
        theirs, ours = pair.new_params((7,))
        pair.torch.param_groups[0]["params"][2] = theirs[0]
        pair.ours.param_groups[0]["params"][2] = ours[0]
        pair.torch_params[2], pair.our_params[2] = theirs[0], ours[0]


def hyperparameters_edited(step, pair):
    edits = {4: {"weight_decay": 0.1}, 9: {"maximize": True}, 13: {"weight_decay": 0.0}, 16: {"maximize": False}}
    if step in edits:
        for opt in (pair.torch, pair.ours):
            opt.param_groups[step % 2].update(edits[step])
    if step == 11:
        for opt in (pair.torch, pair.ours):
            group = opt.param_groups[1]
            if "momentum" in group:
                group["momentum"] = 0.5
            else:
                group["betas"] = (0.8, 0.99)
                group["eps"] = 1e-6


def state_cleared(step, pair):
    if step == 10:
        pair.both(lambda opt, params: opt.state.clear())


def one_state_edited(step, pair):
    def edit(opt, params):
        state = opt.state[params[3]]
        key = "momentum_buffer" if "momentum_buffer" in state else "exp_avg"
        state[key] = torch.full_like(params[3], 0.25)
    if step == 6:
        pair.both(edit)
    if step == 14:
        pair.both(lambda opt, params: opt.state.pop(params[0]))


SCENARIOS = {
    "steady": steady,
    "some grads None on some steps": some_grads_missing,
    "add_param_group mid-run": group_added,
    "load_state_dict of an earlier step": state_dict_reloaded,
    "group['params'] replaced": params_list_replaced,
    "a parameter replaced in group['params']": param_replaced_in_place,
    "hyperparameters edited by hand": hyperparameters_edited,
    "opt.state cleared": state_cleared,
    "a state tensor replaced, a parameter's state deleted": one_state_edited,
}


@pytest.mark.parametrize("replace_grads", [True, False], ids=["grads-replaced", "grads-kept"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_plan_follows_every_change_as_the_torch_pair(name, scenario, replace_grads):
    run(name, SCENARIOS[scenario], replace_grads=replace_grads)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_two_dtypes_in_one_group(name):
    run(name, some_grads_missing, dtypes=(torch.float64, torch.float32))


class RebuildCounter:
    """Counts the plan's group rebuilds (StepPlan._new_group_plan calls)."""

    def __init__(self, monkeypatch):
        self.count = 0
        build = step_plan.StepPlan._new_group_plan

        def counted(plan, *args):
            self.count += 1
            return build(plan, *args)
        monkeypatch.setattr(step_plan.StepPlan, "_new_group_plan", counted)


@pytest.mark.parametrize("replace_grads", [True, False], ids=["grads-replaced", "grads-kept"])
def test_a_steady_loop_builds_the_plan_once(monkeypatch, replace_grads):
    counter = RebuildCounter(monkeypatch)
    pair = run("adam", steady, replace_grads=replace_grads)
    assert counter.count == len(pair.ours.param_groups)  # the first step's build, nothing after
    assert all(bucket.native is not None for plan in pair.ours._plan._groups for bucket in plan.buckets)


@pytest.mark.parametrize("scenario, rebuilds", [
    # the first build, then each group whose set of grads changed: steps 1, 2, 4, 5 (2 each), 8 (1), and
    # 2 at each of steps 10, 11, 13, 14, 16, 17, 19, 20, 22, 23
    ("some grads None on some steps", 2 + 8 + 1 + 20),
    ("add_param_group mid-run", 2 + 3),
    ("a parameter replaced in group['params']", 2 + 1),
    ("opt.state cleared", 2 + 2),
])
def test_each_change_rebuilds_what_it_touches(monkeypatch, scenario, rebuilds):
    counter = RebuildCounter(monkeypatch)
    run("adam", SCENARIOS[scenario])
    assert counter.count == rebuilds


def test_the_plan_lets_go_of_the_grads_after_the_step():
    """A grad set to None after a step is freed: the plan holds no reference
    to it (one would keep every grad alive through zero_grad(set_to_none=True)).
    A tensor held in C++ keeps its Python object alive, so the weak
    reference would still answer."""
    p = torch.randn(1000, requires_grad=True)
    opt = FusedAdam([p], lr=0.1)
    for _ in range(2):
        p.grad = torch.randn(1000)
        opt.step()
        grad = weakref.ref(p.grad)
        p.grad = None
        gc.collect()
        assert grad() is None


def test_a_bad_grad_in_a_later_group_changes_nothing():
    """The grads of every group are checked before any group is updated."""
    params = [torch.randn(3, requires_grad=True), torch.randn(4, requires_grad=True)]
    opt = FusedAdam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    for _ in range(2):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    before = [p.detach().clone() for p in params] + [opt.state[p]["exp_avg"].clone() for p in params]
    params[0].grad = torch.ones(3)
    params[1].grad = torch.ones(4).to_sparse()
    with pytest.raises(TypeError, match=r"params\[0\] of param group 1 has a sparse gradient"):
        opt.step()
    after = [p.detach() for p in params] + [opt.state[p]["exp_avg"] for p in params]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    params[1].grad = torch.ones(4)
    opt.step()  # and the plan recovers
    assert not torch.equal(params[0].detach(), before[0])


def test_a_saved_state_dict_holds_plain_dicts():
    """torch.load(weights_only=True) takes what state_dict() gives."""
    import io
    p = torch.randn(3, requires_grad=True)
    opt = FusedSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(3)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert type(loaded["state"][0]) is dict
    assert type(copy.deepcopy(opt.state)[p]) is dict
