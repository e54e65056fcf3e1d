"""The benchmark harness (benchmarks/bench.py, the one harness for the CPU and
CUDA) runs every competitor of its table, and the package does not import
what only the harness needs."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("lrsched_bench", os.path.join(ROOT, "benchmarks", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_importing_the_optimizers_imports_no_plotting_or_deepspeed():
    code = ("import sys; from lrsched_fused import FusedAdam, FusedSGD, schedules, as_lr_scheduler; "
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'deepspeed'}); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_harness_times_every_cpu_competitor(tmp_path):
    bench = load_bench()
    path = tmp_path / "bench.json"
    bench.main(["--workloads", "tiny", "--dtypes", "fp32", "--optimizers", "SGD", "Adam",
                "--schedules", "ReduceLROnPlateau", "--rounds", "1", "--min-run-time", "0.01", "--warmup", "1",
                "--threads", "1", "--json", str(path)])
    record = json.loads(path.read_text())
    timed = {(r["optimizer"], r["impl"]): r for r in record["results"] if "median_ms" in r}
    competitors = bench.competitors_for(torch.device("cpu"), None)
    assert {"add_ ceiling", "torch-forloop", "torch-foreach", "torch-fused", "ours"} <= set(competitors)
    for optimizer in ("SGD", "Adam"):
        for impl in competitors:
            if not bench.COMPETITORS[impl].applies_to(optimizer, "fp32"):  # lion-pytorch, torch-muon, deepspeed for
                # SGD, bitsandbytes' 8-bit optimizers on fp32 parameters with fp32 states
                continue
            row = timed[(optimizer, impl)]
            assert row["median_ms"] > 0 and row["tensors"] == 4
            assert math.isfinite(row["ceiling_gbps"]) and row["share_of_ceiling"] > 0 and row["ns_per_tensor"] > 0
    assert set(record["competitors"]) == set(competitors)


def test_the_clip_rows_time_torchs_recipe_and_ours(tmp_path):
    """A "+clip" row: torch's clip_grad_norm_ + step against ours with
    max_grad_norm; the grads every implementation reads stay as they were."""
    bench = load_bench()
    args = bench.parse_args(["--rounds", "1", "--min-run-time", "0.01", "--warmup", "1", "--threads", "1"])
    config = bench.Config("tiny", "fp32", "Adam", "CosineAnnealingLR", clip=True)
    inputs = bench.Inputs(bench.WORKLOADS["tiny"].shapes(), torch.float32, torch.device("cpu"))
    grads = [g.clone() for g in inputs.grads]
    rows = bench.run_config(config, inputs, ["add_ ceiling", "torch-fused", "ours"], args, bench.time_cpu)
    assert {r["impl"] for r in rows if "median_ms" in r} == {"add_ ceiling", "torch-fused", "ours"}
    assert all(r["optimizer"] == "Adam+clip" for r in rows)
    assert next(r for r in rows if r["impl"] == "ours")["bytes_per_param"] == 4 * (7 + 1)
    assert all(torch.equal(a, b) for a, b in zip(grads, inputs.grads))
    assert all(c.clip for c in bench.CLIP_CONFIGS)
    assert {c.optimizer for c in bench.CLIP_CONFIGS} == set(bench.ELEMENTWISE_OPTIMIZERS)


def test_the_gpu_check_covers_what_it_promises():
    """benchmarks/gpu_check.sh: 100M+ parameters and 1000+ small tensors, fp32,
    bf16 and bf16 with master weights, Adam and SGD, every CUDA competitor;
    GPT-2 small Adam with stochastic rounding, Lion and Muon; AdamW with 8-bit states."""
    bench = load_bench()
    workloads = {c.workload for c in bench.GPU_CHECK_CONFIGS}
    sizes = {w: bench.WORKLOADS[w].shapes() for w in workloads}
    assert any(sum(math.prod(s) for s in shapes) >= 100e6 for shapes in sizes.values())
    assert any(len(shapes) >= 1000 for shapes in sizes.values())
    assert {c.dtype for c in bench.GPU_CHECK_CONFIGS} == {"fp32", "bf16", "bf16+master", "bf16+SR",
                                                          "fp32+8bit states"}
    assert bench.Config("gpt2-small", "bf16+SR", "Adam", "CosineAnnealingLR") in bench.GPU_CHECK_CONFIGS
    assert bench.Config("gpt2-small", "fp32+8bit states", "AdamW", "CosineAnnealingLR") in bench.GPU_CHECK_CONFIGS
    assert {c.optimizer for c in bench.GPU_CHECK_CONFIGS} == {"SGD", "Adam", "AdamW", "Lion", "Muon"}
    cuda = [name for name, c in bench.COMPETITORS.items() if "cuda" in c.devices]
    assert cuda == ["add_ ceiling", "torch-fused", "torch-tensor-lr", "ours", "ours+cudagraph", "torch-muon",
                    "lion-pytorch", "bitsandbytes-8bit"]


def test_the_harness_times_master_weights(tmp_path):
    """bf16+master rows: ours with master_weights=True, torch on fp32 copies
    written back to bf16; the byte model's 28 B/param for Adam."""
    bench = load_bench()
    path = tmp_path / "bench.json"
    bench.main(["--workloads", "tiny", "--dtypes", "bf16+master", "--optimizers", "Adam", "SGD",
                "--schedules", "CosineAnnealingLR", "--rounds", "1", "--min-run-time", "0.01", "--warmup", "1",
                "--threads", "1", "--json", str(path)])
    record = json.loads(path.read_text())
    rows = {(r["optimizer"], r["impl"]): r for r in record["results"] if "median_ms" in r}
    assert rows[("Adam", "ours")]["bytes_per_param"] == 28
    assert rows[("SGD", "ours")]["bytes_per_param"] == 20
    assert rows[("Adam", "torch-fused")]["median_ms"] > 0


