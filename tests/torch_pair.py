"""The stock torch optimizer + scheduler pair and ours, driven side by side
with the same parameters and the same gradients, step by step."""
from __future__ import annotations

import contextlib
import copy
import inspect
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

import schedule_specs
from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD
from lrsched_fused.testing import torch_reference


def lion_reference(params, **kwargs):
    """lion-pytorch's Lion (pinned in tests/build.sh): torch has no Lion. A
    machine without it (the GPU machine, offline) skips the test that asks."""
    import pytest
    Lion = pytest.importorskip("lion_pytorch", reason="lion-pytorch is not installed (tests/build.sh installs it)").Lion
    return Lion(params, **kwargs)


# The reference of each kind: torch's optimizer, or for Lion lion-pytorch's.
TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                    "lion": lion_reference}
OUR_OPTIMIZERS = {"sgd": FusedSGD, "adam": FusedAdam, "adamw": FusedAdamW, "lion": FusedLion}
# References with one implementation: torch_impl does not apply.
SINGLE_IMPLEMENTATION = {"lion"}

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


PLATEAU_METRICS = [3.0, 2.0, 2.0, 2.1, 2.0, 1.9999, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, float("nan"), 1.5, 1.4,
                   1.4, 1.4, 1.4, 1.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.4, 0.4, float("inf"), 0.4, 0.4, 0.3, 0.3]


