"""Our AVX2 loops (NOTE: [CPU instruction sets]), and the 8-bit states' AVX-512
coding loops, give bit-identical results to our baseline loops, states included
(8-bit states: codes and absmax). The rest of the suite pins ATEN_CPU_CAPABILITY=default
(tests/conftest.py), which selects the baseline loops, so this runs the same
training in a subprocess at the machine's own capability and compares."""
import os
import subprocess
import sys

import pytest
import torch

from lrsched_fused import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys, torch
from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedSGD, schedules
print(torch.backends.cpu.get_cpu_capability(), file=sys.stderr)
from lrsched_fused import _C
print(_C.testing.coding_isa_8bit(), file=sys.stderr)
inputs = torch.load(sys.argv[2])  # made by the parent: torch.randn itself differs across instruction sets
results = {}
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for name, make in (
        ("sgd", lambda ps: FusedSGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
        ("adam", lambda ps: FusedAdam(ps, lr=0.01, weight_decay=0.1, amsgrad=True)),
        ("adamw", lambda ps: FusedAdamW(ps, lr=0.01, maximize=True,
                                        schedule=schedules.CosineAnnealingLR(T_max=3))),
        # 8-bit states: the AVX2 coding (gathers, the search table) against the scalar one
        # and its pipelined blocks (NOTE: [8-bit pipelined blocks]) against the block-by-block loop
        ("adamw-8bit", lambda ps: FusedAdamW(ps, lr=0.01, state_dtype="8bit", max_grad_norm=1.0)),
        ("sgd-8bit", lambda ps: FusedSGD(ps, lr=0.05, momentum=0.9, state_dtype="8bit")),
        ("lion-8bit", lambda ps: FusedLion(ps, lr=1e-3, weight_decay=0.1, state_dtype="8bit")),
        ("adam-8bit-master-sr", lambda ps: FusedAdam(ps, lr=0.01, weight_decay=0.1, state_dtype="8bit",
                                                     master_weights=True, stochastic_rounding=True)),
    ):
        if dtype == torch.float64 and "8bit" in name:
            continue
        params = [t.to(dtype).clone().requires_grad_() for t in inputs["params"]]
        opt = make(params)
        for step in range(20):
            for p, grad in zip(params, inputs["grads"][step]):
                p.grad = grad.to(dtype)
            opt.step()
            if step % 5 == 4:
                opt.schedule_step()
        results[f"{name}-{dtype}"] = [p.detach().clone() for p in params] + [
            v.clone() for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
torch.save(results, sys.argv[1])
"""


def make_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    sizes = (70000, 37, 1000, 3)
    inputs = {"params": [torch.randn(n, generator=g) for n in sizes],
              "grads": [[torch.randn(n, generator=g) for n in sizes] for _ in range(20)]}
    path = tmp_path / "inputs.pt"
    torch.save(inputs, path)
    return path


def run(tmp_path, capability):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = tmp_path / f"{capability or 'native'}.pt"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(make_inputs(tmp_path))], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    capability, coding = done.stderr.strip().splitlines()[:2]
    return torch.load(out), capability, coding


@pytest.mark.parametrize("pinned", [None, "avx2"])
def test_avx2_loops_match_the_baseline_loops_bit_for_bit(tmp_path, pinned):
    """At the machine's capability (on an AVX-512 CPU with VBMI the 8-bit
    states' coding runs its AVX-512 loops) and pinned to AVX2."""
    native, capability, coding = run(tmp_path, pinned)
    if capability not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU's capability is {capability}: only the baseline loops exist here")
    vbmi = _C.testing.codes_8bit(torch.zeros(16), True, "avx512") is not None  # this CPU runs the AVX-512 loops
    assert coding == ("avx512" if capability == "AVX512" and vbmi else "avx2"), coding
    print(f"capability {capability}: 8-bit coding loops {coding}")
    baseline, baseline_capability, baseline_coding = run(tmp_path, "default")
    assert (baseline_capability, baseline_coding) == ("DEFAULT", "baseline")
    assert native.keys() == baseline.keys()
    for key in native:
        for a, b in zip(native[key], baseline[key]):
            assert torch.equal(a, b), key
