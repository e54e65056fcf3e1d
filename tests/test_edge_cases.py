"""Edge cases handled as torch handles them: each is driven side by side
with the stock torch optimizer + scheduler where torch defines the behaviour."""
import math

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD, schedules
from schedule_specs import EDGE_SCHEDULES as SCHEDULES
from torch_pair import (TORCH_OPTIMIZERS, assert_lr_sequences_close, build_pair, default_grads, relative_error,
                        run_pair)

# One option mix per optimizer that touches every state tensor.
PAIR_OPTIONS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adam": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
    "adamw": {"lr": 0.01, "amsgrad": True},
}
def drive(pair, epochs, grad=None, metric=None, rtol=1e-6):
    """Steps both sides with the same grads (grad(epoch, i, param) -> Tensor or
    None), one step and one schedule step per epoch; asserts lrs every epoch and params at the end."""
    run = run_pair(pair, epochs=epochs, grads=grad or default_grads(seed=3, none_grad_every=0),
                   metric=metric or (lambda epoch: [1.0, 2.0, 0.5, 0.6, 0.7, 0.3][epoch % 6]))
    assert_lr_sequences_close(run.torch_lrs, run.our_lrs, "lr", "edge cases", zero_atol=0.0, count_run=False)
    for a, b in zip(run.our_params, run.torch_params):
        assert_close_tensors(a, b, rtol)


def assert_close_tensors(ours, reference, rtol):
    """The same NaN and inf elements; the finite ones to ||a - b|| / ||b|| <= rtol."""
    assert torch.equal(ours.isnan(), reference.isnan())
    infinite = reference.isinf()
    assert torch.equal(ours[infinite], reference[infinite])
    finite = torch.isfinite(reference)
    assert relative_error(ours[finite], reference[finite]) <= rtol


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


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_add_param_group_during_training(schedule):
    """A group added after the schedule started joins it with its own lr as
    its base lr. torch's chainable StepLR and ReduceLROnPlateau (float min_lr)
    take the new group as it is; torch's CosineAnnealingLR needs its base_lrs
    extended by hand, else it fails at the first epoch with
    (t - 1 - T_max) % (2 T_max) == 0 (shown below); ours is torch's with that done."""
    torch.manual_seed(0)
    values = [[torch.randn(4), torch.randn(6)]]
    pair = pair_over("adam", values, schedule=schedule)
    drive(pair, epochs=3)
    late = torch.randn(3)
    pair.torch_params.append(late.clone().requires_grad_())
    pair.our_params.append(late.clone().requires_grad_())
    pair.torch_opt.add_param_group({"params": [pair.torch_params[-1]], "lr": 0.02})
    pair.our_opt.add_param_group({"params": [pair.our_params[-1]], "lr": 0.02})
    if schedule == "CosineAnnealingLR":
        pair.torch_sched.base_lrs.append(0.02)
    drive(pair, epochs=9)
    assert len(pair.our_opt.get_last_lr()) == 2


def test_torch_cosine_fails_on_a_late_group_without_base_lrs():
    """Why the test above extends torch's base_lrs: without it torch fails."""
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": 0.2})
    with pytest.raises(ValueError, match="zip"):
        for _ in range(4):
            opt.step()
            sched.step()


@pytest.mark.parametrize("schedule", [None] + list(SCHEDULES))
@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_lr_zero_as_in_torch(kind, schedule):
    """lr = 0: parameters stay (but for nothing: weight decay is scaled by the
    lr too), state moves; a cosine with eta_min > 0 lifts the lr off 0 as torch's does."""
    pair = build_pair(kind, dict(PAIR_OPTIONS[kind], lr=0.0), layout="single", spec=SCHEDULES.get(schedule))
    init = [p.detach().clone() for p in pair.our_params]
    drive(pair, epochs=6)
    if schedule != "CosineAnnealingLR":
        assert all(torch.equal(p, q) for p, q in zip(pair.our_params, init))