def plateau_metric(epoch: int, mode: str = "min") -> float:
    value = PLATEAU_METRICS[epoch % len(PLATEAU_METRICS)] - 0.01 * (epoch // len(PLATEAU_METRICS))
    return -value if mode == "max" else value


@contextlib.contextmanager
def no_sync_allowed(device):
    """On CUDA any host sync inside raises (torch.cuda.set_sync_debug_mode('error'))."""
    if torch.device(device).type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@dataclass
class Pair:
    """torch's optimizer + scheduler and ours over twin copies of the same
    parameter values (flat lists, in group order). With master weights the
    torch side steps float32 copies of ours' bf16/fp16 parameters."""
    torch_opt: torch.optim.Optimizer
    torch_sched: object
    our_opt: torch.optim.Optimizer
    torch_params: List[torch.Tensor]
    our_params: List[torch.Tensor]
    spec: Optional[dict] = None
    interval: str = "epoch"
    device: str = "cpu"
    clipping: Optional[dict] = None
    remake_ours: Optional[Callable[[], torch.optim.Optimizer]] = None  # a fresh one over our_params


def build_pair(kind: str, kwargs: dict, *, spec: Optional[dict] = None, layout: str = "mixed",
               dtype: torch.dtype = torch.float32, values: Optional[List[List[torch.Tensor]]] = None,
               interval: str = "epoch", device: str = "cpu", group_lrs: Optional[Sequence[float]] = None,
               group1_lr_scale: float = 0.5, torch_impl: str = "fused", master_weights: bool = False,
               clipping: Optional[dict] = None, ours_options: Optional[dict] = None) -> Pair:
    """values: the parameter values per group (default: make_params(layout, dtype)).
    Groups after the first get group_lrs[i], or the lr times group1_lr_scale.
    torch_impl: "fused" (the reference) or "for-loop" (torch's single-tensor path).
    clipping: ours gets these arguments (max_grad_norm, grad_norm_type); run_pair
    clips the reference's grads before its step (clip_reference_grads).
    ours_options: more arguments for ours only (state_dtype, stochastic_rounding)."""
    values = make_params(layout, dtype) if values is None else values
    lr = kwargs.get("lr", 1e-3)

    def groups(params, torch_side):
        out = []
        for i, group in enumerate(params):
            entry = {"params": group}
            if group_lrs is not None:
                entry["lr"] = group_lrs[i]
            elif i:
                entry["lr"] = (lr.clone() if isinstance(lr, torch.Tensor) else lr) * group1_lr_scale
            if torch_side and isinstance(entry.get("lr"), torch.Tensor):
                entry["lr"] = float(entry["lr"])
            out.append(entry)
        return out

    torch_values = [[v.float() if master_weights else v for v in group] for group in values]
    torch_params = [[v.clone().to(device).requires_grad_() for v in group] for group in torch_values]
    our_params = [[v.clone().to(device).requires_grad_() for v in group] for group in values]
    # The reference pair uses a float lr: torch computes a Tensor
    # lr's schedule in the tensor's dtype (float32 here), ours in float64.
    impl = {} if kind in SINGLE_IMPLEMENTATION else {"fused": True} if torch_impl == "fused" else {"foreach": False}
    torch_kwargs = dict(kwargs, **impl)
    if isinstance(torch_kwargs.get("lr"), torch.Tensor):
        torch_kwargs["lr"] = float(torch_kwargs["lr"])
    torch_opt = TORCH_OPTIMIZERS[kind](groups(torch_params, True), **torch_kwargs)
    torch_sched = schedule_specs.torchs(spec, torch_opt) if spec else None

    def remake_ours():
        ours_kwargs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        if master_weights:
            ours_kwargs["master_weights"] = True
        return OUR_OPTIMIZERS[kind](groups(our_params, False), schedule=schedule_specs.ours(spec) if spec else None,
                                    schedule_interval=interval, **ours_kwargs, **(clipping or {}),
                                    **(ours_options or {}))

    flat = lambda ps: [p for group in ps for p in group]  # noqa: E731
    return Pair(torch_opt, torch_sched, remake_ours(), flat(torch_params), flat(our_params), spec=spec,
                interval=interval, device=device, clipping=clipping, remake_ours=remake_ours)


@dataclass
class PairRun:
    """Both sides' lrs and momenta (beta1) at construction and after every
    schedule step (every epoch without a schedule), and the final parameters."""
    pair: Pair
    torch_lrs: List[List[float]] = field(default_factory=list)
    our_lrs: List[List[float]] = field(default_factory=list)
    torch_momenta: List[List[float]] = field(default_factory=list)
    our_momenta: List[List[float]] = field(default_factory=list)
    torch_params: List[torch.Tensor] = field(default_factory=list)
    our_params: List[torch.Tensor] = field(default_factory=list)
    # With clipping: each step's total norm, clip_grad_norm_'s and ours (opt.grad_norm).
    torch_norms: List[torch.Tensor] = field(default_factory=list)
    our_norms: List[torch.Tensor] = field(default_factory=list)
    exact_norms: List[float] = field(default_factory=list)  # of the same grads, in float64

    def note_schedule(self) -> None:
        momentum = lambda g: float(g["betas"][0]) if "betas" in g else float(g.get("momentum", 0.0))  # noqa: E731
        torch_groups, our_groups = self.pair.torch_opt.param_groups, self.pair.our_opt.param_groups
        self.torch_lrs.append([float(g["lr"]) for g in torch_groups])
        self.our_lrs.append(self.pair.our_opt.get_last_lr())
        self.torch_momenta.append([momentum(g) for g in torch_groups])
        self.our_momenta.append([momentum(g) for g in our_groups])


def default_grads(seed: int = 1, none_grad_every: int = 3, grad_factors: Sequence[float] = (1.0,)):
    """Standard normal grads in the parameter's dtype, step k's times
    grad_factors[k % len]; parameter 0 has none on steps 1, 1 + n, 1 + 2n, ..."""
    gen = torch.Generator().manual_seed(seed)

    def grads(step: int, index: int, param: torch.Tensor) -> Optional[torch.Tensor]:
        if none_grad_every and index == 0 and step % none_grad_every == 1:
            return None
        factor = grad_factors[step % len(grad_factors)]
        return (torch.randn(param.shape, generator=gen, dtype=torch.float64) * factor).to(param.dtype)

    return grads


def clip_reference_grads(pair: Pair, run: PairRun) -> None:
    """torch's recipe, clip_grad_norm_(foreach=True) = get_total_norm +
    clip_grads_with_norm_, with each grad's norm computed exactly (in float64,
    then rounded to the grad's dtype as torch rounds its per-grad norms): the
    reference clips with the exact norm, so the parameters are held to the
    suite's fixed tolerances. torch's own total norm (its CPU kernels add fp32
    grads up in fp32) and the float64 norm of the same grads are recorded."""
    norm_type = pair.clipping.get("grad_norm_type", 2.0)
    grads = [t.grad for t in pair.torch_params if t.grad is not None]
    run.torch_norms.append(torch.nn.utils.get_total_norm(grads, norm_type, foreach=True))
    exact = [torch.linalg.vector_norm(g.double(), norm_type) for g in grads]
    run.exact_norms.append(float(torch.linalg.vector_norm(torch.stack(exact), norm_type)))
    dtypes = [g.dtype for g in grads]
    by_dtype = sorted(range(len(grads)), key=lambda i: dtypes.index(dtypes[i]))  # get_total_norm's order
    total = torch.linalg.vector_norm(torch.stack([exact[i].to(dtypes[i]) for i in by_dtype]), norm_type)
    torch.nn.utils.clip_grads_with_norm_(pair.torch_params, pair.clipping["max_grad_norm"], total, foreach=True)


def spec_metric_mode(spec: dict) -> str:
    parts = spec.get("schedulers", [spec])
    return next((s["kwargs"].get("mode", "min") for s in parts if s["name"] == "ReduceLROnPlateau"), "min")


def run_pair(pair: Pair, *, epochs: Optional[int] = None, steps_per_epoch: Optional[int] = None, total_steps: Optional[int] = None,
             grads: Optional[Callable] = None, metric: Optional[Callable[[int], float]] = None,
             metric_as: str = "float64 tensor", grad_scale: Optional[float] = None,
             after_step: Optional[Callable] = None, after_epoch: Optional[Callable] = None,
             reload_after_epoch: Optional[int] = None, no_sync: bool = False) -> PairRun:
    """The one step-by-step loop: each step both sides get the same grads
    (grads(step, index, our_param) -> Tensor or None, cast to each side's
    dtype; default: default_grads()), then step; the schedule steps every
    step (interval "step") or every epoch, with metric(epoch) (default
    plateau_metric in the spec's mode) given to both as the same object
    (metric_as: "float", "float64 tensor" or "float32 tensor" on the device).
    grad_scale: both sides get grads times it and unscale them in the kernel
    (GradScaler's protocol: the grad_scale and found_inf attributes).
    after_step(pair, step) / after_epoch(pair, epoch) run checks; after
    reload_after_epoch, ours is resumed from its state_dict into a fresh
    optimizer; no_sync: ours' steps raise on a host sync (CUDA). epochs and
    steps_per_epoch default to the spec's (schedule_specs.run_for)."""
    grads = grads or default_grads()
    spec = pair.spec
    epochs = spec["epochs"] if epochs is None else epochs
    steps_per_epoch = (spec or {}).get("steps_per_epoch", 1) if steps_per_epoch is None else steps_per_epoch
    if spec is None or not schedule_specs.needs_metric(spec):
        metric = None
    elif metric is None:
        mode = spec_metric_mode(spec)
        metric = lambda epoch: plateau_metric(epoch, mode)  # noqa: E731
    if grad_scale is not None:
        for opt in (pair.torch_opt, pair.our_opt):
            opt.grad_scale = torch.tensor(grad_scale, device=pair.device)
            opt.found_inf = torch.tensor(0.0, device=pair.device)
    syncs_checked = lambda: no_sync_allowed(pair.device) if no_sync else contextlib.nullcontext()  # noqa: E731
    run = PairRun(pair)
    run.note_schedule()
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            if total_steps is not None and step == total_steps:
                break
            for i, (tp, op) in enumerate(zip(pair.torch_params, pair.our_params)):
                grad = grads(step, i, op)
                if grad is None:
                    tp.grad, op.grad = None, None
                    continue
                grad = grad.to(pair.device)
                if grad_scale is not None:
                    grad = grad * grad_scale
                tp.grad, op.grad = grad.to(tp.dtype).clone(), grad.to(op.dtype).clone()
            if pair.clipping:
                clip_reference_grads(pair, run)
            pair.torch_opt.step()
            with syncs_checked():
                pair.our_opt.step()
            if pair.clipping:
                run.our_norms.append(pair.our_opt.grad_norm.clone())
            if pair.interval == "step" and spec is not None:
                torch_reference.step(pair.torch_sched, None)
                run.note_schedule()
            if after_step is not None:
                after_step(pair, step)
            step += 1
        if pair.interval == "epoch" and spec is not None:
            value = metric(epoch) if metric is not None else None
            if value is not None and metric_as != "float":
                value = torch.tensor(value, device=pair.device,
                                     dtype={"float64 tensor": torch.float64, "float32 tensor": torch.float32}[metric_as])
            torch_reference.step(pair.torch_sched, value)
            with syncs_checked():
                pair.our_opt.schedule_step(*(() if value is None else (value,)))
            run.note_schedule()
        elif spec is None:
            run.note_schedule()
        if after_epoch is not None:
            after_epoch(pair, epoch)
        if epoch == reload_after_epoch:
            saved = copy.deepcopy(pair.our_opt.state_dict())
            pair.our_opt = pair.remake_ours()
            pair.our_opt.load_state_dict(saved)
    run.torch_params = [p.detach() for p in pair.torch_params]
    run.our_params = [p.detach() for p in pair.our_params]
    return run


_BUILD_OPTIONS = set(inspect.signature(build_pair).parameters) - {"kind", "kwargs"}


def compare(kind: str, kwargs: dict, **options) -> PairRun:
    """build_pair + run_pair, the options split between them by name."""
    build = {k: v for k, v in options.items() if k in _BUILD_OPTIONS}
    return run_pair(build_pair(kind, kwargs, **build),
                    **{k: v for k, v in options.items() if k not in _BUILD_OPTIONS})


def masters_and_references(pair: Pair) -> List[tuple]:
    """With master weights: asserts every parameter of ours equals its fp32
    master rounded to its dtype (one without a master yet: still equal to the
    reference), and returns (master, reference) for those with a master."""
    out = []
    for i, (ref, p) in enumerate(zip(pair.torch_params, pair.our_params)):
        state = pair.our_opt.state[p]
        if "master_param" not in state:  # no step with a grad yet
            assert torch.equal(p.detach().float(), ref.detach()), f"param {i} moved without a step"
            continue
        master = state["master_param"]
        assert master.dtype == torch.float32
        assert torch.equal(p.detach(), master.to(p.dtype)), f"param {i} != its master rounded"
        out.append((master, ref.detach()))
    return out


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (absolute error when ||b|| == 0)."""
    a, b = ours.double(), reference.double()
    if b.numel() == 0:
        return 0.0
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff



# The worst errors seen in this test session, per tally (a dtype's name or a
# named check), printed at the end of the run (tests/conftest.py):
# {"fp32": {"lr": .., "param": .., "runs": ..}, ...}
WORST_SEEN: Dict[str, Dict[str, float]] = {}
DTYPE_NAMES = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16"}


def record_worst(tally, *, lr: float = 0.0, param: float = 0.0, runs: int = 1) -> None:
    """The one way into WORST_SEEN; tally is a dtype or a name."""
    seen = WORST_SEEN.setdefault(DTYPE_NAMES.get(tally, tally), {"lr": 0.0, "param": 0.0, "runs": 0})
    seen["lr"] = max(seen["lr"], lr)
    seen["param"] = max(seen["param"], param)
    seen["runs"] += runs


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
                              rtol: float = 1e-12, zero_atol: Optional[float] = None,
                              count_run: bool = True) -> None:
    """Every step, every group: |ours - reference| / |reference| <= rtol
    (|ours| <= zero_atol, default rtol, where the reference is 0); the worst
    goes to WORST_SEEN[tally]."""
    assert len(expected) == len(got)
    worst = 0.0
    for step, (e, g) in enumerate(zip(expected, got)):
        assert len(e) == len(g)
        for group, (a, b) in enumerate(zip(e, g)):
            err = abs(a - b) / abs(a) if a != 0 else abs(b)
            bound = rtol if a != 0 or zero_atol is None else zero_atol
            assert err <= bound, f"{what} at schedule step {step}, group {group}: {reference} {a!r}, ours {b!r}"
            worst = max(worst, err)
    record_worst(tally, lr=worst, runs=int(count_run))
