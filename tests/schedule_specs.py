"""Schedules described once, built twice: as ours (lrsched_fused.schedules)
and as torch's (torch.optim.lr_scheduler on a torch optimizer), so each test
can drive the two side by side.

A spec is a dict: {"name": "StepLR", "kwargs": {...}} for a plain schedule,
{"name": "SequentialLR", "schedulers": [spec, ...], "milestones": [...]} or
{"name": "ChainedScheduler", "schedulers": [spec, ...]} for a composite.
"""
from __future__ import annotations

from typing import List

import torch

from lrsched_fused import schedules, torch_reference


def leaf(name: str, **kwargs) -> dict:
    return {"name": name, "kwargs": kwargs}


def sequential(schedulers: List[dict], milestones: List[int]) -> dict:
    return {"name": "SequentialLR", "schedulers": schedulers, "milestones": milestones}


def chained(schedulers: List[dict]) -> dict:
    return {"name": "ChainedScheduler", "schedulers": schedulers}


def needs_metric(spec: dict) -> bool:
    if "schedulers" in spec:
        return any(needs_metric(s) for s in spec["schedulers"])
    return spec["name"] == "ReduceLROnPlateau"


def ours(spec: dict) -> schedules.Schedule:
    if spec["name"] == "SequentialLR":
        return schedules.SequentialLR([ours(s) for s in spec["schedulers"]], spec["milestones"])
    if spec["name"] == "ChainedScheduler":
        return schedules.ChainedScheduler([ours(s) for s in spec["schedulers"]])
    return getattr(schedules, spec["name"])(**spec["kwargs"])


def torchs(spec: dict, optimizer):
    """torch's scheduler for the spec on `optimizer`: built from the spec's own
    arguments for a plain torch schedule, by lrsched_fused.torch_reference for
    a composite or a transformers schedule (transformers' LambdaLR)."""
    if "schedulers" not in spec and hasattr(torch.optim.lr_scheduler, spec["name"]):
        return getattr(torch.optim.lr_scheduler, spec["name"])(optimizer, **spec["kwargs"])
    return torch_reference.torch_scheduler(ours(spec), optimizer)


def describe(spec: dict) -> str:
    if "schedulers" in spec:
        inner = ", ".join(describe(s) for s in spec["schedulers"])
        extra = f" @{spec['milestones']}" if "milestones" in spec else ""
        return f"{spec['name']}[{inner}]{extra}"
    args = ",".join(f"{k}={v}" for k, v in spec["kwargs"].items())
    return f"{spec['name']}({args})"