@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_nan_and_inf_gradients_propagate_as_in_torch(kind):
    """A NaN (and an inf) grad element poisons that element as in torch; the
    others carry on; every state tensor agrees too."""
    def grad(epoch, i, p):
        g = torch.full(p.shape, 0.5 + epoch, dtype=p.dtype)
        if epoch == 1:
            g.view(-1)[0] = math.nan
            g.view(-1)[-1] = math.inf
        return g
    # The for-loop reference: torch's fused CPU amsgrad max drops a NaN in the
    # scalar tail of a tensor only (NOTE: [NaN in amsgrad's max], csrc/update_math.h).
    pair = build_pair(kind, PAIR_OPTIONS[kind], layout="single", torch_impl="for-loop")
    drive(pair, epochs=4, grad=grad)
    assert any(p.isnan().any() for p in pair.our_params), "the NaN must reach the parameters"
    assert_same_state(pair.torch_opt, pair.our_opt)


def assert_same_state(torch_opt, our_opt, rtol=1e-6):
    """Same per-parameter state entries and values (torch's step may be float32;
    our SGD with momentum also keeps a step, the steps its buffer took)."""
    torch_state, our_state = torch_opt.state_dict()["state"], our_opt.state_dict()["state"]
    assert sorted(torch_state) == sorted(our_state)
    for index, state in torch_state.items():
        assert set(state) <= set(our_state[index]) and set(our_state[index]) - set(state) <= {"step"}, index
        for key, value in state.items():
            assert_close_tensors(our_state[index][key].to(value.dtype), value, rtol)


def pair_over(kind, values, *, schedule=None, torch_impl="fused"):
    """The pair over one group per list in ``values``; the second group at half the lr."""
    return build_pair(kind, PAIR_OPTIONS[kind], values=values, spec=SCHEDULES.get(schedule), torch_impl=torch_impl)


@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_zero_size_parameters(kind):
    """A zero-size tensor beside others and a group of only zero-size tensors:
    state is created for them as torch does, and the rest matches."""
    values = [[torch.randn(3, 2), torch.empty(0), torch.empty(2, 0)], [torch.empty(0, 5)]]
    pair = pair_over(kind, values, schedule="CosineAnnealingLR")
    drive(pair, epochs=4)
    assert_same_state(pair.torch_opt, pair.our_opt)


@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_none_grads_on_some_steps(kind):
    """A parameter without a grad is skipped: its step count and moments stay,
    as in torch (the step counts are compared per parameter)."""
    values = [[torch.randn(4), torch.randn(3, 3)], [torch.randn(5)]]
    pair = pair_over(kind, values, schedule="StepLR", torch_impl="for-loop")
    drive(pair, epochs=7, grad=lambda epoch, i, p: None if (epoch + i) % 3 == 0 else torch.full(
        p.shape, 0.1 * (epoch + 1) * (i + 1)) * torch.linspace(-1, 1, p.numel()).view(p.shape))
    assert_same_state(pair.torch_opt, pair.our_opt)
    if kind != "sgd":
        assert len({float(s["step"]) for s in pair.our_opt.state.values()}) > 1, "the step counts must differ"


@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_a_layer_frozen_and_unfrozen_through_autograd(kind):
    """requires_grad_(False) + zero_grad(set_to_none=True): the frozen layer
    gets no grad, its state waits; unfrozen, it resumes where torch's does."""
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ours = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ours.load_state_dict(reference.state_dict())
    opts = PAIR_OPTIONS[kind]
    torch_opt = TORCH_OPTIMIZERS[kind](reference.parameters(), foreach=False, **opts)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=3)
    our_opt = {"sgd": FusedSGD, "adam": FusedAdam, "adamw": FusedAdamW}[kind](
        list(ours.parameters()), **opts, schedule=schedules.CosineAnnealingLR(T_max=3))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for epoch in range(8):
        frozen = epoch in (0, 3, 4)  # frozen from the start, then again mid-run
        for model, opt in ((reference, torch_opt), (ours, our_opt)):
            model[0].requires_grad_(not frozen)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            assert (model[0].weight.grad is None) == frozen
            opt.step()
        torch_sched.step()
        our_opt.schedule_step()
    for a, b in zip(ours.parameters(), reference.parameters()):
        assert_close_tensors(a.detach(), b.detach(), 1e-6)
    assert_same_state(torch_opt, our_opt)


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


