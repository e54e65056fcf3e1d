"""Schedules described once, built twice: as ours (lrsched_fused.schedules)
and as torch's (torch.optim.lr_scheduler on a torch optimizer), so each test
can drive the two side by side.

A spec is a dict: {"name": "StepLR", "kwargs": {...}} for a plain schedule,
{"name": "SequentialLR", "schedulers": [spec, ...], "milestones": [...]} or
{"name": "ChainedScheduler", "schedulers": [spec, ...]} for a composite.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from lrsched_fused import schedules
from lrsched_fused.testing import torch_reference


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


def ours(spec: Optional[dict]) -> Optional[schedules.Schedule]:
    """Our schedule of a spec (None: no schedule)."""
    if spec is None:
        return None
    if spec["name"] == "SequentialLR":
        return schedules.SequentialLR([ours(s) for s in spec["schedulers"]], spec["milestones"])
    if spec["name"] == "ChainedScheduler":
        return schedules.ChainedScheduler([ours(s) for s in spec["schedulers"]])
    return getattr(schedules, spec["name"])(**spec["kwargs"])


def torchs(spec: dict, optimizer):
    """torch's scheduler for the spec on `optimizer`: built from the spec's own
    arguments for a plain torch schedule, by lrsched_fused.testing.torch_reference for
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


def run_for(spec: dict, epochs: int, steps_per_epoch: int = 1) -> dict:
    """The spec with the horizon a table runs it for (ours() and torchs() ignore it)."""
    return {**spec, "epochs": epochs, "steps_per_epoch": steps_per_epoch}


CONSTANT = leaf("Constant")  # schedule=None; torch's side has no scheduler

# ------------------------------------------------------------------ the tables
# Every schedule configuration the tests use, named; each file imports its table.

