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

from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD
import schedule_specs

OPTIMIZERS = {
    "sgd": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, nesterov=True, **kw),
    "sgd without momentum": lambda ps, **kw: FusedSGD(ps, lr=0.1, **kw),
    "adam amsgrad": lambda ps, **kw: FusedAdam(ps, lr=0.01, amsgrad=True, weight_decay=0.1, **kw),
    "adamw": lambda ps, **kw: FusedAdamW(ps, lr=0.01, **kw),
    "lion": lambda ps, **kw: FusedLion(ps, lr=1e-3, weight_decay=0.1, **kw),
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


# ------------------------------------------------ bytes per parameter element
# What the optimizer holds per parameter element, after one step: the
# parameter + every tensor in opt.state (exp_avg, exp_avg_sq, max_exp_avg_sq,
# momentum_buffer, master_param), each distinct storage counted at its
# untyped_storage().nbytes(). Not counted: the grad (autograd's, in the
# parameter's dtype: +4 B fp32, +2 B bf16), the 0-dim float64 step counter
# of each parameter tensor (8 B per tensor, not per element; asserted to be
# the only 0-dim entries) and the schedule state (a few float64 per group).
MEMORY_KINDS = {
    "sgd": lambda ps, **kw: FusedSGD(ps, lr=0.1, **kw),
    "sgd momentum": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, **kw),
    "adam": lambda ps, **kw: FusedAdam(ps, lr=1e-3, **kw),
    "adam amsgrad": lambda ps, **kw: FusedAdam(ps, lr=1e-3, amsgrad=True, **kw),
    "lion": lambda ps, **kw: FusedLion(ps, lr=1e-4, **kw),
}
# mode: (parameter dtype, options, bytes per element for each of MEMORY_KINDS)
BYTES_PER_ELEMENT = {
    "fp32": (torch.float32, {}, (4, 8, 12, 16, 8)),
    "bf16 (torch's layout)": (torch.bfloat16, {}, (2, 4, 6, 8, 4)),
    "bf16 + master_weights": (torch.bfloat16, {"master_weights": True}, (6, 10, 14, 18, 10)),
    "bf16 + stochastic_rounding": (torch.bfloat16, {"stochastic_rounding": True}, (2, 4, 6, 8, 4)),
    # the same mode as the previous one: a bf16 parameter's states are bf16 already
    "bf16 + stochastic_rounding + state_dtype=bf16": (
        torch.bfloat16, {"stochastic_rounding": True, "state_dtype": torch.bfloat16}, (2, 4, 6, 8, 4)),
    "fp32 + state_dtype=bf16": (torch.float32, {"state_dtype": torch.bfloat16}, (4, 6, 8, 10, 6)),
    # exp_avg / momentum_buffer in fp16, exp_avg_sq / max_exp_avg_sq in bf16 (NOTE: [float16 second moments])
    "fp32 + state_dtype=fp16": (torch.float32, {"state_dtype": torch.float16}, (4, 6, 8, 10, 6)),
    "bf16 + master_weights + state_dtype=bf16": (
        torch.bfloat16, {"master_weights": True, "state_dtype": torch.bfloat16}, (6, 8, 10, 12, 8)),
    "bf16 + master_weights + stochastic_rounding + state_dtype=bf16": (
        torch.bfloat16, {"master_weights": True, "stochastic_rounding": True, "state_dtype": torch.bfloat16},
        (6, 8, 10, 12, 8)),
}


def transformer_like_params(dtype):
    """A small transformer's tensors: embedding, attention, MLP, norms, an odd-sized head (1,839,623 elements)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4096, 256), (768, 256), (768,), (256, 256), (256,), (1024, 256), (1024,), (256, 1024), (256,),
              (256,), (256,), (7, 256), (7,)]
    return [(torch.randn(s, generator=g) * 0.02).to(dtype).requires_grad_() for s in shapes]


def held_bytes(opt, params):
    """Bytes of the distinct storages of the parameters and their state tensors (0-dim step counters aside)."""
    storages = {}
    for p in params:
        storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
        for key, value in opt.state[p].items():
            if value.dim() == 0:
                assert key == "step" and value.dtype == torch.float64, (key, value)
                continue
            storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("kind", list(MEMORY_KINDS))
def test_bytes_per_parameter_element(kind):
    column = list(MEMORY_KINDS).index(kind)
    measured, held = {}, {}
    for mode, (dtype, options, expected) in BYTES_PER_ELEMENT.items():
        params = transformer_like_params(dtype)
        torch.manual_seed(7)  # the rounding seed: the two stochastic rounding modes draw the same
        opt = MEMORY_KINDS[kind](params, **options)
        g = torch.Generator().manual_seed(1)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
        numel = sum(p.numel() for p in params)
        measured[mode] = held_bytes(opt, params) / numel
        held[mode] = [p.detach().clone() for p in params] + [
            value for p in params for value in opt.state[p].values()]
        if options.get("state_dtype") == torch.float16:
            for p in params:
                for key, value in opt.state[p].items():
                    if key != "step":
                        assert value.dtype == (torch.bfloat16 if key.endswith("exp_avg_sq") else torch.float16), key
    assert measured == {mode: expected[column] for mode, (_, _, expected) in BYTES_PER_ELEMENT.items()}
    # bf16 + stochastic_rounding with and without state_dtype=bf16: one mode, the same bits
    same = held["bf16 + stochastic_rounding"], held["bf16 + stochastic_rounding + state_dtype=bf16"]
    assert len(same[0]) == len(same[1]) and all(torch.equal(a, b) for a, b in zip(*same))
