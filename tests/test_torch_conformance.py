"""The generic properties torch's own optimizer tests (test/test_optim.py)
check on every optimizer of ``optim_db``, checked on every optimizer of this
package beside the torch.optim optimizer it stands in for: named parameters,
state_dicts with hooks and edits, copies, non-parameter state, checkpoints
older than a flag, param groups edited by hand or as a list, zero grads,
printing. Each check runs both and compares ours to torch's.

The configurations are torch's: each row's ``OptimizerInput`` list from
``torch.testing._internal.common_optimizers`` (importing it needs the
test-only package ``expecttest``; tests/build.sh installs it), less the keys
that choose torch's implementation. An optimizer joins by adding a row.

The reference is torch's fused CPU implementation, which rounds as ours does
(tests/conftest.py): parameters are compared exactly.
"""
from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import pytest
import torch
from torch.testing._internal.common_optimizers import optim_db

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, schedules


@dataclass(frozen=True)
class Row:
    ours: type
    reference: type  # the torch.optim optimizer, with an OptimizerInfo in optim_db


ROWS: Dict[str, Row] = {
    "FusedSGD": Row(FusedSGD, torch.optim.SGD),
    "FusedAdam": Row(FusedAdam, torch.optim.Adam),
    "FusedAdamW": Row(FusedAdamW, torch.optim.AdamW),
}

# Keys that pick one of torch's implementations; ours has one.
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")


def torch_inputs(row: Row) -> List:
    info = next(info for info in optim_db if info.optim_cls is row.reference)
    return [i for i in info.optim_inputs_func(device="cpu", dtype=torch.float32) if i.params is None]


def configurations():
    for name, row in ROWS.items():
        for optim_input in torch_inputs(row):
            kwargs = {k: v for k, v in optim_input.kwargs.items() if k not in IMPLEMENTATION_KEYS}
            yield pytest.param(row, kwargs, id=f"{name}-{optim_input.desc}")


CONFIGURATIONS = list(configurations())
ROW_PARAMS = [pytest.param(row, id=name) for name, row in ROWS.items()]


# ------------------------------------------------------------------ the pair
def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def reference_kwargs(kwargs: dict) -> dict:
    """torch's fused path with a float lr (tests/torch_pair.py: the reference pair)."""
    lr = kwargs.get("lr")
    return {**kwargs, **({"lr": float(lr)} if isinstance(lr, torch.Tensor) else {}), "fused": True}


def our_kwargs(kwargs: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


@dataclass
class Side:
    """One optimizer on its own copy of the model."""
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    scheduler: Optional[object] = None  # torch's lr_scheduler, on the torch side


def pair(row: Row, kwargs: dict, params_of: Callable = lambda net: net.parameters(),
         schedule: Optional[tuple] = None):
    """(torch side, our side) on equal models; ``schedule``: (name, kwargs) of
    a schedule both have (torch's scheduler, ours in the optimizer)."""
    theirs, ours = model(), model()
    torch_opt = row.reference(params_of(theirs), **reference_kwargs(kwargs))
    extra = {"schedule": getattr(schedules, schedule[0])(**schedule[1])} if schedule else {}
    our_opt = row.ours(params_of(ours), **our_kwargs(kwargs), **extra)
    scheduler = getattr(torch.optim.lr_scheduler, schedule[0])(torch_opt, **schedule[1]) if schedule else None
    return Side(theirs, torch_opt, scheduler), Side(ours, our_opt)


def train(sides: List[Side], steps: int, seed: int, zero: bool = False) -> None:
    """The same grads for every side (of a seeded loss on a seeded batch); a
    schedule step after each optimizer step."""
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed * 1000 + step)
        batch = torch.randn(8, 5, generator=gen)
        for side in sides:
            side.opt.zero_grad()
            side.net(batch).pow(2).mean().backward()
            if zero:
                for p in side.net.parameters():
                    p.grad.zero_()
            side.opt.step()
            if side.scheduler is not None:
                side.scheduler.step()
            elif hasattr(side.opt, "schedule_step"):
                side.opt.schedule_step()


