"""The stock torch optimizer + scheduler pair and ours, driven side by side
with the same parameters and the same gradients, step by step."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, schedules

TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
OUR_OPTIMIZERS = {"sgd": FusedSGD, "adam": FusedAdam, "adamw": FusedAdamW}

# Every OptimizerInput that torch/testing/_internal/common_optimizers.py lists for
# SGD, Adam and AdamW (CPU and CUDA lists), transcribed: importing that module
# needs torch's test-only dependencies. Keys that select torch implementations
# (capturable, foreach, fused) are dropped: ours is always fused and capturable.
TORCH_OPTIMIZER_INPUTS = {
    "sgd": {
        "default": {},
        "non-default lr": {"lr": 1e-2},
        "tensor lr": {"lr": torch.tensor(0.001)},
        "non-zero weight_decay": {"weight_decay": 0.5},
        "momentum": {"momentum": 0.9},
        "maximize": {"weight_decay": 0.1, "maximize": True},
        "dampening": {"momentum": 0.9, "dampening": 0.5},
        "weight_decay w/ momentum": {"momentum": 0.9, "weight_decay": 0.1},
        "nesterov": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    },
    "adam": {
        "default": {},
        "non-default lr": {"lr": 0.01},
        "nonzero weight_decay": {"weight_decay": 0.1},
        "maximize": {"weight_decay": 0.1, "maximize": True},
        "amsgrad": {"weight_decay": 0.1, "amsgrad": True},
        "capturable": {},
        "capturable, amsgrad": {"weight_decay": 0.1, "amsgrad": True},
        "Tensor lr with capturable and amsgrad": {"lr": torch.tensor(0.001), "amsgrad": True},
        "Tensor lr, Tensor betas, with capturable and amsgrad": {
            "lr": torch.tensor(0.001), "betas": (torch.tensor(0.9), torch.tensor(0.99)), "amsgrad": True},
        "Tensor lr, Tensor betas, with capturable": {
            "lr": torch.tensor(0.001), "betas": (torch.tensor(0.9), torch.tensor(0.99))},
        "Tensor lr": {"lr": torch.tensor(0.01)},
    },
}
TORCH_OPTIMIZER_INPUTS["adamw"] = dict(TORCH_OPTIMIZER_INPUTS["adam"])

# Options beyond torch's list, named.
EXTRA_OPTIMIZER_INPUTS = {
    "sgd": {
        "nesterov, maximize, lr 0.05": {"lr": 0.05, "momentum": 0.8, "nesterov": True, "maximize": True},
        "momentum, dampening, weight_decay": {"lr": 0.02, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.01},
    },
    "adam": {
        "decoupled weight decay": {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        "L2 weight decay, amsgrad, maximize": {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True, "maximize": True},
        "betas (0.5, 0.9), eps 1e-3": {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3},
    },
    "adamw": {
        "amsgrad, maximize": {"lr": 0.01, "amsgrad": True, "maximize": True},
        "weight_decay 0": {"lr": 0.01, "weight_decay": 0.0},
    },
}


def torch_scheduler(name: str, optimizer, kwargs: dict):
    return getattr(torch.optim.lr_scheduler, name)(optimizer, **kwargs)


def our_schedule(name: str, kwargs: dict):
    return getattr(schedules, name)(**kwargs)


def make_params(layout: str, dtype: torch.dtype, seed: int = 0) -> List[List[torch.Tensor]]:
    """Parameter values per group. "mixed": a zero-size tensor, one larger than
    a CPU work block (2**16 elements) and a CUDA chunk, small ones; "many": 520 small tensors."""
    g = torch.Generator().manual_seed(seed)
    if layout == "mixed":
        shapes = [[(4, 5), (0,), (70000,)], [(3,), (10, 3), (7, 1, 2)]]
    elif layout == "many":
        shapes = [[(1 + (i * 7) % 13, 1 + i % 5) for i in range(300)], [(2 + i % 17,) for i in range(220)]]
    elif layout == "single":
        shapes = [[(6, 4), (5,)]]
    else:
        raise ValueError(layout)
    return [[(torch.randn(s, generator=g, dtype=torch.float64) * 0.5).to(dtype) for s in group] for group in shapes]


@dataclass
class PairRun:
    """Per-epoch lrs of both sides and the final parameters."""
    torch_lrs: List[List[float]] = field(default_factory=list)
    our_lrs: List[List[float]] = field(default_factory=list)
    torch_params: List[torch.Tensor] = field(default_factory=list)
    our_params: List[torch.Tensor] = field(default_factory=list)
    # With clipping: each step's total norm, clip_grad_norm_'s and ours (opt.grad_norm).
    torch_norms: List[torch.Tensor] = field(default_factory=list)
    our_norms: List[torch.Tensor] = field(default_factory=list)
    exact_norms: List[float] = field(default_factory=list)  # of the same grads, in float64


PLATEAU_METRICS = [3.0, 2.0, 2.0, 2.1, 2.0, 1.9999, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, float("nan"), 1.5, 1.4,
                   1.4, 1.4, 1.4, 1.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.4, 0.4, float("inf"), 0.4, 0.4, 0.3, 0.3]


def plateau_metric(epoch: int, mode: str = "min") -> float:
    value = PLATEAU_METRICS[epoch % len(PLATEAU_METRICS)] - 0.01 * (epoch // len(PLATEAU_METRICS))
    return -value if mode == "max" else value


def build_pair(kind: str, kwargs: dict, layout: str, dtype: torch.dtype, schedule_name: Optional[str],
               schedule_kwargs: dict, *, interval: str = "epoch", device: str = "cpu", group1_lr_scale=0.5,
               torch_impl: str = "fused", clipping: Optional[dict] = None):
    """(torch optimizer, torch scheduler, our optimizer, torch params, our params)."""
    values = make_params(layout, dtype)
    torch_params = [[v.clone().to(device).requires_grad_() for v in group] for group in values]
    our_params = [[v.clone().to(device).requires_grad_() for v in group] for group in values]

    def groups(params):
        out = [{"params": params[0]}]
        for extra in params[1:]:
            lr = kwargs.get("lr", 1e-3)
            out.append({"params": extra, "lr": (lr.clone() if isinstance(lr, torch.Tensor) else lr) * group1_lr_scale})
        return out

    # The reference pair uses a float lr (DESIGN.md): torch computes a Tensor
    # lr's schedule in the tensor's dtype (float32 here), ours in float64.
    torch_kwargs = dict(kwargs, **({"fused": True} if torch_impl == "fused" else {"foreach": False}))
    if isinstance(torch_kwargs.get("lr"), torch.Tensor):
        torch_kwargs["lr"] = float(torch_kwargs["lr"])
    torch_groups = groups(torch_params)
    for group in torch_groups:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    torch_opt = TORCH_OPTIMIZERS[kind](torch_groups, **torch_kwargs)
    torch_sched = torch_scheduler(schedule_name, torch_opt, schedule_kwargs) if schedule_name else None
    ours_kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    schedule = our_schedule(schedule_name, schedule_kwargs) if schedule_name else None
    our_opt = OUR_OPTIMIZERS[kind](groups(our_params), schedule=schedule, schedule_interval=interval, **ours_kwargs,
                                   **(clipping or {}))
    flat = lambda ps: [p for group in ps for p in group]  # noqa: E731
    return torch_opt, torch_sched, our_opt, flat(torch_params), flat(our_params)


def run_pair(kind: str, kwargs: dict, *, schedule_name: Optional[str], schedule_kwargs: dict, epochs: int,
             steps_per_epoch: int, layout: str = "mixed", dtype=torch.float32, interval: str = "epoch",
             mode: str = "min", none_grad_every: int = 3, device: str = "cpu",
             metric_as_tensor: bool = True, after_step: Optional[Callable] = None,
             torch_impl: str = "fused", clipping: Optional[dict] = None,
             grad_factors: Sequence[float] = (1.0,)) -> PairRun:
    """torch_impl: "fused" (the reference) or "for-loop" (torch's single-tensor path).
    clipping: ours gets these arguments (max_grad_norm, grad_norm_type), the
    reference clips with torch.nn.utils.clip_grad_norm_(foreach=True) before
    its step. Step k's grads are multiplied by grad_factors[k % len]."""
    torch_opt, torch_sched, our_opt, torch_params, our_params = build_pair(
        kind, kwargs, layout, dtype, schedule_name, schedule_kwargs, interval=interval, device=device,
        torch_impl=torch_impl, clipping=clipping)
    plateau = schedule_name == "ReduceLROnPlateau"
    gen = torch.Generator().manual_seed(1)
    run = PairRun()
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            for i, (tp, op) in enumerate(zip(torch_params, our_params)):
                if none_grad_every and i == 0 and step % none_grad_every == 1:
                    tp.grad, op.grad = None, None  # a tensor with no grad on some steps
                    continue
                grad = torch.randn(tp.shape, generator=gen, dtype=torch.float64) * grad_factors[step % len(grad_factors)]
                grad = grad.to(dtype=dtype, device=device)
                tp.grad, op.grad = grad.clone(), grad.clone()
            if clipping:
                p = clipping.get("grad_norm_type", 2.0)
                run.exact_norms.append(float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(t.grad.double(), p) for t in torch_params if t.grad is not None]), p)))
                run.torch_norms.append(torch.nn.utils.clip_grad_norm_(
                    torch_params, clipping["max_grad_norm"], clipping.get("grad_norm_type", 2.0), foreach=True))
            torch_opt.step()
            our_opt.step()
            if clipping:
                run.our_norms.append(our_opt.grad_norm.clone())
            if interval == "step":
                torch_sched.step()
            step += 1
            if after_step is not None:
                after_step(step, torch_opt, our_opt)
        if interval == "epoch" and torch_sched is not None:
            if plateau:
                metric = plateau_metric(epoch, mode)
                torch_sched.step(torch.tensor(metric, dtype=torch.float64) if metric_as_tensor else metric)
                our_opt.schedule_step(torch.tensor(metric, dtype=torch.float64, device=device)
                                      if metric_as_tensor else metric)
            else:
                torch_sched.step()
                our_opt.schedule_step()
        run.torch_lrs.append([float(g["lr"]) for g in torch_opt.param_groups])
        run.our_lrs.append(our_opt.get_last_lr())
    run.torch_params = [p.detach() for p in torch_params]
    run.our_params = [p.detach() for p in our_params]
    return run


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (absolute error when ||b|| == 0)."""
    a, b = ours.double(), reference.double()
    if b.numel() == 0:
        return 0.0
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


# The worst errors seen in this test session, per dtype name, printed at the
# end of the run (tests/conftest.py): {"fp32": {"lr": .., "param": ..}, ...}
WORST_SEEN: Dict[str, Dict[str, float]] = {}


def record_worst(dtype: torch.dtype, lr_error: float, param_error: float) -> None:
    name = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    seen = WORST_SEEN.setdefault(name, {"lr": 0.0, "param": 0.0, "runs": 0})
    seen["lr"] = max(seen["lr"], lr_error)
    seen["param"] = max(seen["param"], param_error)
    seen["runs"] += 1


def worst_param_error(run: PairRun) -> float:
    return max(relative_error(o, t) for o, t in zip(run.our_params, run.torch_params))


def worst_lr_error(run: PairRun) -> float:
    worst = 0.0
    for torch_epoch, our_epoch in zip(run.torch_lrs, run.our_lrs):
        assert len(torch_epoch) == len(our_epoch)
        for t, o in zip(torch_epoch, our_epoch):
            err = abs(o - t) / abs(t) if t != 0 else abs(o - t)
            worst = max(worst, err)
    return worst


def assert_lr_sequences_close(expected, got, what: str, tally: str, *, reference: str = "torch",
                              rtol: float = 1e-12, count_run: bool = True) -> None:
    """Every step, every group: |ours - reference| / |reference| <= rtol
    (absolute where the reference is 0); the worst goes to WORST_SEEN[tally]."""
    assert len(expected) == len(got)
    worst = 0.0
    for step, (e, g) in enumerate(zip(expected, got)):
        assert len(e) == len(g)
        for group, (a, b) in enumerate(zip(e, g)):
            err = abs(a - b) / abs(a) if a != 0 else abs(b)
            assert err <= rtol, f"{what} at schedule step {step}, group {group}: {reference} {a!r}, ours {b!r}"
            worst = max(worst, err)
    seen = WORST_SEEN.setdefault(tally, {"lr": 0.0, "param": 0.0, "runs": 0})
    seen["lr"] = max(seen["lr"], worst)
    seen["runs"] += count_run