@pytest.mark.parametrize("grad_layout", ["param's strides", "contiguous"])
@pytest.mark.parametrize("kind", list(PAIR_OPTIONS))
def test_channels_last_parameter(kind, grad_layout):
    """A 4-d channels_last parameter (dense, not contiguous) against torch's
    for-loop optimizer, with grads in its layout or contiguous."""
    torch.manual_seed(0)
    value = torch.randn(3, 4, 2, 5).to(memory_format=torch.channels_last)
    pair = pair_over(kind, [[value]], schedule="StepLR", torch_impl="for-loop")
    assert not pair.our_params[0].is_contiguous() and pair.our_params[0].is_contiguous(memory_format=torch.channels_last)
    def grad(epoch, i, p):
        g = torch.randn(p.shape)
        return g.to(memory_format=torch.channels_last) if grad_layout == "param's strides" else g
    drive(pair, epochs=5, grad=grad)
    assert pair.our_params[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_nan_and_inf_metrics_as_in_torch(mode, threshold_mode):
    """NaN first (best stays at its start value), +-inf, NaN mid-run; as a
    float64 tensor, a float32 tensor and a Python float."""
    metrics = [math.nan, 1.0, math.inf, math.nan, -math.inf, 2.0, math.nan, math.inf, 0.5, -math.inf, math.nan]
    for as_value in (lambda v: torch.tensor(v, dtype=torch.float64), lambda v: torch.tensor(v), float):
        kwargs = {"mode": mode, "threshold_mode": threshold_mode, "patience": 1, "factor": 0.5, "cooldown": 1}
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
        ours = FusedSGD([torch.zeros(1, requires_grad=True)], lr=0.1, schedule=schedules.ReduceLROnPlateau(**kwargs))
        for epoch, metric in enumerate(metrics):
            torch_sched.step(metric)
            ours.schedule_step(as_value(metric))
            assert ours.get_last_lr() == torch_sched.get_last_lr(), f"epoch {epoch}"
        assert ours.get_last_lr() != [0.1], "the sequence must trigger a reduction"


def adam_run_from_step(impl, step, epochs=4):
    """float64 Adam (betas close to 1, so the bias corrections still depend on
    the step) resumed at ``step`` through load_state_dict; returns the params."""
    torch.manual_seed(0)
    p = torch.randn(8, dtype=torch.float64, requires_grad=True)
    kwargs = {"lr": 0.1, "betas": (1 - 1e-7, 1 - 1e-8)}
    opt = {"ours": lambda: FusedAdam([p], **kwargs),
           "torch for-loop": lambda: torch.optim.Adam([p], foreach=False, **kwargs),
           "torch fused": lambda: torch.optim.Adam([p], fused=True, **kwargs)}[impl]()
    state = {"step": torch.tensor(float(step), dtype=torch.float64),
             "exp_avg": torch.full((8,), 0.3, dtype=torch.float64),
             "exp_avg_sq": torch.full((8,), 0.2, dtype=torch.float64)}
    opt.load_state_dict({"state": {0: state}, "param_groups": [{**opt.param_groups[0], "params": [0]}]})
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        p.grad = torch.randn(8, generator=gen, dtype=torch.float64)
        opt.step()
    assert float(opt.state[p]["step"]) == float(step + epochs) or impl == "torch fused"
    return p.detach()


@pytest.mark.parametrize("k", [1, 3, 2**20 + 1])
def test_step_counts_beyond_2_pow_24_keep_exact_bias_correction(k):
    """Against torch's for-loop Adam, which keeps a loaded float64 step as is
    (its fused path casts the step to float32, exact only to 2**24)."""
    ours = adam_run_from_step("ours", 2**24 + k)
    reference = adam_run_from_step("torch for-loop", 2**24 + k)
    torch.testing.assert_close(ours, reference, rtol=1e-13, atol=0)
    # The check can fail: a float32 step (torch's fused Adam) lands elsewhere.
    float32_counter = adam_run_from_step("torch fused", 2**24 + k)
    assert relative_error(float32_counter, reference) > 1e-11
