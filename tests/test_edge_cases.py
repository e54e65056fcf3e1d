"""Edge cases handled as torch handles them."""
import pytest
import torch

from lrsched_fused import FusedAdam, FusedSGD, schedules
from torch_pair import relative_error


def test_sgd_momentum_buffer_starts_at_the_first_grad_of_each_param():
    """A param with no grad on the first step starts its buffer at its own first
    grad, as torch's for-loop SGD does (torch's fused SGD fails there)."""
    torch.manual_seed(0)
    init = [torch.randn(5), torch.randn(3)]
    ref_params = [t.clone().requires_grad_() for t in init]
    our_params = [t.clone().requires_grad_() for t in init]
    ref = torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, dampening=0.2, foreach=False)
    ours = FusedSGD(our_params, lr=0.1, momentum=0.9, dampening=0.2)
    for step in range(6):
        for i, (a, b) in enumerate(zip(ref_params, our_params)):
            if i == 1 and step < 2:
                a.grad = b.grad = None
            else:
                g = torch.randn(a.shape)
                a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    for a, b in zip(our_params, ref_params):
        assert relative_error(a, b) <= 1e-6


def test_frozen_then_unfrozen_layer_and_add_param_group_during_training():
    torch.manual_seed(0)
    init = [torch.randn(4), torch.randn(6), torch.randn(2)]
    ref_params = [t.clone().requires_grad_() for t in init]
    our_params = [t.clone().requires_grad_() for t in init]
    ref = torch.optim.Adam(ref_params[:2], lr=0.01, fused=True)
    ref_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(ref, patience=0, factor=0.5)
    ours = FusedAdam(our_params[:2], lr=0.01, schedule=schedules.ReduceLROnPlateau(patience=0, factor=0.5))
    for epoch in range(8):
        if epoch == 3:  # a new group joins, with its own lr, as torch's scheduler then treats it
            ref.add_param_group({"params": [ref_params[2]], "lr": 0.02})
            ours.add_param_group({"params": [our_params[2]], "lr": 0.02})
            ref_sched.min_lrs.append(0)  # torch needs its min_lrs extended by hand
        active = ref_params if epoch >= 3 else ref_params[:2]
        for i, a in enumerate(active):
            b = our_params[i]
            if i == 1 and 1 <= epoch <= 2:  # frozen, then unfrozen
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape)
            a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
        metric = [1.0, 1.1, 1.2, 0.5, 0.6, 0.7, 0.8, 0.9][epoch]
        ref_sched.step(metric)
        ours.schedule_step(torch.tensor(metric))
        assert ours.get_last_lr() == pytest.approx([g["lr"] for g in ref.param_groups], rel=1e-12)
    for a, b in zip(our_params, ref_params):
        assert relative_error(a, b) <= 1e-6


def test_lr_zero_leaves_params_but_moves_state():
    p = torch.ones(4, requires_grad=True)
    opt = FusedAdam([p], lr=0.0)
    p.grad = torch.ones(4)
    opt.step()
    assert torch.equal(p, torch.ones(4)) and float(opt.state[p]["step"]) == 1.0
    assert torch.equal(opt.state[p]["exp_avg"], torch.full((4,), 0.1))


def test_nan_gradient_propagates_as_in_torch():
    ref_p, p = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    ref = torch.optim.Adam([ref_p], lr=0.1, fused=True)
    opt = FusedAdam([p], lr=0.1)
    g = torch.tensor([1.0, float("nan"), 2.0])
    ref_p.grad, p.grad = g.clone(), g.clone()
    ref.step()
    opt.step()
    torch.testing.assert_close(p, ref_p, equal_nan=True)


def test_non_contiguous_dense_parameter_with_a_grad_of_other_strides():
    """Compared with torch's for-loop Adam: torch 2.14's fused CPU Adam walks
    param and grad storage in step even when their strides differ."""
    torch.manual_seed(0)
    base = torch.randn(6, 4)
    ref_p = base.clone().t().requires_grad_()  # dense, not contiguous
    p = base.clone().t().requires_grad_()
    ref = torch.optim.Adam([ref_p], lr=0.1, foreach=False)
    opt = FusedAdam([p], lr=0.1)
    for _ in range(5):
        g = torch.randn(4, 6)  # contiguous: other strides than the param
        ref_p.grad, p.grad = g.clone(), g.clone()
        ref.step()
        opt.step()
    assert relative_error(p, ref_p) <= 1e-6


def test_step_counts_beyond_2_pow_24_keep_exact_bias_correction():
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = FusedAdam([p], lr=0.1, betas=(0.5, 0.5))
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    opt.state[p]["step"].fill_(2.0 ** 24 + 1)  # float32 would round this to 2**24
    opt.step()
    assert float(opt.state[p]["step"]) == 2.0 ** 24 + 2