# tests/test_against_torch.py, tests/test_grad_clipping.py: horizons cross
# every step_size, T_max to 2.5 x T_max (torch's cosine does not clamp),
# patience and cooldown; at least 300 steps each.
PAIR_SCHEDULES = {
    "StepLR": run_for(leaf("StepLR", step_size=7, gamma=0.5), 25, 12),
    "CosineAnnealingLR": run_for(leaf("CosineAnnealingLR", T_max=10, eta_min=1e-4), 25, 12),
    "ReduceLROnPlateau": run_for(leaf("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1, min_lr=[1e-5, 2e-4]),
                                 30, 10),
    "constant": run_for(CONSTANT, 3, 100),
}

# tests/test_low_precision.py
LOW_PRECISION_SCHEDULES = {
    "cosine": run_for(leaf("CosineAnnealingLR", T_max=10), 25, 12),
    "plateau": run_for(leaf("ReduceLROnPlateau", patience=1, factor=0.5), 30, 10),
}

# tests/test_master_weights.py (run 8 epochs of 2 steps)
MASTER_SCHEDULES = {
    "constant": None,
    "step": leaf("StepLR", step_size=3, gamma=0.5),
    "cosine": leaf("CosineAnnealingLR", T_max=5, eta_min=1e-4),
    "plateau": leaf("ReduceLROnPlateau", patience=1, factor=0.5, cooldown=1),
    "onecycle": leaf("OneCycleLR", max_lr=0.05, total_steps=20),  # per step, cycles momentum / beta1
    "sequential": sequential([leaf("LinearLR", start_factor=0.1, total_iters=3),
                              leaf("ExponentialLR", gamma=0.8)], [3]),
    "chained": chained([leaf("StepLR", step_size=2, gamma=0.7), leaf("ExponentialLR", gamma=0.95)]),
}

# tests/test_edge_cases.py
EDGE_SCHEDULES = {
    "StepLR": leaf("StepLR", step_size=2, gamma=0.5),
    "CosineAnnealingLR": leaf("CosineAnnealingLR", T_max=3, eta_min=1e-3),
    "ReduceLROnPlateau": leaf("ReduceLROnPlateau", patience=0, cooldown=1, factor=0.5),
}

# tests/test_all_schedules.py: every schedule and composite, each with a
# horizon (its "epochs", in schedule steps) that crosses every milestone,
# restart and phase boundary.
EVERY_SCHEDULE = {name: run_for(spec, horizon) for name, (spec, horizon) in {
    "StepLR": (leaf("StepLR", step_size=3, gamma=0.5), 20),
    "MultiStepLR": (leaf("MultiStepLR", milestones=[2, 5, 5, 9], gamma=0.5), 15),
    "MultiStepLR, milestone 0": (leaf("MultiStepLR", milestones=[0, 3], gamma=0.3), 6),
    "ExponentialLR": (leaf("ExponentialLR", gamma=0.9), 30),
    "ConstantLR": (leaf("ConstantLR"), 10),
    "ConstantLR, factor 0.5, 0 iters": (leaf("ConstantLR", factor=0.5, total_iters=0), 4),
    "ConstantLR, factor 0.1, 3 iters": (leaf("ConstantLR", factor=0.1, total_iters=3), 6),
    "LinearLR": (leaf("LinearLR"), 10),
    "LinearLR, warmup 0.1 to 1 over 10": (leaf("LinearLR", start_factor=0.1, end_factor=1.0, total_iters=10), 14),
    "LinearLR, decay 1 to 0.2 over 7": (leaf("LinearLR", start_factor=1.0, end_factor=0.2, total_iters=7), 10),
    "LinearLR, to 0": (leaf("LinearLR", start_factor=0.5, end_factor=0.0, total_iters=4), 7),
    "PolynomialLR": (leaf("PolynomialLR"), 8),
    "PolynomialLR, power 2 over 8": (leaf("PolynomialLR", total_iters=8, power=2.0), 12),
    "PolynomialLR, power 0.5 over 3": (leaf("PolynomialLR", total_iters=3, power=0.5), 5),
    "CosineAnnealingLR": (leaf("CosineAnnealingLR", T_max=6, eta_min=0.001), 30),
    "CosineAnnealingWarmRestarts": (leaf("CosineAnnealingWarmRestarts", T_0=3), 20),
    "CosineAnnealingWarmRestarts, T_mult 2": (
        leaf("CosineAnnealingWarmRestarts", T_0=2, T_mult=2, eta_min=0.001), 40),
    "CosineAnnealingWarmRestarts, T_mult 3": (leaf("CosineAnnealingWarmRestarts", T_0=1, T_mult=3), 45),
    "OneCycleLR": (leaf("OneCycleLR", max_lr=0.5, total_steps=20), 20),
    "OneCycleLR, linear": (leaf("OneCycleLR", max_lr=0.5, total_steps=17, anneal_strategy="linear"), 17),
    "OneCycleLR, three_phase": (leaf("OneCycleLR", max_lr=0.4, total_steps=25, three_phase=True), 25),
    "OneCycleLR, three_phase, linear, pct 0.4": (
        leaf("OneCycleLR", max_lr=0.4, total_steps=21, three_phase=True, anneal_strategy="linear", pct_start=0.4),
        21),
    "OneCycleLR, per-group max_lr and momentum": (
        leaf("OneCycleLR", max_lr=[0.5, 0.2, 1.0], total_steps=16, base_momentum=[0.8, 0.85, 0.7],
             max_momentum=[0.9, 0.95, 0.99], div_factor=10.0, final_div_factor=100.0), 16),
    "OneCycleLR, no momentum, epochs x steps": (
        leaf("OneCycleLR", max_lr=0.3, epochs=3, steps_per_epoch=5, cycle_momentum=False), 15),
    "CyclicLR": (leaf("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4), 30),
    "CyclicLR, triangular2": (leaf("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2"), 30),
    "CyclicLR, exp_range": (
        leaf("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=5, mode="exp_range", gamma=0.9),
        30),
    "CyclicLR, per-group, no momentum": (
        leaf("CyclicLR", base_lr=[0.01, 0.02, 0.001], max_lr=[0.1, 0.3, 0.01], step_size_up=5, step_size_down=2,
             cycle_momentum=False), 25),
    "ReduceLROnPlateau": (leaf("ReduceLROnPlateau", patience=1, cooldown=2, factor=0.5), 33),
    # transformers' schedules (transformers' own LambdaLR on the torch side; tests/test_transformers_schedules.py
    # checks them against transformers.get_scheduler by name)
    "ConstantWithWarmup": (leaf("ConstantWithWarmup", num_warmup_steps=4), 8),
    "LinearWithWarmup": (leaf("LinearWithWarmup", num_warmup_steps=3, num_training_steps=12), 15),
    "CosineWithWarmup, min_lr": (leaf("CosineWithWarmup", num_warmup_steps=3, num_training_steps=15, min_lr=1e-3),
                                 20),
    "CosineWithHardRestarts": (leaf("CosineWithHardRestarts", num_warmup_steps=2, num_training_steps=20,
                                    num_cycles=3), 24),
    "PolynomialDecayWithWarmup, per-group lr_init": (
        leaf("PolynomialDecayWithWarmup", num_warmup_steps=2, num_training_steps=12, lr_end=1e-3, power=2.0), 15),
    "PolynomialDecayWithWarmup, lr_init": (
        leaf("PolynomialDecayWithWarmup", num_warmup_steps=2, num_training_steps=12, lr_init=0.1), 15),
    "InverseSqrt": (leaf("InverseSqrt", num_warmup_steps=4, timescale=6), 20),
    "CosineWarmupWithMinLr": (leaf("CosineWarmupWithMinLr", num_warmup_steps=4, num_training_steps=14,
                                   min_lr_rate=0.1, warmup_lr_rate=0.05), 18),
    "WarmupStableDecay": (leaf("WarmupStableDecay", num_warmup_steps=3, num_decay_steps=5, num_training_steps=14,
                               warmup_type="cosine", decay_type="1-sqrt", min_lr_ratio=0.1), 18),
    # composites
    "SequentialLR: linear warmup, cosine": (
        sequential([leaf("LinearLR", start_factor=0.1, total_iters=5), leaf("CosineAnnealingLR", T_max=20)], [5]),
        40),
    "SequentialLR: constant, exponential, step": (
        sequential([leaf("ConstantLR", factor=0.5, total_iters=3), leaf("ExponentialLR", gamma=0.9),
                    leaf("StepLR", step_size=3, gamma=0.5)], [4, 10]), 20),
    "SequentialLR: warmup, warm restarts": (
        sequential([leaf("LinearLR", start_factor=0.2, total_iters=6),
                    leaf("CosineAnnealingWarmRestarts", T_0=4, T_mult=2, eta_min=1e-4)], [6]), 40),
    "SequentialLR: multistep, polynomial, linear, constant": (
        sequential([leaf("MultiStepLR", milestones=[1, 3], gamma=0.5), leaf("PolynomialLR", total_iters=4),
                    leaf("LinearLR", start_factor=0.3, end_factor=0.9, total_iters=3),
                    leaf("ConstantLR", factor=0.25, total_iters=2)], [4, 9, 13]), 20),
    "SequentialLR: milestone 1": (
        sequential([leaf("ExponentialLR", gamma=0.5), leaf("CosineAnnealingLR", T_max=3)], [1]), 10),
    "ChainedScheduler: constant, exponential": (
        chained([leaf("ConstantLR", factor=0.5, total_iters=4), leaf("ExponentialLR", gamma=0.95)]), 12),
    "ChainedScheduler: warmup, cosine": (
        chained([leaf("LinearLR", start_factor=0.2, total_iters=5), leaf("CosineAnnealingLR", T_max=10)]), 25),
    "ChainedScheduler: step, multistep, polynomial": (
        chained([leaf("StepLR", step_size=3, gamma=0.5), leaf("MultiStepLR", milestones=[4, 8], gamma=0.3),
                 leaf("PolynomialLR", total_iters=12, power=1.5)]), 16),
    "SequentialLR: linear warmup, transformers cosine, constant": (
        sequential([leaf("LinearLR", start_factor=0.1, total_iters=4),
                    leaf("CosineWithWarmup", num_warmup_steps=0, num_training_steps=12, min_lr_rate=0.05),
                    leaf("ConstantWithWarmup", num_warmup_steps=3)], [4, 14]), 22),
    "SequentialLR: WSD, exponential": (
        sequential([leaf("WarmupStableDecay", num_warmup_steps=2, num_decay_steps=4, num_stable_steps=3,
                         decay_type="linear", min_lr_ratio=0.2),
                    leaf("ExponentialLR", gamma=0.9)], [9]), 16),
    "ChainedScheduler: inverse sqrt, exponential": (
        chained([leaf("InverseSqrt", num_warmup_steps=3), leaf("ExponentialLR", gamma=0.95)]), 15),
    "ChainedScheduler: step, polynomial decay": (
        chained([leaf("StepLR", step_size=2, gamma=0.5),
                 leaf("PolynomialDecayWithWarmup", num_warmup_steps=2, num_training_steps=10, power=1.5)]), 14),
    # ReduceLROnPlateau in a composite: torch's stepped by hand (tests/schedule_specs.py)
    "SequentialLR: warmup, plateau": (
        sequential([leaf("LinearLR", start_factor=0.1, total_iters=5),
                    leaf("ReduceLROnPlateau", patience=1, cooldown=2, factor=0.5)], [5]), 40),
    "SequentialLR: constant, plateau max abs": (
        sequential([leaf("ConstantLR", factor=0.25, total_iters=2),
                    leaf("ReduceLROnPlateau", mode="max", threshold_mode="abs", threshold=0.01, patience=0)], [3]),
        30),
    "SequentialLR: WSD, plateau": (
        sequential([leaf("WarmupStableDecay", num_warmup_steps=3, num_decay_steps=4, num_training_steps=10),
                    leaf("ReduceLROnPlateau", patience=1, factor=0.5)], [8]), 25),
    "SequentialLR: plateau, cosine": (
        sequential([leaf("ReduceLROnPlateau", patience=0), leaf("CosineAnnealingLR", T_max=5)], [8]), 20),
    "ChainedScheduler: exponential, plateau": (
        chained([leaf("ExponentialLR", gamma=0.99), leaf("ReduceLROnPlateau", patience=2, min_lr=0.01)]), 35),
}.items()}

# tests/test_no_sync.py: one of each kind of device work (None: no schedule)
NO_SYNC_SCHEDULES = {
    "none": None,
    "step": leaf("StepLR", step_size=2),
    "cosine": leaf("CosineAnnealingLR", T_max=3),
    "plateau": leaf("ReduceLROnPlateau", patience=0),
    "warmup then plateau": sequential([leaf("LinearLR", start_factor=0.1, total_iters=2),
                                       leaf("ReduceLROnPlateau", patience=0)], [2]),
    "one cycle (momentum on the device)": leaf("OneCycleLR", max_lr=0.1, total_steps=10),
    "cyclic": leaf("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=2, mode="exp_range", gamma=0.9),
    "chained": chained([leaf("ConstantLR"), leaf("ExponentialLR", gamma=0.9)]),
    "warm restarts": leaf("CosineAnnealingWarmRestarts", T_0=2, T_mult=2),
}

# tests/test_memory.py: (spec, schedule_interval)
MEMORY_SCHEDULES = {
    "none": (None, "epoch"),
    "StepLR": (leaf("StepLR", step_size=1, gamma=0.9), "epoch"),
    "StepLR per step": (leaf("StepLR", step_size=1, gamma=0.9), "step"),
    "Cosine": (leaf("CosineAnnealingLR", T_max=2), "epoch"),
    "Cosine per step": (leaf("CosineAnnealingLR", T_max=2), "step"),
    "Plateau, tensor metric": (leaf("ReduceLROnPlateau", patience=0), "epoch"),
    "Plateau, float metric": (leaf("ReduceLROnPlateau", patience=0), "epoch"),
}

# tests/test_state_dict.py
STATE_DICT_SCHEDULES = {
    "step": leaf("StepLR", step_size=3, gamma=0.5),
    "cosine": leaf("CosineAnnealingLR", T_max=4, eta_min=1e-3),
    "plateau": leaf("ReduceLROnPlateau", patience=1, cooldown=2, factor=0.5),
}

# tests/test_integrations.py (as_lr_scheduler driven as transformers' Trainer drives a scheduler)
INTEGRATION_SCHEDULES = {
    "StepLR": leaf("StepLR", step_size=3, gamma=0.5),
    "CosineAnnealingLR": leaf("CosineAnnealingLR", T_max=5, eta_min=1e-3),
    "ReduceLROnPlateau": leaf("ReduceLROnPlateau", factor=0.5, patience=1, cooldown=1),
}

# tests/test_cuda.py (100 epochs of 3 steps)
CUDA_SCHEDULES = {
    "step": leaf("StepLR", step_size=10, gamma=0.5),
    "cosine": leaf("CosineAnnealingLR", T_max=30, eta_min=1e-4),
    "plateau": leaf("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1, threshold=1e-3, min_lr=1e-4),
    "warmup-cosine": sequential([leaf("LinearLR", start_factor=0.1, total_iters=5),
                                 leaf("CosineAnnealingLR", T_max=40)], [5]),
    "warmup-plateau": sequential([leaf("LinearLR", start_factor=0.1, total_iters=5),
                                  leaf("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1, threshold=1e-3,
                                       min_lr=1e-4)], [5]),
    "chained": chained([leaf("ConstantLR", factor=0.5, total_iters=7), leaf("ExponentialLR", gamma=0.97),
                        leaf("MultiStepLR", milestones=[20, 50, 50], gamma=0.5)]),
    "restarts": leaf("CosineAnnealingWarmRestarts", T_0=5, T_mult=2, eta_min=1e-4),
    "polynomial": leaf("PolynomialLR", total_iters=80, power=2.0),
    "onecycle": leaf("OneCycleLR", max_lr=0.05, total_steps=100, three_phase=True),
    "cyclic": leaf("CyclicLR", base_lr=1e-3, max_lr=0.05, step_size_up=7, step_size_down=4, mode="exp_range",
                   gamma=0.99),
    # transformers' WSD (transformers' own LambdaLR on the torch side); min_lr_ratio keeps 1 + cos from cancelling
    "transformers-wsd": leaf("WarmupStableDecay", num_warmup_steps=5, num_training_steps=95, num_decay_steps=20,
                             warmup_type="cosine", min_lr_ratio=0.1),
}