def test_the_harness_times_stochastic_rounding_and_bf16_states(tmp_path, monkeypatch):
    """bf16+SR rows: ours with stochastic_rounding=True on bf16 parameters,
    the bytes of bf16; fp32+bf16 states rows: ours with state_dtype=bfloat16,
    its own bytes (20 B/param Adam), torch's fp32 bytes (28) for torch."""
    bench = load_bench()
    built = []

    class RecordedFusedAdam(bench.FusedAdam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)
    monkeypatch.setitem(bench.OUR_OPTIMIZER, "Adam", RecordedFusedAdam)
    path = tmp_path / "bench.json"
    bench.main(["--workloads", "tiny", "--dtypes", "bf16+SR", "fp32+bf16 states", "--optimizers", "Adam", "SGD",
                "--schedules", "CosineAnnealingLR", "--competitors", "torch-fused", "ours", "--rounds", "1",
                "--min-run-time", "0.01", "--warmup", "1", "--threads", "1", "--json", str(path)])
    record = json.loads(path.read_text())
    rows = {(r["dtype"], r["optimizer"], r["impl"]): r for r in record["results"] if "median_ms" in r}
    assert len(rows) == 2 * 2 * 3  # the ceiling, torch-fused and ours, every dtype and optimizer
    bytes_per_param = {key: r["bytes_per_param"] for key, r in rows.items() if key[2] != "add_ ceiling"}
    assert bytes_per_param == {
        ("bf16+SR", "Adam", "torch-fused"): 14, ("bf16+SR", "Adam", "ours"): 14,
        ("bf16+SR", "SGD", "torch-fused"): 10, ("bf16+SR", "SGD", "ours"): 10,
        ("fp32+bf16 states", "Adam", "torch-fused"): 28, ("fp32+bf16 states", "Adam", "ours"): 20,
        ("fp32+bf16 states", "SGD", "torch-fused"): 20, ("fp32+bf16 states", "SGD", "ours"): 16}
    rounding, bf16_states = built
    assert rounding.stochastic_rounding and rounding.state_dtype is None
    assert {v.dtype for s in rounding.state.values() for k, v in s.items() if k != "step"} == {torch.bfloat16}
    assert not bf16_states.stochastic_rounding and bf16_states.state_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for g in bf16_states.param_groups for p in g["params"])
    assert {v.dtype for s in bf16_states.state.values() for k, v in s.items() if k != "step"} == {torch.bfloat16}
    quick = {(c.workload, c.dtype) for c in bench.QUICK_CONFIGS if c.optimizer == "Adam"
             and c.schedule == "CosineAnnealingLR" and not c.clip}
    assert {(w, d) for w in ("small-many", "large-few") for d in ("bf16+SR", "fp32+bf16 states")} <= quick
