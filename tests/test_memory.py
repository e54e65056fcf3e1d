"""After the first step, step() and schedule_step() allocate no tensor memory:
every allocation the profiler sees (profile_memory=True, its [memory] events)
is listed, and the list must be empty.

The one case that does allocate, by design: a grad whose strides differ from
its parameter's (only a grad assigned by hand can: autograd gives a dense
parameter a grad in its own layout) is copied into a fresh tensor of the
parameter's layout on every step, because the kernels walk parameter and
grad storage in step. A metric or AMP tensor on another device than the
parameters is copied over too (CUDA only)."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lrsched_fused import FusedAdam, FusedAdamW, FusedSGD
import schedule_specs

OPTIMIZERS = {
    "sgd": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, nesterov=True, **kw),
    "sgd without momentum": lambda ps, **kw: FusedSGD(ps, lr=0.1, **kw),
    "adam amsgrad": lambda ps, **kw: FusedAdam(ps, lr=0.01, amsgrad=True, weight_decay=0.1, **kw),
    "adamw": lambda ps, **kw: FusedAdamW(ps, lr=0.01, **kw),
    "adam clipped": lambda ps, **kw: FusedAdam(ps, lr=0.01, max_grad_norm=1.0, **kw),
    "sgd clipped, p=3": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, max_grad_norm=0.5, grad_norm_type=3.0,
                                                  **kw),
}
SCHEDULES = schedule_specs.MEMORY_SCHEDULES
# the plateau schedules' metric, as a tensor or as a float
METRICS = {"Plateau, tensor metric": lambda: torch.tensor(2.0), "Plateau, float metric": lambda: 2.0}


def allocations(fn):
    """(op, bytes) for every allocation made while fn runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    found, op = [], None
    for event in prof.profiler.kineto_results.events():
        if event.name() != "[memory]":
            op = event.name()
        elif event.nbytes() > 0:
            found.append((op, event.nbytes()))
    return found


def model_params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(5, 3, dtype=dtype, requires_grad=True), torch.randn(70000, dtype=dtype, requires_grad=True),
            torch.randn(6, 4, dtype=dtype).t().requires_grad_(), torch.empty(0, dtype=dtype, requires_grad=True)]


def backward(params):
    """Grads from autograd, in each parameter's layout."""
    for p in params:
        p.grad = None
    sum((p * p).sum() for p in params).backward()


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_steps_after_the_first_allocate_nothing(optimizer, schedule):
    spec, interval = SCHEDULES[schedule]
    params = model_params()
    opt = OPTIMIZERS[optimizer](params, schedule=schedule_specs.ours(spec), schedule_interval=interval)
    metric = METRICS[schedule]() if schedule in METRICS else None

    def one_step():
        opt.step()
        if interval == "epoch" and spec is not None:
            opt.schedule_step(metric) if metric is not None else opt.schedule_step()

    backward(params)
    assert params[2].grad.stride() == params[2].stride()
    first = allocations(one_step)
    assert first or optimizer == "sgd without momentum", "the first step creates the state: the profiler must see it"
    for _ in range(3):
        backward(params)
        assert allocations(one_step) == []
    opt.param_groups[0]["lr"] = 0.05  # an lr set by hand is copied into the existing state
    assert allocations(one_step) == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("schedule", ["Cosine per step", "Plateau, tensor metric"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_master_weights_allocate_nothing_after_the_first_step(optimizer, schedule, dtype):
    """master_weights=True: the fp32 masters and states are created at the first step, and only then."""
    spec, interval = SCHEDULES[schedule]
    params = model_params(dtype)
    opt = OPTIMIZERS[optimizer](params, schedule=schedule_specs.ours(spec), schedule_interval=interval,
                                master_weights=True)
    metric = METRICS[schedule]() if schedule in METRICS else None

    def one_step():
        opt.step()
        if interval == "epoch":
            opt.schedule_step(metric)

    backward(params)
    first = allocations(one_step)
    assert sum(nbytes for _, nbytes in first) >= 4 * 70000, "the first step creates the fp32 masters"
    assert opt.state[params[1]]["master_param"].dtype == torch.float32
    for _ in range(3):
        backward(params)
        assert allocations(one_step) == []


def test_a_grad_in_another_layout_is_copied_once_per_step():
    """The documented allocation: one tensor the size of the parameter."""
    p = torch.randn(6, 4).t().requires_grad_()
    opt = FusedAdam([p], lr=0.01)
    p.grad = torch.randn(4, 6)  # contiguous, the parameter is not
    opt.step()
    assert allocations(opt.step) == [("aten::empty_strided", p.numel() * p.element_size())]


@pytest.mark.parametrize("options", [{"stochastic_rounding": True},
                                     {"stochastic_rounding": True, "state_dtype": torch.bfloat16},
                                     {"state_dtype": torch.float16}], ids=["SR", "SR, bf16 states", "fp16 states"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_precision_options_allocate_nothing_after_the_first_step(optimizer, options):
    """stochastic_rounding / state_dtype: the states (and step counters) are created at the first step only."""
    spec, interval = SCHEDULES["Cosine per step"]
    params = model_params(torch.bfloat16)
    opt = OPTIMIZERS[optimizer](params, schedule=schedule_specs.ours(spec), schedule_interval=interval, **options)
    backward(params)
    allocations(opt.step)
    for _ in range(3):
        backward(params)
        assert allocations(opt.step) == []
