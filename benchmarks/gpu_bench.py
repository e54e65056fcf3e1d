"""GPU throughput of one optimizer step with its lr schedule: ours against
torch's fused Adam + torch.optim.lr_scheduler, timed with CUDA events.

Variants, per model size (fp32 Adam, the schedule advanced every step, the
most schedule-heavy use):
  torch_fused_cosine     torch.optim.Adam(fused=True, lr=Tensor) + CosineAnnealingLR
  ours_cosine            FusedAdam(schedule=CosineAnnealingLR, schedule_interval="step")
  torch_fused_plateau    torch.optim.Adam(fused=True) + ReduceLROnPlateau.step(device metric):
                         torch reads the metric on the host, one sync per step
  ours_plateau           FusedAdam + schedule_step(device metric): no sync
  ours_graph             ours_cosine captured in a CUDA graph and replayed
Beside them, the device copy bandwidth of the same run: a.add_(b) in place
(read a, read b, write a), the ceiling an Adam step (read 4 tensors, write 3)
can approach.

Inputs are made outside the timed region; each figure is the median over
repeats of the mean time per step of a run of steps, measured with CUDA
events around the run (so host overhead that leaves the GPU idle counts).

Usage: python benchmarks/gpu_bench.py [--json PATH] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.optim import lr_scheduler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build
from lrsched_fused import FusedAdam, schedules  # noqa: E402

SIZES = {
    # name: (number of tensors, elements per tensor)
    "many_small_2000x4k": (2000, 4096),
    "mid_200x256k": (200, 256 * 1024),
    "large_64x2M": (64, 2 * 1024 * 1024),
}
ADAM_BYTES_PER_ELEMENT = 4 * (4 + 3)  # fp32: read param, grad, exp_avg, exp_avg_sq; write three of them


# The torch variant each of ours is compared with in the printed table.
BASELINES = {"ours_cosine": "torch_fused_cosine", "ours_graph": "torch_fused_cosine",
             "ours_plateau": "torch_fused_plateau"}


def time_per_step(fn, steps, repeats, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / steps)
    return statistics.median(samples), samples


def copy_bandwidth(repeats):
    n = 1 << 28  # 1 GiB per fp32 tensor
    a = torch.ones(n, device="cuda")
    b = torch.ones(n, device="cuda")
    ms, _ = time_per_step(lambda: a.add_(b), steps=5, repeats=repeats, warmup=3)
    del a, b
    torch.cuda.empty_cache()
    return 3 * 4 * n / (ms * 1e-3) / 1e9


def make_params(count, numel, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    params = []
    for _ in range(count):
        p = torch.randn(numel, device="cuda", generator=gen).requires_grad_()
        p.grad = torch.randn(numel, device="cuda", generator=gen)
        params.append(p)
    return params


def variants(params):
    """name -> (setup() -> step callable)."""
    metric = torch.tensor(1.0, device="cuda")

    def torch_fused_cosine():
        opt = torch.optim.Adam(params, lr=torch.tensor(1e-3, device="cuda"), fused=True)
        sched = lr_scheduler.CosineAnnealingLR(opt, T_max=1000)

        def step():
            opt.step()
            sched.step()
        return step

    def ours_cosine():
        opt = FusedAdam(params, lr=1e-3, schedule=schedules.CosineAnnealingLR(T_max=1000), schedule_interval="step")
        return opt.step

    def torch_fused_plateau():
        opt = torch.optim.Adam(params, lr=1e-3, fused=True)
        sched = lr_scheduler.ReduceLROnPlateau(opt, patience=5)

        def step():
            opt.step()
            sched.step(metric)  # float(metric): a device-to-host sync
        return step

    def ours_plateau():
        opt = FusedAdam(params, lr=1e-3, schedule=schedules.ReduceLROnPlateau(patience=5))

        def step():
            opt.step()
            opt.schedule_step(metric)
        return step

    def ours_graph():
        opt = FusedAdam(params, lr=1e-3, schedule=schedules.CosineAnnealingLR(T_max=1000), schedule_interval="step")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step()

        def step():
            graph.replay()
        step.keep_alive = opt  # the graph reads and writes the optimizer's state tensors
        return step

    return {
        "torch_fused_cosine": torch_fused_cosine,
        "ours_cosine": ours_cosine,
        "torch_fused_plateau": torch_fused_plateau,
        "ours_plateau": ours_plateau,
        "ours_graph": ours_graph,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_bench.py needs a GPU: torch.cuda.is_available() is False")
    repeats, steps, warmup = (3, 5, 3) if args.quick else (15, 20, 10)
    began = time.time()
    bandwidth = copy_bandwidth(repeats)
    rows = []
    for size_name, (count, numel) in SIZES.items():
        params = make_params(count, numel)
        elements = count * numel
        for name, setup in variants(params).items():
            with torch.no_grad():
                for p in params:  # every variant starts from the same state
                    p.normal_(generator=torch.Generator(device="cuda").manual_seed(1))
            try:
                fn = setup()
                ms, samples = time_per_step(fn, steps, repeats, warmup)
            except Exception as exc:  # one failing variant must not hide the others
                rows.append(dict(size=size_name, tensors=count, elements=elements, variant=name,
                                 error=f"{type(exc).__name__}: {exc}"))
                print(f"{size_name} {name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            gbps = elements * ADAM_BYTES_PER_ELEMENT / (ms * 1e-3) / 1e9
            rows.append(dict(size=size_name, tensors=count, elements=elements, variant=name, ms_per_step=ms,
                             samples_ms=samples, effective_GBps=gbps, fraction_of_copy=gbps / bandwidth))
            del fn
            torch.cuda.synchronize()
        del params
        torch.cuda.empty_cache()
    result = dict(
        device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
        copy_bandwidth_GBps=bandwidth, repeats=repeats, steps_per_repeat=steps, seconds=time.time() - began,
        rows=rows,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(f"device {result['device']}, torch {result['torch']} (CUDA {result['cuda']}); "
          f"copy bandwidth a.add_(b): {bandwidth:.0f} GB/s")
    print(f"{'size':<20} {'variant':<22} {'ms/step':>9} {'GB/s':>8} {'of copy':>8} {'speedup':>8}")
    timed = {(r["size"], r["variant"]): r["ms_per_step"] for r in rows if "error" not in r}
    for row in rows:
        if "error" in row:
            print(f"{row['size']:<20} {row['variant']:<22} FAILED: {row['error'][:60]}")
            continue
        baseline = timed.get((row["size"], BASELINES.get(row["variant"], row["variant"])))
        speedup = f"{baseline / row['ms_per_step']:7.2f}x" if baseline else "     n/a"
        print(f"{row['size']:<20} {row['variant']:<22} {row['ms_per_step']:9.4f} {row['effective_GBps']:8.0f} "
              f"{row['fraction_of_copy']:8.1%} {speedup:>8}")
    print("speedup: ours_cosine and ours_graph over torch_fused_cosine, ours_plateau over torch_fused_plateau")
    return result


if __name__ == "__main__":
    main()
