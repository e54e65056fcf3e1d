"""max_grad_norm: ours clips inside the step as torch's recipe does before it,
``clip_grad_norm_(params, max_norm, norm_type, foreach=True)`` + torch's fused
optimizer + scheduler, step by step across the configuration tables, with
norms above and below max_grad_norm on alternate steps (NOTE: [grad norm]).

Tolerances. The reference clips with torch's recipe fed each grad's exact
norm (float64, rounded to the grad's dtype as torch rounds its per-grad
norms: torch_pair.clip_reference_grads), so the parameters are held to fixed
bounds: fp32 1e-6 (measured 3.9e-7: the coefficient's last bits), fp64 1e-12
(3.1e-15), bf16/fp16 exact (0). Each step's norm is held to NORM_RTOL of the
exact float64 norm (measured fp32 1.1e-7, fp64 1.3e-14; bf16 4.3e-3 and
fp16 8.9e-4, the per-grad rounding torch does too) and to TORCH_NORM_RTOL of
torch's own norm, which adds fp32 grads up in fp32 on the CPU.
"""
import math

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, _ops, schedules
from schedule_specs import PAIR_SCHEDULES as SCHEDULES
from torch_pair import (DTYPE_NAMES, EXTRA_OPTIMIZER_INPUTS, TORCH_OPTIMIZER_INPUTS, compare, default_grads,
                        record_worst, relative_error, worst_lr_error, worst_param_error)

PARAM_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 0.0, torch.float16: 0.0}
NORM_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}
# ours' norm against torch's own (clip_grad_norm_'s get_total_norm), where that
# differs from NORM_RTOL: torch's CPU norm adds fp32 grads up in fp32, ours in
# float64. Measured ("ours' norm vs torch's" in the worst-error summary):
# fp32 p=2 9.2e-7; p=1 5.9e-6 and p=3 4.8e-6 with this file alone, 1.12e-5
# and 1.09e-5 in the whole suite of bash tests/run.sh (torch's fp32 sums
# depend on how its reduction is split; ours is within 1.1e-7 of float64
# either way); fp64 <= 1.3e-14; bf16/fp16 0.
TORCH_NORM_RTOL = {(torch.float32, 1.0): 3e-5, (torch.float32, 2.0): 2e-6, (torch.float32, 3.0): 3e-5}
MAX_NORM = 20.0
# Step k's grads are scaled by GRAD_FACTORS[k % 3]: total norms of about 3, 26
# and 265 on the "mixed" layout, so some steps are clipped and some are not.
GRAD_FACTORS = (0.01, 0.1, 1.0)

CONFIGS = [
    pytest.param(kind, kwargs, id=f"{kind}-{desc}")
    for table in (TORCH_OPTIMIZER_INPUTS, EXTRA_OPTIMIZER_INPUTS)
    for kind, inputs in table.items()
    for desc, kwargs in inputs.items()
]


def clipped_run(kind, kwargs, schedule, dtype, *, norm_type=2.0, layout="mixed", max_norm=MAX_NORM):
    return compare(kind, kwargs, spec=SCHEDULES[schedule], dtype=dtype, layout=layout,
                   grads=default_grads(grad_factors=GRAD_FACTORS),
                   clipping={"max_grad_norm": max_norm, "grad_norm_type": norm_type})


def check(run, dtype, max_norm=MAX_NORM, norm_type=2.0):
    """Parameters and lrs against the reference clipped with the exact norm
    (torch_pair.clip_reference_grads), every step's norm against the exact
    float64 one and against torch's own; both clipped and unclipped steps
    happened."""
    lr_error, param_error = worst_lr_error(run), worst_param_error(run)
    exact = [torch.tensor(e, dtype=torch.float64) for e in run.exact_norms]
    ours_vs_exact = max(relative_error(o, e) for o, e in zip(run.our_norms, exact))
    ours_vs_torch = max(relative_error(o, t) for o, t in zip(run.our_norms, run.torch_norms))
    assert all(o.dtype == t.dtype for o, t in zip(run.our_norms, run.torch_norms))
    clipped = sum(float(t) > max_norm for t in run.torch_norms)
    assert 0 < clipped < len(run.torch_norms), "the run must have steps above and below max_grad_norm"
    name = DTYPE_NAMES[dtype]
    record_worst(f"grad clipping {name}", lr=lr_error, param=param_error)
    record_worst(f"grad clipping {name}: ours' norm vs float64", param=ours_vs_exact)
    record_worst(f"grad clipping {name} p={norm_type:g}: ours' norm vs torch's", param=ours_vs_torch)
    assert lr_error <= 1e-12
    assert ours_vs_exact <= NORM_RTOL[dtype]
    assert ours_vs_torch <= TORCH_NORM_RTOL.get((dtype, norm_type), NORM_RTOL[dtype])
    assert param_error <= PARAM_RTOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("kind,kwargs", CONFIGS)
