"""master_weights=True: bf16/fp16 parameters stepped through fp32 master
weights (NOTE: [master weights] in csrc/op_checks.h).

The reference: torch's fused optimizer + scheduler stepping fp32 copies of
the parameters, fed the bf16/fp16 grads cast to fp32. After every step ours
must have
- state["master_param"] equal to the reference parameter (MASTER_RTOL, the
  relative error ||master - ref|| / ||ref|| of each tensor), and
- each bf16/fp16 parameter equal, exactly, to its master rounded to the
  parameter's dtype (round to nearest even, as Tensor.to does).
The tables cross torch's optimizer inputs, several schedules (a cycled
momentum among them), two param groups, a tensor larger than a CPU work
block, a zero-size tensor and None grads.
"""
import io

import pytest
import torch

from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD
from schedule_specs import MASTER_SCHEDULES as SCHEDULES
from torch_pair import (OUR_OPTIMIZERS, TORCH_OPTIMIZERS, assert_lr_sequences_close, compare,
                        masters_and_references, record_worst, relative_error)

# Worst measured on these tables (CPU, ATEN_CPU_CAPABILITY=default): 0.0, the
# master follows torch's fused fp32 kernel bit for bit (both compute in float32
# in the same order, and -std=c++20 keeps gcc from contracting to FMA): exact.
MASTER_RTOL = 0.0

CONFIGS = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.02, "momentum": 0.5, "dampening": 0.1, "nesterov": False, "maximize": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("adam", {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3, "maximize": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "amsgrad": True, "maximize": True, "weight_decay": 0.05}),
    ("lion", {"lr": 1e-3, "weight_decay": 0.1}),  # against lion-pytorch on fp32 copies
    ("lion", {"lr": 3e-4, "betas": (0.5, 0.9)}),
]

def master_pair(kind, kwargs, spec, dtype, *, epochs=8, steps_per_epoch=2, layout="mixed",
                check_every_step=True):
    """Runs the pair; asserts after every step. Returns the worst master error seen."""
    worst = 0.0

    def check_masters(pair, step):
        nonlocal worst
        if not check_every_step and step < (epochs - 1) * steps_per_epoch:
            return
        for i, (master, reference) in enumerate(masters_and_references(pair)):
            error = relative_error(master, reference)
            assert error <= MASTER_RTOL, f"param {i} at step {step}: master off the reference by {error:.2e}"
            worst = max(worst, error)

    def grads(step, index, param):
        if index == 0 and step % 3 == 1:
            return None
        return (torch.randn(param.shape, generator=gen, dtype=torch.float64) * 0.3).to(dtype)

    gen = torch.Generator().manual_seed(1)
    per_step = spec is not None and spec["name"] == "OneCycleLR"
    run = compare(kind, kwargs, spec=spec, layout=layout, dtype=dtype, master_weights=True,
                  interval="step" if per_step else "epoch", epochs=epochs, steps_per_epoch=steps_per_epoch,
                  grads=grads, after_step=check_masters)
    assert_lr_sequences_close(run.torch_lrs, run.our_lrs, "lr", "master weights", count_run=False)
    for p in run.pair.our_params:
        for key, value in run.pair.our_opt.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key
    record_worst("master weights", param=worst)
    return worst


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("kind,kwargs", CONFIGS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CONFIGS)])
def test_master_follows_fp32_reference(kind, kwargs, schedule, dtype):
    master_pair(kind, kwargs, SCHEDULES[schedule], dtype)