def assert_same_params(reference: Side, side: Side) -> None:
    for (name, a), b in zip(reference.net.named_parameters(), side.net.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


def assert_same_lrs(reference: Side, side: Side) -> None:
    assert [float(g["lr"]) for g in side.opt.param_groups] == [float(g["lr"]) for g in reference.opt.param_groups]


def comparable(group: dict) -> dict:
    """A saved param group's entries both sides write (lr as a float)."""
    skip = set(IMPLEMENTATION_KEYS) | {"initial_lr"}
    return {k: float(v) if k == "lr" else v for k, v in group.items() if k not in skip}


# ------------------------------------------------------- named parameters
@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_named_parameters_step_and_save_as_torch(row, kwargs):
    theirs, ours = pair(row, kwargs, lambda net: net.named_parameters())
    train([theirs, ours], 3, seed=1)
    assert_same_params(theirs, ours)
    saved_theirs, saved_ours = theirs.opt.state_dict(), ours.opt.state_dict()
    assert saved_ours["param_groups"][0]["param_names"] == saved_theirs["param_groups"][0]["param_names"] \
        == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # Loading keeps the names the state_dict brings, or the optimizer's own where it brings none.
    for saved in (saved_theirs, saved_ours):
        for side in (theirs, ours):
            renamed = copy.deepcopy(saved)
            renamed["param_groups"][0]["param_names"] = ["a", "b", "c", "d"]
            side.opt.load_state_dict(renamed)
            assert side.opt.param_groups[0]["param_names"] == ["a", "b", "c", "d"]
            unnamed = copy.deepcopy(saved)
            del unnamed["param_groups"][0]["param_names"]
            side.opt.load_state_dict(unnamed)
            assert side.opt.param_groups[0]["param_names"] == ["a", "b", "c", "d"]
    train([theirs, ours], 2, seed=2)
    assert_same_params(theirs, ours)


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_groups_of_named_parameters_as_torch(row):
    def groups(net):
        named = list(net.named_parameters())
        return [{"params": named[:2]}, {"params": named[2:], "lr": 0.05}]

    theirs, ours = pair(row, {"lr": 0.01}, groups)
    train([theirs, ours], 3, seed=3)
    assert_same_params(theirs, ours)
    assert [g["param_names"] for g in ours.opt.state_dict()["param_groups"]] == \
        [g["param_names"] for g in theirs.opt.state_dict()["param_groups"]]
    for side in (theirs, ours):  # a group without names beside named ones: both refuse it
        with pytest.raises(ValueError, match="with/without names"):
            side.opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    net = model()
    mixed = [("w", net[0].weight), net[0].bias]
    with pytest.raises(ValueError):
        row.reference(mixed, lr=0.1)
    with pytest.raises(ValueError, match="mix"):
        row.ours(mixed, lr=0.1)


# ------------------------------------------------- state_dicts and hooks
@pytest.mark.parametrize("how", ["edited state_dict", "load pre-hook", "load post-hook"])
@pytest.mark.parametrize("row", ROW_PARAMS)
def test_a_loaded_or_hooked_lr_is_the_lr_torch_steps_with(row, how):
    """torch's optimizer steps with the lr its loaded param group holds (or
    that a load hook set), and its chainable scheduler goes on from it."""
    theirs, ours = pair(row, {"lr": 0.02}, schedule=("StepLR", {"step_size": 2, "gamma": 0.5}))
    train([theirs, ours], 3, seed=4)
    for side in (theirs, ours):
        saved = side.opt.state_dict()
        if how == "edited state_dict":
            saved["param_groups"][0]["lr"] = 0.5
        elif how == "load pre-hook":
            side.opt.register_load_state_dict_pre_hook(
                lambda opt, state_dict: state_dict["param_groups"][0].update(lr=0.5))
        else:
            side.opt.register_load_state_dict_post_hook(lambda opt: opt.param_groups[0].update(lr=0.5))
        side.opt.load_state_dict(saved)
    if how != "load post-hook":  # a post-hook's lr is taken at the next step, as one set by hand
        assert_same_lrs(theirs, ours)
    train([theirs, ours], 4, seed=5)
    assert_same_lrs(theirs, ours)
    assert float(theirs.opt.param_groups[0]["lr"]) == 0.125  # 0.5, halved twice: the check is not vacuous
    assert_same_params(theirs, ours)


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_state_dict_hooks_run_as_torch(row):
    """torch's test_state_dict_pre_hook / post_hook and the load hooks with
    prepend: the order they run in and what they write."""
    theirs, ours = pair(row, {"lr": 0.01})
    train([theirs, ours], 2, seed=6)
    results = []
    for side in (theirs, ours):
        calls = []
        opt = side.opt
        opt.register_state_dict_pre_hook(lambda o: o.state.__setitem__("saving", True))
        opt.register_state_dict_post_hook(lambda o, sd: {**sd, "saved_by": "post-hook"})
        opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("pre 2"))
        opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("pre 1"), prepend=True)
        opt.register_load_state_dict_post_hook(lambda o: calls.append(("post", o.state.get("loaded"))))
        opt.register_load_state_dict_post_hook(lambda o: o.state.__setitem__("loaded", True), prepend=True)
        saved = opt.state_dict()
        opt.load_state_dict(saved)
        results.append((saved["saved_by"], saved["state"]["saving"], calls, opt.state["loaded"]))
    assert results[1] == results[0] == ("post-hook", True, ["pre 1", "pre 2", ("post", True)], True)
    train([theirs, ours], 2, seed=7)
    assert_same_params(theirs, ours)