def test_matches_torch_clip_recipe(kind, kwargs, dtype):
    check(clipped_run(kind, kwargs, "CosineAnnealingLR", dtype), dtype)


# The clip is the same whatever the lr; each schedule with each optimizer kind.
@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s != "CosineAnnealingLR"])
@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "maximize": True}),
], ids=["sgd", "adam", "adamw"])
def test_every_schedule(kind, kwargs, schedule):
    check(clipped_run(kind, kwargs, schedule, torch.float64), torch.float64)


@pytest.mark.parametrize("norm_type", [1.0, 3.0, math.inf], ids=["p1", "p3", "inf"])
@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_other_norm_types(kind, kwargs, norm_type, dtype):
    # p = 1 sums |g| (~70000 * 0.8 at factor 1), p = inf is one element's |g| (~4):
    # max_norm is set between the small and the large steps' norms.
    # torch's inf norm refuses a zero-size grad ("no identity"; ours counts it as 0): no such tensor there.
    max_norm = {1.0: 1000.0, 3.0: 20.0, math.inf: 1.0}[norm_type]
    layout = "many" if math.isinf(norm_type) else "mixed"
    run = clipped_run(kind, kwargs, "CosineAnnealingLR", dtype, norm_type=norm_type, max_norm=max_norm,
                      layout=layout)
    check(run, dtype, max_norm, norm_type)


@pytest.mark.parametrize("kind,kwargs", [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "amsgrad": True, "maximize": True}),
], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision(kind, kwargs, dtype):
    check(clipped_run(kind, kwargs, "CosineAnnealingLR", dtype), dtype)


@pytest.mark.parametrize("kind,kwargs", [("sgd", {"lr": 0.05, "momentum": 0.9}), ("adam", {"lr": 0.01})],
                         ids=["sgd", "adam"])
def test_520_tensors_in_two_groups(kind, kwargs):
    check(clipped_run(kind, kwargs, "StepLR", torch.float32, layout="many", max_norm=10.0), torch.float32, 10.0)


def _params(dtypes=(torch.float32, torch.float32), seed=0):
    torch.manual_seed(seed)
    return [torch.randn(40, 3).to(dtypes[0]), torch.randn(0).to(dtypes[0]), torch.randn(70000).to(dtypes[1])]


def test_mixed_dtypes_promote_the_norm_like_torch():
    """fp32 and fp64 parameters in one optimizer (two groups): the norm is
    float64, as torch.stack promotes clip_grad_norm_'s per-grad norms."""
    init = _params((torch.float32, torch.float64))
    ref = [t.clone().requires_grad_() for t in init]
    ours = [t.clone().requires_grad_() for t in init]
    ref_opt = torch.optim.Adam([{"params": ref[:2]}, {"params": ref[2:]}], lr=0.01)
    our_opt = FusedAdam([{"params": ours[:2]}, {"params": ours[2:]}], lr=0.01, max_grad_norm=5.0)
    for step in range(20):
        for r, o in zip(ref, ours):
            r.grad = torch.randn_like(r) * (0.01 if step % 2 else 1.0)
            o.grad = r.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(ref, 5.0, foreach=True)
        ref_opt.step()
        our_opt.step()
        assert our_opt.grad_norm.dtype == norm.dtype == torch.float64
        assert relative_error(our_opt.grad_norm, norm) <= 1e-7
    for r, o in zip(ref, ours):
        assert relative_error(o, r) <= PARAM_RTOL[r.dtype]


def test_grads_are_left_unclipped_and_the_norm_tensor_is_reused():
    params = [t.requires_grad_() for t in _params()]
    opt = FusedSGD(params, lr=0.1, momentum=0.9, max_grad_norm=1.0)
    assert opt.grad_norm is None and opt.max_grad_norm == 1.0
    norms = []
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g)  # not clipped: the kernel clips what it reads
        norms.append(opt.grad_norm)
        expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        assert opt.grad_norm.shape == () and relative_error(opt.grad_norm, expected) <= 1e-6
    assert norms[0] is norms[1] is norms[2]  # one tensor, written by each step
    assert FusedAdam(params).grad_norm is None


def test_a_step_without_grads_has_norm_zero():
    params = [t.requires_grad_() for t in _params()]
    opt = FusedAdamW(params, lr=0.1, max_grad_norm=1.0)
    opt.step()
    assert float(opt.grad_norm) == 0.0 == float(torch.nn.utils.clip_grad_norm_(params, 1.0))