def test_many_tensors_against_reference():
    master_pair("adamw", {"lr": 0.01, "weight_decay": 0.1}, SCHEDULES["cosine"], torch.bfloat16, layout="many",
                epochs=4, check_every_step=False)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_fp32_params_unaffected(kind):
    """fp32 parameters take the plain path: no master, bit-identical to the flag off."""
    kwargs = {"lr": 0.05, "momentum": 0.9} if kind == "sgd" else {"lr": 0.01}
    init = [torch.randn(5, 4), torch.randn(7)]
    runs = []
    for flag in (False, True):
        ps = [t.clone().requires_grad_() for t in init]
        opt = OUR_OPTIMIZERS[kind](ps, master_weights=flag, **kwargs)
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        assert all("master_param" not in opt.state[p] for p in ps)
        runs.append(ps)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_mixed_dtypes_in_one_group():
    """A group of bf16 and fp32 parameters: the bf16 ones get masters and fp32 state, the fp32 ones neither."""
    low, high = torch.randn(6, dtype=torch.bfloat16, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = FusedAdam([low, high], lr=0.01, master_weights=True)
    low.grad, high.grad = torch.ones_like(low), torch.ones_like(high)
    opt.step()
    assert opt.state[low]["master_param"].dtype == torch.float32
    assert opt.state[low]["exp_avg"].dtype == torch.float32
    assert "master_param" not in opt.state[high]
    assert opt.state[high]["exp_avg"].dtype == torch.float32
    assert torch.equal(low.detach(), opt.state[low]["master_param"].to(torch.bfloat16))


def test_small_updates_are_not_lost():
    """The motivating case: an update below half an ulp of a bf16 weight is
    lost without masters and accumulates with them."""
    results = {}
    for flag in (False, True):
        p = torch.full((1000,), 1.0, dtype=torch.bfloat16, requires_grad=True)
        opt = FusedSGD([p], lr=1e-3, master_weights=flag)
        for _ in range(100):
            p.grad = torch.ones_like(p)
            opt.step()
        results[flag] = p.detach().float()
    assert torch.all(results[False] == 1.0)  # 1e-3 < half an ulp of 1.0 in bf16 (2**-8)
    assert torch.allclose(results[True], torch.full((1000,), 0.9, dtype=torch.bfloat16).float())


def test_grad_scaler_found_inf_leaves_everything():
    p = torch.randn(8, dtype=torch.bfloat16, requires_grad=True)
    opt = FusedAdamW([p], lr=0.01, master_weights=True)
    p.grad = torch.randn_like(p)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    param_before = p.detach().clone()
    opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(1.0)
    p.grad = torch.randn_like(p)
    opt.step()
    assert torch.equal(p.detach(), param_before)
    for key, value in before.items():
        assert torch.equal(opt.state[p][key], value), key


def test_grad_scale_unscales_like_plain_division():
    """With a GradScaler's scale the master receives the update of grad / scale."""
    torch.manual_seed(0)
    init = torch.randn(100, dtype=torch.bfloat16)
    grad = torch.randn(100, dtype=torch.bfloat16)
    a, b = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_a = FusedAdam([a], lr=0.01, master_weights=True)
    opt_b = FusedAdam([b], lr=0.01, master_weights=True)
    a.grad = grad * 8
    opt_a.grad_scale, opt_a.found_inf = torch.tensor(8.0), torch.tensor(0.0)
    opt_a.step()
    b.grad = grad.clone()
    opt_b.step()
    assert torch.equal(a.grad, grad)  # unscaled in place, as torch's fused optimizers do
    assert torch.equal(opt_a.state[a]["master_param"], opt_b.state[b]["master_param"])


# ---------------------------------------------------------------- state_dict

def _train(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()
    opt.schedule_step()


def _make(kind, params, **extra):
    from lrsched_fused import schedules
    schedule = schedules.StepLR(step_size=1, gamma=0.9)
    if kind == "sgd":
        return FusedSGD(params, lr=0.05, momentum=0.9, schedule=schedule, **extra)
    if kind == "lion":
        return FusedLion(params, lr=1e-3, weight_decay=0.1, schedule=schedule, **extra)
    return {"adam": FusedAdam, "adamw": FusedAdamW}[kind](params, lr=0.01, amsgrad=True, schedule=schedule, **extra)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw", "lion"])
def test_resume_is_bit_identical(kind, dtype):
    torch.manual_seed(0)
    init = [torch.randn(4, 3).to(dtype), torch.randn(70000).to(dtype)]
    straight = [t.clone().requires_grad_() for t in init]
    opt = _make(kind, straight, master_weights=True)
    for epoch in range(6):
        _train(opt, straight, 3, epoch)

    first = [t.clone().requires_grad_() for t in init]
    opt_a = _make(kind, first, master_weights=True)
    for epoch in range(2):
        _train(opt_a, first, 3, epoch)
    saved = opt_a.state_dict()
    for index in range(len(first)):
        assert saved["state"][index]["master_param"].dtype == torch.float32
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optimizer": saved}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = [t.clone().requires_grad_() for t in checkpoint["params"]]
    opt_b = _make(kind, resumed, master_weights=True)
    opt_b.load_state_dict(checkpoint["optimizer"])
    for p in resumed:
        for key, value in opt_b.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32, key  # not cast to the parameter's dtype
    for epoch in range(2, 6):
        _train(opt_b, resumed, 3, epoch)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)
    for a, b in zip(resumed, straight):
        for key in opt.state[b]:
            assert torch.equal(opt_b.state[a][key], opt.state[b][key]), key


def test_load_keeps_state_tensors():
    """load_state_dict copies into the existing fp32 masters and states (their data_ptr is kept)."""
    ps = [torch.randn(10, dtype=torch.bfloat16, requires_grad=True)]
    opt = _make("adam", ps, master_weights=True)
    _train(opt, ps, 2, 0)
    saved = opt.state_dict()
    pointers = {k: v.data_ptr() for k, v in opt.state[ps[0]].items()}
    _train(opt, ps, 2, 1)
    opt.load_state_dict(saved)
    assert {k: v.data_ptr() for k, v in opt.state[ps[0]].items()} == pointers
    assert torch.equal(opt.state[ps[0]]["master_param"], saved["state"][0]["master_param"])


@pytest.mark.parametrize("source", ["torch", "ours without the flag"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_checkpoint_without_masters_starts_them_from_the_parameter(kind, source):
    torch.manual_seed(0)
    init = [torch.randn(6, 5).to(torch.bfloat16)]
    ps = [t.clone().requires_grad_() for t in init]
    kwargs = {"lr": 0.05, "momentum": 0.9} if kind == "sgd" else {"lr": 0.01}
    if source == "torch":
        other = TORCH_OPTIMIZERS[kind](ps, **kwargs)
    else:
        other = OUR_OPTIMIZERS[kind](ps, **kwargs)
    _grads = torch.Generator().manual_seed(3)
    for _ in range(3):
        ps[0].grad = torch.randn(ps[0].shape, generator=_grads).to(torch.bfloat16)
        other.step()
    saved = other.state_dict()
    opt = OUR_OPTIMIZERS[kind](ps, master_weights=True, **kwargs)
    opt.load_state_dict(saved)
    state = opt.state[ps[0]]
    assert "master_param" not in state
    for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
        if key in state:
            assert state[key].dtype == torch.float32
            assert torch.equal(state[key], saved["state"][0][key].float())
    # The reference from here: fp32 copies of the parameter and of the loaded state.
    reference = [ps[0].detach().float().requires_grad_()]
    ref_opt = TORCH_OPTIMIZERS[kind](reference, fused=True, **kwargs)
    ref_state = {k: (v.float() if k != "step" else v.detach().clone().float()) for k, v in saved["state"][0].items()}
    ref_opt.load_state_dict({"state": {0: ref_state}, "param_groups": saved["param_groups"]})
    for _ in range(3):
        grad = torch.randn(ps[0].shape, generator=_grads).to(torch.bfloat16)
        ps[0].grad, reference[0].grad = grad, grad.float()
        opt.step()
        ref_opt.step()
        master = opt.state[ps[0]]["master_param"]
        assert relative_error(master, reference[0].detach()) <= MASTER_RTOL
        assert torch.equal(ps[0].detach(), master.to(torch.bfloat16))


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_checkpoint_with_masters_into_optimizer_without_flag_raises(kind):
    ps = [torch.randn(5, dtype=torch.bfloat16, requires_grad=True)]
    opt = _make(kind, ps, master_weights=True)
    _train(opt, ps, 2, 0)
    saved = opt.state_dict()
    plain = _make(kind, [ps[0].detach().clone().requires_grad_()])
    before = plain.state_dict()
    with pytest.raises(ValueError, match="master_param.*master_weights=True"):
        plain.load_state_dict(saved)
    assert plain.state_dict()["state"] == before["state"]
    # The documented way out: drop the masters, continue from the bf16 parameters.
    without = {**saved, "state": {k: {n: v for n, v in s.items() if n != "master_param"}
                                  for k, s in saved["state"].items()}}
    plain.load_state_dict(without)
    assert plain.state[plain.param_groups[0]["params"][0]]["step"].item() == 2


def test_masters_for_an_fp32_parameter_raise():
    src = [torch.randn(5, dtype=torch.bfloat16, requires_grad=True)]
    opt = _make("adam", src, master_weights=True)
    _train(opt, src, 1, 0)
    target = _make("adam", [torch.randn(5, requires_grad=True)], master_weights=True)
    with pytest.raises(ValueError, match="float32, master weights are kept for bfloat16/float16 only"):
        target.load_state_dict(opt.state_dict())


def test_torch_optimizer_loads_our_master_checkpoint():
    """A torch optimizer loads ours (states cast to the parameter's dtype; master_param is an extra key)."""
    ps = [torch.randn(5, dtype=torch.bfloat16, requires_grad=True)]
    opt = FusedAdam(ps, lr=0.01, master_weights=True)
    _train(opt, ps, 2, 0)
    theirs = torch.optim.Adam(ps, lr=0.01)
    theirs.load_state_dict(opt.state_dict())
    assert theirs.state[ps[0]]["exp_avg"].dtype == torch.bfloat16


def test_flag_must_be_bool():
    with pytest.raises(TypeError, match="master_weights must be True or False"):
        FusedAdam([torch.zeros(2, requires_grad=True)], master_weights="yes")


def test_op_refuses_bad_master_lists():
    from lrsched_fused import _ops
    p = torch.zeros(4, dtype=torch.bfloat16)
    g = torch.ones(4, dtype=torch.bfloat16)
    opt = FusedSGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    state = opt.schedule_state
    sgd_master = _ops.update_flags("sgd_step_", momentum=False, nesterov=False, maximize=False, master_weights=True,
                                   stochastic_rounding=False, states_8bit=False)
    adam_master = _ops.update_flags("adam_step_", amsgrad=False, decoupled_weight_decay=False, maximize=False,
                                    master_weights=True, stochastic_rounding=False, states_8bit=False)
    with pytest.raises(RuntimeError, match="master_param\\[0\\] must match.*Float"):
        _ops.update_step_("sgd_step_", [p], [g], [torch.zeros(4, dtype=torch.bfloat16)], state, 0, sgd_master)
    with pytest.raises(RuntimeError, match="master weights are taken for bfloat16 and float16 params only"):
        _ops.update_step_("sgd_step_", [p.float()], [g.float()], [torch.zeros(4)], state, 0, sgd_master)
    # the states share one dtype (bf16 states with master weights are a state_dtype; mixed ones are not)
    with pytest.raises(RuntimeError, match="exp_avg_sq\\[0\\] must match.*BFloat16"):
        _ops.update_step_("adam_step_", [p], [g], [torch.zeros_like(p), torch.zeros(4),
                                                   torch.zeros((), dtype=torch.float64), torch.zeros(4)],
                          state, 0, adam_master)


def test_deleting_the_master_restarts_it_from_the_parameter():
    """The README's recipe after writing parameters by hand."""
    p = torch.randn(6, dtype=torch.bfloat16, requires_grad=True)
    opt = FusedSGD([p], lr=0.1, master_weights=True)
    p.grad = torch.ones_like(p)
    opt.step()
    with torch.no_grad():
        p.fill_(2.0)
    del opt.state[p]["master_param"]
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(opt.state[p]["master_param"], torch.full((6,), 2.0))
    assert torch.equal(p.detach(), torch.full((6,), 2.0, dtype=torch.bfloat16))
