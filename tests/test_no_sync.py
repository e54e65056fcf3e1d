"""step() and schedule_step(metric_tensor) read nothing back to the host:
no aten._local_scalar_dense (item / float / bool) and no copy off the device."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD, schedules
import schedule_specs

FORBIDDEN = {"_local_scalar_dense", "item", "equal", "is_nonzero"}


class HostReadDetector(TorchDispatchMode):
    """Fails on any op that hands a device value to the host."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops.append(str(func))
        if name in FORBIDDEN:
            raise AssertionError(f"host sync: {func}")
        if name in ("_to_copy", "to", "copy_"):
            out_device = kwargs.get("device")
            src = args[1] if name == "copy_" else args[0]
            dst_device = args[0].device if name == "copy_" else out_device
            if dst_device is not None and torch.device(dst_device).type == "cpu" and src.device.type != "cpu":
                raise AssertionError(f"device-to-host copy: {func}")
        return func(*args, **kwargs)


OPTIMIZERS = {
    "sgd": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, **kw),
    "adam": lambda ps, **kw: FusedAdam(ps, lr=0.01, amsgrad=True, **kw),
    "adamw": lambda ps, **kw: FusedAdamW(ps, lr=0.01, **kw),
    "lion": lambda ps, **kw: FusedLion(ps, lr=1e-3, weight_decay=0.1, **kw),
    "adamw clipped": lambda ps, **kw: FusedAdamW(ps, lr=0.01, max_grad_norm=1.0, **kw),
    "sgd clipped, inf norm": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, max_grad_norm=0.5,
                                                       grad_norm_type=float("inf"), **kw),
    # 8-bit states (the 70000-element parameter's; the small one keeps float32 states)
    "adamw 8bit": lambda ps, **kw: FusedAdamW(ps, lr=0.01, state_dtype="8bit", **kw),
    "sgd 8bit clipped": lambda ps, **kw: FusedSGD(ps, lr=0.1, momentum=0.9, state_dtype="8bit", max_grad_norm=1.0,
                                                  **kw),
    "lion 8bit": lambda ps, **kw: FusedLion(ps, lr=1e-3, state_dtype="8bit", **kw),
}
SCHEDULES = schedule_specs.NO_SYNC_SCHEDULES
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_step_and_schedule_step_do_not_read_device_values(optimizer, schedule, device):
    params = [torch.randn(5, 3, device=device, requires_grad=True), torch.randn(70000, device=device,
                                                                                   requires_grad=True)]
    opt = OPTIMIZERS[optimizer](params, schedule=schedule_specs.ours(SCHEDULES[schedule]))
    metric = torch.tensor(1.0, device=device)
    detector = HostReadDetector()
    for epoch in range(4):
        for p in params:
            p.grad = torch.randn_like(p)
        with detector:
            opt.step()  # the first step creates the state lazily; that may allocate, not sync
            opt.step()
            if "plateau" in schedule:
                metric.add_(0.5)
                opt.schedule_step(metric)
            else:
                opt.schedule_step()
    assert any("lrsched_fused" in op for op in detector.ops), "the detector must see our ops"


# The precision options (lrsched_fused/precision.py), each with bf16 and fp16 parameters.
PRECISION_OPTIONS = {
    "master weights": {"master_weights": True},
    "stochastic rounding": {"stochastic_rounding": True},
    "bf16 states, stochastic rounding": {"state_dtype": torch.bfloat16, "stochastic_rounding": True},
    "fp16 states, master weights": {"state_dtype": torch.float16, "master_weights": True},
    "8-bit states, master weights": {"state_dtype": "8bit", "master_weights": True},
    "8-bit states, stochastic rounding": {"state_dtype": "8bit", "stochastic_rounding": True},
}
# Each optimizer with each precision option it takes: the "8bit" entries set
# their own state_dtype, and amsgrad ("adam") takes no 8-bit states.
PRECISION_PAIRS = [(o, p) for o in OPTIMIZERS for p in PRECISION_OPTIONS
                   if "8bit" not in o and not (o == "adam" and "8-bit" in p)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule", ["plateau", "one cycle (momentum on the device)"])
@pytest.mark.parametrize("optimizer, precision", PRECISION_PAIRS)
def test_precision_options_do_not_read_device_values(optimizer, schedule, precision, device):
    params = [torch.randn(5, 3, device=device, dtype=torch.bfloat16, requires_grad=True),
              torch.randn(70000, device=device, dtype=torch.float16, requires_grad=True)]
    options = PRECISION_OPTIONS[precision]
    opt = OPTIMIZERS[optimizer](params, schedule=schedule_specs.ours(SCHEDULES[schedule]), **options)
    metric = torch.tensor(1.0, device=device)
    detector = HostReadDetector()
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        with detector:
            opt.step()
            opt.step()
            if "plateau" in schedule:
                metric.add_(0.5)
                opt.schedule_step(metric)
            else:
                opt.schedule_step()
    assert all(("master_param" in opt.state[p]) == options.get("master_weights", False) for p in params)
    assert any("lrsched_fused" in op for op in detector.ops), "the detector must see our ops"


def test_step_interval_step_does_not_read_device_values():
    p = torch.randn(10, requires_grad=True)
    opt = FusedAdam([p], lr=0.01, schedule=schedules.CosineAnnealingLR(T_max=5), schedule_interval="step")
    p.grad = torch.randn(10)
    with HostReadDetector():
        for _ in range(3):
            opt.step()


def test_the_detector_catches_a_host_read():
    with pytest.raises(AssertionError, match="host sync"):
        with HostReadDetector():
            float(torch.ones(()) * 2)