@pytest.mark.parametrize("bad", [math.inf, math.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_non_finite_norms_behave_as_torchs_clip(kind, bad):
    """error_if_nonfinite=False: an inf norm makes the coefficient 0 (finite
    grads count as 0, the inf ones as NaN), a NaN norm makes every grad NaN."""
    init = _params()
    ref = [t.clone().requires_grad_() for t in init]
    ours = [t.clone().requires_grad_() for t in init]
    make = {"sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
                    lambda ps: FusedSGD(ps, lr=0.1, momentum=0.9, max_grad_norm=1.0)),
            "adam": (lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True),
                     lambda ps: FusedAdam(ps, lr=0.1, max_grad_norm=1.0))}[kind]
    ref_opt, our_opt = make[0](ref), make[1](ours)
    for step in range(3):
        for r, o in zip(ref, ours):
            r.grad = torch.randn_like(r)
            if step == 1 and r.numel() == 120:
                r.grad[5] = bad
            o.grad = r.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(ref, 1.0, foreach=True)
        ref_opt.step()
        our_opt.step()
        torch.testing.assert_close(our_opt.grad_norm, norm, equal_nan=True, rtol=1e-6, atol=0)
        for r, o in zip(ref, ours):
            assert torch.equal(o.isnan(), r.isnan()), f"step {step}"
            assert relative_error(o.detach().nan_to_num(), r.detach().nan_to_num()) <= 1e-6
    assert ours[0].isnan().any()


@pytest.mark.parametrize("explicit_unscale", [False, True], ids=["scaler.step", "unscale_-then-step"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_grad_scaler_clips_the_unscaled_grads_and_skips_inf_steps(kind, explicit_unscale):
    """torch's AMP recipe: scaler.unscale_(opt); clip_grad_norm_; scaler.step(opt).
    Ours: scaler.step(opt) alone (the kernels unscale, the norm is of the
    unscaled grads), or with the explicit unscale_ as in torch's recipe."""
    torch.manual_seed(0)
    init = [torch.randn(8, 4), torch.randn(4)]
    ref_params = [t.clone().requires_grad_() for t in init]
    our_params = [t.clone().requires_grad_() for t in init]
    ref = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, fused=True),
           "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True)}[kind](ref_params)
    ours = {"sgd": lambda ps: FusedSGD(ps, lr=0.05, momentum=0.9, max_grad_norm=0.5),
            "adam": lambda ps: FusedAdam(ps, lr=0.01, max_grad_norm=0.5)}[kind](our_params)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3) for _ in range(2)]
    x = torch.randn(16, 8)
    for step in range(12):
        norms = []
        for params, opt, scaler, is_ours in ((ref_params, ref, scalers[0], False),
                                             (our_params, ours, scalers[1], True)):
            w, b = params
            loss = ((x @ w + b) ** 2).mean() * (0.01 if step % 2 else 1.0)
            if step in (4, 9):
                loss = loss * float("inf")  # an overflow: the step is skipped
            scaler.scale(loss).backward()
            if not is_ours:
                scaler.unscale_(opt)
                norms.append(torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True))
            elif explicit_unscale:
                scaler.unscale_(opt)
            before = [p.detach().clone() for p in params]
            scaler.step(opt)
            scaler.update()
            if is_ours:
                norms.append(opt.grad_norm.clone())
                if step in (4, 9):
                    assert all(torch.equal(a, p) for a, p in zip(before, params))
            opt.zero_grad()
        torch.testing.assert_close(norms[1], norms[0], rtol=1e-6, atol=0, equal_nan=True)
        for r, o in zip(ref_params, our_params):
            assert relative_error(o, r) <= 1e-6, f"step {step}"


def test_the_norm_has_the_same_bits_for_any_thread_count():
    torch.manual_seed(0)
    grads = [torch.randn(300000), torch.randn(5), torch.randn(100000).to(torch.bfloat16), torch.randn(0)]
    threads = torch.get_num_threads()
    partials = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            partial = torch.zeros((), dtype=torch.float64)
            _ops.grad_norm_partial_(grads, 2.0, None, partial)
            partials.append(partial.item())
    finally:
        torch.set_num_threads(threads)
    assert partials[0] == partials[1] == partials[2]
    expected = sum(float(torch.linalg.vector_norm(g.double()).to(g.dtype)) ** 2 for g in grads)
    assert partials[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("value,error", [
    (0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError),
])
def test_bad_max_grad_norm_is_refused(value, error):
    with pytest.raises(error, match="max_grad_norm"):
        FusedAdam([torch.zeros(2, requires_grad=True)], max_grad_norm=value)


@pytest.mark.parametrize("value,error", [
    (0.0, ValueError), (-2.0, ValueError), (math.nan, ValueError), (-math.inf, ValueError), ("2", TypeError),
])
def test_bad_grad_norm_type_is_refused(value, error):
    with pytest.raises(error, match="grad_norm_type"):
        FusedSGD([torch.zeros(2, requires_grad=True)], max_grad_norm=1.0, grad_norm_type=value)