# ------------------------------------------------------------------ copies
def deep_copied(opt):
    return copy.deepcopy(opt)


def pickled(opt):
    return pickle.loads(pickle.dumps(opt))


def torch_saved(opt):
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("copier", [deep_copied, pickled, torch_saved], ids=["deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_a_copy_steps_on_like_torchs_copy(row, kwargs, copier):
    theirs, ours = pair(row, kwargs)
    train([theirs, ours], 3, seed=8)
    copies = []
    for side in (theirs, ours):
        copied = copier({"net": side.net, "opt": side.opt})  # one copy, so the optimizer holds the copied model's params
        copies.append(Side(copied["net"], copied["opt"]))
        assert {k for k in vars(copied["opt"]) if not k.startswith("_")} == \
            {k for k in vars(side.opt) if not k.startswith("_")}
    train([theirs, ours, *copies], 3, seed=9)
    for side in (ours, *copies):
        assert_same_params(theirs, side)
    assert ours.opt.state_dict()["param_groups"] == copies[1].opt.state_dict()["param_groups"]


@pytest.mark.parametrize("copier", [deep_copied, pickled, torch_saved], ids=["deepcopy", "pickle", "torch.save"])
def test_a_copy_goes_on_with_the_schedule_as_torchs_pair(copier):
    """The copy holds its own schedule state, its groups' lrs view it, and
    it goes on with torch's scheduler (built on torch's copy, its state loaded)."""
    theirs, ours = pair(ROWS["FusedAdam"], {"lr": 0.1}, schedule=("CosineAnnealingLR", {"T_max": 4}))
    train([theirs, ours], 3, seed=10)
    copies = []
    for side in (theirs, ours):
        copied = copier({"net": side.net, "opt": side.opt})
        copies.append(Side(copied["net"], copied["opt"]))
    copies[0].scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(copies[0].opt, T_max=4)
    copies[0].scheduler.load_state_dict(theirs.scheduler.state_dict())
    our_copy = copies[1].opt
    assert torch.equal(our_copy.schedule_state, ours.opt.schedule_state)
    assert our_copy.schedule_state.data_ptr() != ours.opt.schedule_state.data_ptr()
    assert our_copy.param_groups[0]["lr"].data_ptr() == our_copy.lr_tensor.data_ptr()
    train(copies, 5, seed=11)
    assert_same_lrs(*copies)
    assert_same_params(*copies)


# ------------------------------------------------------- non-parameter state
@pytest.mark.parametrize("row", ROW_PARAMS)
def test_state_keeps_values_that_are_not_a_parameters_state(row):
    theirs, ours = pair(row, {"lr": 0.01, "weight_decay": 0.1})
    train([theirs, ours], 2, seed=12)
    for side in (theirs, ours):
        side.opt.state["note"] = 1
        side.opt.register_load_state_dict_post_hook(lambda opt: opt.state.__setitem__("loaded", True))
    train([theirs, ours], 1, seed=13)
    saved_theirs, saved_ours = theirs.opt.state_dict(), ours.opt.state_dict()
    assert saved_ours["state"]["note"] == saved_theirs["state"]["note"] == 1
    theirs.opt.load_state_dict(saved_theirs)
    ours.opt.load_state_dict(saved_ours)
    assert ours.opt.state["loaded"] is theirs.opt.state["loaded"] is True
    assert ours.opt.state["note"] == theirs.opt.state["note"] == 1
    train([theirs, ours], 2, seed=14)
    assert_same_params(theirs, ours)


# ------------------------------------------- checkpoints older than a flag
@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_a_checkpoint_from_an_older_torch_loads_with_torchs_defaults(row, kwargs):
    """torch's state_dict without the flags older torch versions did not
    write (every bool/None entry of a group: maximize, foreach, amsgrad,
    decoupled_weight_decay, ...), with steps as Python numbers: torch fills
    in its defaults; so does ours, and both go on alike."""
    source, _ = pair(row, kwargs)
    train([source], 3, seed=15)
    old = copy.deepcopy(source.opt.state_dict())
    dropped = set()
    for group in old["param_groups"]:
        for key in [k for k, v in group.items() if v is None or isinstance(v, bool)]:
            dropped.add(key)
            del group[key]
    for state in old["state"].values():
        if "step" in state:
            state["step"] = float(state["step"])
    assert "maximize" in dropped
    theirs, ours = pair(row, kwargs)
    for side in (theirs, ours):
        side.net.load_state_dict(source.net.state_dict())
        side.opt.load_state_dict(copy.deepcopy(old))
    for key in dropped - set(IMPLEMENTATION_KEYS):
        assert ours.opt.param_groups[0][key] == theirs.opt.param_groups[0][key], key
    train([theirs, ours], 3, seed=16)
    assert_same_params(theirs, ours)


@pytest.mark.parametrize("source", ["torch Adam", "FusedAdam"])
def test_adamw_loading_an_adam_state_dict_keeps_decoupled_weight_decay(source):
    adam_cls = torch.optim.Adam if source == "torch Adam" else FusedAdam
    net = model()
    adam = adam_cls(net.parameters(), lr=0.01, weight_decay=0.1)
    train([Side(net, adam)], 2, seed=17)
    theirs, ours = pair(ROWS["FusedAdamW"], {"lr": 0.01, "weight_decay": 0.1})
    for side in (theirs, ours):
        side.net.load_state_dict(net.state_dict())
        side.opt.load_state_dict(adam.state_dict())
    assert ours.opt.param_groups[0]["decoupled_weight_decay"] is theirs.opt.param_groups[0][
        "decoupled_weight_decay"] is True
    train([theirs, ours], 3, seed=18)
    assert_same_params(theirs, ours)


# ----------------------------------------------------- param groups edited
@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_a_group_appended_to_the_list_steps_as_torch(row, kwargs):
    """torch's tests append to param_groups instead of add_param_group;
    ours adopts the group as add_param_group would."""
    theirs, ours = pair(row, kwargs)
    train([theirs, ours], 2, seed=19)
    for side in (theirs, ours):
        extra = torch.nn.Linear(3, 2)
        torch.nn.init.constant_(extra.weight, 0.3)
        torch.nn.init.constant_(extra.bias, -0.1)
        side.net.append(extra)
        defaults = {k: v for k, v in side.opt.defaults.items() if k not in ("params", "lr")}
        side.opt.param_groups.append({**defaults, "params": list(extra.parameters()), "lr": 0.03})
    train([theirs, ours], 3, seed=20)
    assert_same_params(theirs, ours)
    assert [comparable(g) for g in ours.opt.state_dict()["param_groups"]] == \
        [comparable(g) for g in theirs.opt.state_dict()["param_groups"]]


@pytest.mark.parametrize("row", ROW_PARAMS)
def test_groups_repeated_in_the_list_are_refused_naming_add_param_group(row):
    """torch's test_state_dict_deterministic extends param_groups with
    itself; a schedule cannot give one parameter two lrs, so ours refuses at
    the next step() and state_dict() (never an IndexError) and names the way."""
    theirs, ours = pair(row, {"lr": 0.01})
    train([theirs, ours], 1, seed=21)
    theirs.opt.param_groups.extend(theirs.opt.param_groups)
    assert len(theirs.opt.state_dict()["param_groups"]) == 2  # torch's accepts it
    ours.opt.param_groups.extend(ours.opt.param_groups)
    for call in (ours.opt.step, ours.opt.state_dict):
        with pytest.raises(ValueError, match="add_param_group"):
            call()


@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_hyperparameters_edited_between_steps_as_torch(row, kwargs):
    theirs, ours = pair(row, kwargs)
    train([theirs, ours], 2, seed=22)
    for side in (theirs, ours):
        group = side.opt.param_groups[0]
        group["lr"] = float(group["lr"]) * 3
        group["weight_decay"] = 0.05
        group["maximize"] = not group["maximize"]
    train([theirs, ours], 3, seed=23)
    assert_same_params(theirs, ours)


# ------------------------------------------------------- zero grads, printing
@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_zero_grads_do_nothing_as_torch(row, kwargs):
    theirs, ours = pair(row, kwargs)
    before = [p.detach().clone() for p in ours.net.parameters()]
    train([theirs, ours], 2, seed=24, zero=True)
    assert_same_params(theirs, ours)
    if ours.opt.defaults["weight_decay"] == 0:  # (AdamW decays by default)
        assert all(torch.equal(p, b) for p, b in zip(ours.net.parameters(), before))


@pytest.mark.parametrize("row,kwargs", CONFIGURATIONS)
def test_printing_shows_torchs_entries(row, kwargs):
    theirs, ours = pair(row, kwargs)
    text = repr(ours.opt)
    assert text.startswith(f"{row.ours.__name__} (") and "Parameter Group 0" in text
    for key, value in theirs.opt.param_groups[0].items():
        if key not in (*IMPLEMENTATION_KEYS, "params", "lr"):
            assert f"    {key}: {value}\n" in text, key
    assert f"lr: {float(theirs.opt.param_groups[0]['lr'])}" in text
