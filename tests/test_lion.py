"""FusedLion against lion-pytorch's Lion (pinned in tests/build.sh) driven by
torch's schedulers, step by step: fp32 and fp64, two groups with their own
lrs, weight decay on and off, 300 steps; the sign's boundary (c exactly 0)
on purpose; lion-pytorch's checkpoints; maximize, GradScaler and the
refusals. Every schedule runs against it in tests/test_all_schedules.py;
the no-sync, no-allocation, compile, precision and CUDA tests take Lion
beside the other optimizers."""
import copy

import pytest
import torch

from lrsched_fused import FusedLion, schedules
from schedule_specs import leaf, run_for
from torch_pair import (assert_lr_sequences_close, build_pair, lion_reference, make_params, record_worst,
                        relative_error, run_pair)

# The bounds. Measured: 0 in both (every parameter bit-equal), as the
# reference runs torch's kernels at the baseline instruction set
# (tests/conftest.py), where both round alike.
PARAM_RTOL = {torch.float32: 1e-6, torch.float64: 1e-12}

CONFIGS = {
    "default": {"lr": 1e-4},
    "weight decay 0.1": {"lr": 3e-4, "weight_decay": 0.1},
    "betas (0.95, 0.98), weight decay 1": {"lr": 1e-4, "betas": (0.95, 0.98), "weight_decay": 1.0},
    "beta1 0: the grad's sign": {"lr": 1e-3, "betas": (0.0, 0.99)},
}

