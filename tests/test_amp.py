"""torch.amp.GradScaler drives ours like torch's fused optimizers: the
unscale and the inf check happen in the kernel, and a step with inf/nan
grads changes nothing."""
import pytest
import torch

from lrsched_fused import FusedAdam, FusedSGD, schedules
from torch_pair import relative_error

PAIRS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, fused=True),
            lambda ps, **kw: FusedSGD(ps, lr=0.05, momentum=0.9, **kw)),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1, fused=True),
             lambda ps, **kw: FusedAdam(ps, lr=0.01, weight_decay=0.1, **kw)),
}


@pytest.mark.parametrize("kind", list(PAIRS))
def test_grad_scaler_matches_torch_fused_and_skips_inf_steps(kind):
    torch.manual_seed(0)
    init = [torch.randn(8, 4), torch.randn(4)]
    ref_params = [t.clone().requires_grad_() for t in init]
    our_params = [t.clone().requires_grad_() for t in init]
    make_ref, make_ours = PAIRS[kind]
    ref, ours = make_ref(ref_params), make_ours(our_params)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    our_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    x = torch.randn(16, 8)
    for step in range(12):
        for params, opt, scaler in ((ref_params, ref, ref_scaler), (our_params, ours, our_scaler)):
            w, b = params
            loss = ((x @ w + b) ** 2).mean()
            if step in (4, 9):
                loss = loss * float("inf")  # an overflow: this step must be skipped
            scaler.scale(loss).backward()
            before = [p.detach().clone() for p in params]
            state_before = {k: v.clone() for k, v in opt.state[params[0]].items()} if opt.state else {}
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            if step in (4, 9):
                assert all(torch.equal(a, p) for a, p in zip(before, params))
                for k, v in state_before.items():
                    assert torch.equal(opt.state[params[0]][k], v)
        assert ref_scaler.get_scale() == our_scaler.get_scale()
    for a, b in zip(our_params, ref_params):
        assert relative_error(a, b) <= 1e-6


def test_skip_schedule_on_overflow():
    for skip, expected_epochs in ((False, 3), (True, 2)):
        p = torch.randn(3, requires_grad=True)
        opt = FusedAdam([p], lr=0.1, schedule=schedules.StepLR(step_size=1, gamma=0.5), schedule_interval="step",
                        skip_schedule_on_overflow=skip)
        scaler = torch.amp.GradScaler("cpu")
        for step in range(3):
            loss = p.sum() * (float("inf") if step == 1 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        assert opt.get_last_lr() == [0.1 * 0.5 ** expected_epochs]


@pytest.mark.parametrize("kind", list(PAIRS))
def test_unscaled_grads_are_written_back_for_a_grad_with_other_strides(kind):
    """torch's fused optimizers leave p.grad unscaled after scaler.step(); so
    does ours when a grad had to be copied to its (transposed) parameter's layout."""
    torch.manual_seed(0)
    weight = torch.randn(8, 4)
    grad = torch.randn(4, 8)
    plain = weight.t().contiguous().requires_grad_()
    transposed = weight.clone().t().requires_grad_()  # strides (1, 4)
    for p in (plain, transposed):
        opt = PAIRS[kind][1]([p])
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        scaler.scale(torch.zeros(()))  # sets the scale up, as scaling the loss does
        p.grad = grad.contiguous() * 256.0  # contiguous: other strides than `transposed`
        scaler.step(opt)
    assert transposed.grad.stride() != transposed.stride()
    torch.testing.assert_close(transposed.grad, grad, rtol=0, atol=0)
    torch.testing.assert_close(plain.grad, grad, rtol=0, atol=0)
    torch.testing.assert_close(transposed.detach(), plain.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("nesterov", [False, True], ids=["dampening", "nesterov"])
def test_sgd_momentum_overflow_before_the_first_real_step_leaves_no_trace(nesterov):
    """GradScaler skips steps 0, 1 and 5 (overflow). torch's for-loop SGD
    under GradScaler does not run at all on those steps, so its first real
    step (2) starts the momentum buffer at the grad. Ours must too: the
    kernel decides "first step" from a step counter that a skipped step leaves
    at 0, not from whether a buffer exists. dampening != 0 (when not nesterov)
    so that a buffer of zeros would not pass either."""
    torch.manual_seed(0)
    init = [torch.randn(8, 4), torch.randn(4)]
    ref_params = [t.clone().requires_grad_() for t in init]
    our_params = [t.clone().requires_grad_() for t in init]
    options = dict(lr=0.05, momentum=0.9, dampening=0.0 if nesterov else 0.3, nesterov=nesterov)
    ref = torch.optim.SGD(ref_params, foreach=False, **options)
    ours = FusedSGD(our_params, **options)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=100)
    our_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=100)
    x = torch.randn(16, 8)
    overflows = (0, 1, 5)
    for step in range(9):
        for params, opt, scaler in ((ref_params, ref, ref_scaler), (our_params, ours, our_scaler)):
            w, b = params
            loss = ((x @ w + b) ** 2).mean()
            if step in overflows:
                loss = loss * float("inf")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
        assert our_scaler.get_scale() == ref_scaler.get_scale()
        for a, b in zip(our_params, ref_params):
            assert relative_error(a, b) <= 1e-6, f"step {step}"
        if step >= overflows[1] + 1:
            for a, b in zip(our_params, ref_params):
                assert relative_error(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"]) <= 1e-6
    real_steps = 9 - len(overflows)
    assert all(float(ours.state[p]["step"]) == real_steps for p in our_params)