# 300 steps each: per epoch (25 x 12, 30 x 10) and per step.
SCHEDULES = {
    "constant": (None, 3, 100, "epoch"),
    "StepLR": (leaf("StepLR", step_size=7, gamma=0.5), 25, 12, "epoch"),
    "ReduceLROnPlateau": (leaf("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1), 30, 10, "epoch"),
    "OneCycleLR per step (cycles beta1)": (leaf("OneCycleLR", max_lr=1e-3, total_steps=300), 25, 12, "step"),
    "CosineAnnealingLR per step": (leaf("CosineAnnealingLR", T_max=120, eta_min=1e-6), 25, 12, "step"),
}


def lion_pair(kwargs, dtype=torch.float32, spec=None, interval="epoch", layout="mixed", **options):
    return build_pair("lion", kwargs, spec=spec, dtype=dtype, interval=interval, layout=layout, **options)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_lion_pytorch(dtype, config, schedule):
    """Two groups (the second at half the lr; a 70,000-element tensor, a
    zero-size one, parameter 0 without a grad every third step): the
    parameters to PARAM_RTOL and the lrs bit-equal, after 300 steps."""
    spec, epochs, steps, interval = SCHEDULES[schedule]
    spec = None if spec is None else run_for(spec, epochs, steps)
    pair = lion_pair(CONFIGS[config], dtype, spec, interval)
    run = run_pair(pair, epochs=epochs, steps_per_epoch=steps)
    assert epochs * steps >= 300
    assert_lr_sequences_close(run.torch_lrs, run.our_lrs, "lr", "lion", rtol=0.0)
    assert_lr_sequences_close(run.torch_momenta, run.our_momenta, "beta1", "lion", rtol=0.0, count_run=False)
    worst = max(relative_error(o, t) for o, t in zip(run.our_params, run.torch_params))
    record_worst(f"lion {str(dtype)[6:]}", param=worst)
    assert worst <= PARAM_RTOL[dtype], f"worst relative parameter error {worst:.3e}"
    start = [v for group in make_params("mixed", dtype) for v in group]
    assert all(not torch.equal(o, v) for o, v in zip(run.our_params, start) if v.numel())  # every param moved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_resume_is_bit_identical(dtype):
    """Resumed from its state_dict mid-run (a fresh optimizer): the same bits as the run that went on."""
    spec = run_for(leaf("CosineAnnealingLR", T_max=10, eta_min=1e-5), 12, 5)
    straight = run_pair(lion_pair({"lr": 3e-4, "weight_decay": 0.1}, dtype, spec))
    resumed = run_pair(lion_pair({"lr": 3e-4, "weight_decay": 0.1}, dtype, spec), reload_after_epoch=5)
    for a, b in zip(straight.our_params, resumed.our_params):
        assert torch.equal(a, b)
    assert straight.our_lrs == resumed.our_lrs


def interpolation(exp_avg, grad, beta1):
    """The reference's c = beta1 * m + (1 - beta1) * g, rounded as it rounds it."""
    return exp_avg.clone().mul_(beta1).add(grad, alpha=1.0 - beta1)


@pytest.mark.parametrize("beta1", [0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_sign_boundaries(dtype, beta1):
    """Where c is exactly 0 the sign is 0 and the parameter does not move
    (but for the weight decay): at the first step where the grad is 0 or
    -0.0 (m = 0), with beta1 = 0.5 where the grad is -m (both halves exact),
    and beside them where c is a rounding residue (g = -m * beta1 / (1 -
    beta1), rounded): bit-equal to lion-pytorch, and the exact zeros counted."""
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(4, 257, generator=gen, dtype=torch.float64).to(dtype)
    ref_p, our_p = start.clone().requires_grad_(), start.clone().requires_grad_()
    kwargs = dict(lr=1e-2, betas=(beta1, 0.9), weight_decay=0.0)
    ref, ours = lion_reference([ref_p], **kwargs), FusedLion([our_p], **kwargs)
    zeros_seen = 0
    for step in range(12):
        grad = torch.randn(start.shape, generator=gen, dtype=torch.float64).to(dtype)
        if step == 0:
            grad[0, ::2] = 0.0
            grad[0, 1::4] = -0.0
        else:
            m = ref.state[ref_p]["exp_avg"]
            grad[1] = -m[1]  # c = 0 exactly when beta1 = 0.5
            grad[2] = (-m[2] * beta1 / (1.0 - beta1)).to(dtype)  # c near 0: a residue of rounding
        m_before = ref.state[ref_p]["exp_avg"].clone() if ref.state[ref_p] else torch.zeros_like(start)
        c = interpolation(m_before, grad, beta1)
        zero = c == 0
        zeros_seen += int(zero.sum())
        before = our_p.detach().clone()
        ref_p.grad, our_p.grad = grad.clone(), grad.clone()
        ref.step()
        ours.step()
        assert torch.equal(our_p, ref_p), f"step {step}: differs from lion-pytorch"
        assert torch.equal(ours.state[our_p]["exp_avg"], ref.state[ref_p]["exp_avg"])
        assert torch.equal(our_p.detach()[zero], before[zero]), f"step {step}: a parameter with c == 0 moved"
    assert zeros_seen >= 2 * 257 // 2 + (11 * 257 if beta1 == 0.5 else 0)


def test_loads_a_lion_pytorch_checkpoint_and_back():
    """lion-pytorch's state_dict (exp_avg) loads into FusedLion, which then
    steps as lion-pytorch goes on; ours loads into lion-pytorch."""
    gen = torch.Generator().manual_seed(5)
    values = [torch.randn(6, 5, generator=gen), torch.randn(7, generator=gen)]
    ref_params = [v.clone().requires_grad_() for v in values]
    ref = lion_reference([{"params": ref_params[:1]}, {"params": ref_params[1:], "lr": 5e-4}], lr=1e-3,
                         weight_decay=0.1)
    grads = [[torch.randn(v.shape, generator=gen) for v in values] for _ in range(10)]
    for step in range(5):
        for p, g in zip(ref_params, grads[step]):
            p.grad = g.clone()
        ref.step()
    our_params = [p.detach().clone().requires_grad_() for p in ref_params]
    ours = FusedLion([{"params": our_params[:1]}, {"params": our_params[1:], "lr": 5e-4}], lr=1e-3, weight_decay=0.1)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    back_params = [p.detach().clone().requires_grad_() for p in ref_params]
    back = lion_reference([{"params": back_params[:1]}, {"params": back_params[1:], "lr": 5e-4}], lr=1e-3,
                          weight_decay=0.1)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    for step in range(5, 10):
        for params in (ref_params, our_params, back_params):
            for p, g in zip(params, grads[step]):
                p.grad = g.clone()
        for opt in (ref, ours, back):
            opt.step()
    for r, o, b in zip(ref_params, our_params, back_params):
        assert torch.equal(o, r) and torch.equal(b, r)
    assert set(ours.state_dict()["state"][0]) == {"exp_avg"}


def test_maximize_steps_with_the_negated_grad():
    """As torch's maximize: the update uses -grad, and exp_avg averages it."""
    gen = torch.Generator().manual_seed(7)
    start = torch.randn(33, 3, generator=gen)
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    up, down = FusedLion([a], lr=1e-2, weight_decay=0.5, maximize=True), FusedLion([b], lr=1e-2, weight_decay=0.5)
    for _ in range(6):
        g = torch.randn(start.shape, generator=gen)
        a.grad, b.grad = g.clone(), -g
        up.step()
        down.step()
    assert torch.equal(a, b) and torch.equal(up.state[a]["exp_avg"], down.state[b]["exp_avg"])


def test_grad_scaler_unscales_and_skips():
    """With torch.amp.GradScaler (CPU): the step is lion-pytorch's on the
    unscaled grads; a step with an inf grad changes nothing, the scale halves."""
    gen = torch.Generator().manual_seed(9)
    start = torch.randn(40, 3, generator=gen)
    ref_p, our_p = start.clone().requires_grad_(), start.clone().requires_grad_()
    ref = lion_reference([ref_p], lr=1e-3, weight_decay=0.1)
    ours = FusedLion([our_p], lr=1e-3, weight_decay=0.1,
                     schedule=schedules.StepLR(step_size=1, gamma=0.9), schedule_interval="step",
                     skip_schedule_on_overflow=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for step in range(6):
        g = torch.randn(start.shape, generator=gen)
        if step == 3:
            g[0, 0] = float("inf")
        our_p.grad = None
        scaler.scale((our_p * g).sum()).backward()  # grad = g * scale
        before = (our_p.detach().clone(), ours.state[our_p].get("exp_avg"), ours.get_last_lr())
        scaler.step(ours)
        scaler.update()
        if step == 3:
            assert torch.equal(our_p, before[0]) and ours.get_last_lr() == before[2]
            continue
        ref_p.grad = g
        ref.step()
        for group in ref.param_groups:
            group["lr"] *= 0.9
    assert torch.equal(our_p, ref_p)


@pytest.mark.parametrize("options,error,match", [
    ({"betas": (1.5, 0.9)}, ValueError, r"betas\[0\] must be in \[0, 1\], got 1.5"),
    ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be in \[0, 1\]"),
    ({"betas": (0.9,)}, ValueError, "betas must be a pair"),
    ({"betas": "0.9"}, TypeError, "betas must be a pair"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"lr": -1e-3}, ValueError, "lr must be"),
    ({"maximize": 1}, TypeError, "maximize"),
])
def test_refuses_bad_arguments(options, error, match):
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(error, match=match):
        FusedLion([p], **options)


def test_a_bad_edit_is_refused_before_anything_changes():
    p, q = torch.ones(4, requires_grad=True), torch.ones(5, requires_grad=True)
    opt = FusedLion([{"params": [p]}, {"params": [q]}], lr=1e-2)
    p.grad, q.grad = torch.ones(4), torch.ones(5)
    opt.step()
    kept = (p.detach().clone(), q.detach().clone(), opt.state[p]["exp_avg"].clone())
    opt.param_groups[1]["betas"] = (0.9, 2.0)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\], got 2.0 \(param group 1\)"):
        opt.step()
    assert torch.equal(p, kept[0]) and torch.equal(q, kept[1]) and torch.equal(opt.state[p]["exp_avg"], kept[2])


@pytest.mark.parametrize("betas", [(1.0, 0.9), (0.9, 1.0)])
def test_betas_of_one_are_taken(betas):
    """lion-pytorch takes betas in [0, 1]: beta1 = 1 steps by the momentum's
    sign alone, beta2 = 1 keeps the momentum at 0 (and steps by the grad's sign)."""
    pair = lion_pair({"lr": 1e-3, "betas": betas}, layout="single")
    run = run_pair(pair, epochs=2, steps_per_epoch=5)
    for o, t in zip(run.our_params, run.torch_params):
        assert torch.equal(o, t)
