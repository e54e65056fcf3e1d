"""Throughput benchmark: lrsched_fused against torch's optimizer + scheduler pairs.

    python -m lrsched_fused.bench                 # everything (CPU unless a GPU is visible)
    python -m lrsched_fused.bench --quick         # a subset, < 3 minutes on 2 CPU cores
    python -m lrsched_fused.bench --out DIR       # also DIR/bench_<device>.json and .png

One timed step is ``optimizer.step()`` plus one scheduler step (the per-step
interval), so the schedule's cost is inside the figure: torch's pairs call
``scheduler.step()`` (``scheduler.step(metric)`` with a 0-dim tensor metric for
ReduceLROnPlateau, as users write it), ours calls ``opt.schedule_step()``.

NOTE: [byte model]
GB/s counts the bytes a step must move per parameter, the same for every
implementation: SGD with momentum reads p, g, buf and writes p, buf (5
elements); Adam/AdamW read p, g, exp_avg, exp_avg_sq and write p, exp_avg,
exp_avg_sq (7 elements). An element is the parameter dtype's size (4 B fp32,
2 B bf16; the optimizer state has the parameter's dtype), so Adam fp32 is
28 B/param. The ceiling is ``a.add_(b, alpha=s)`` on one tensor with the
workload's element count (reads a, b, writes a: 3 elements), timed in the same
round-robin as the optimizers, so "share" is a fraction of what this machine's
memory system sustains for an in-place update at that moment.

Method: parameters, gradients and the metric are made before timing; every
implementation is warmed up (its state allocated) before its first timed
block; the implementations of one configuration are timed round-robin in
``--rounds`` rounds, and the figures are the median and IQR of all blocks
(torch.utils.benchmark's blocked_autorange on the CPU; CUDA events on a GPU).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils import benchmark as torch_benchmark

from . import FusedAdam, FusedAdamW, FusedSGD, schedules

Shape = Tuple[int, ...]

# --------------------------------------------------------------------- workloads


def small_many_shapes(count: int = 400, low: float = 1e3, high: float = 2e5, seed: int = 0) -> List[Shape]:
    """`count` 1-d tensors with sizes log-uniform in [low, high] (fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    sizes = torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).round().long()
    return [(int(n),) for n in sizes]


def large_few_shapes() -> List[Shape]:
    """8 tensors of 2**23 elements: 67.1M parameters."""
    return [(4096, 2048)] * 8


def gpt2_small_shapes(n_layer: int = 12, n_embd: int = 768, vocab: int = 50257, n_ctx: int = 1024) -> List[Shape]:
    """GPT-2 small (124M) from its published configuration, in the layout of the
    released checkpoint (Conv1D weights are (in, out); the LM head is tied to wte)."""
    shapes: List[Shape] = [(vocab, n_embd), (n_ctx, n_embd)]
    for _ in range(n_layer):
        shapes += [(n_embd,), (n_embd,)]                           # ln_1
        shapes += [(n_embd, 3 * n_embd), (3 * n_embd,)]            # attn.c_attn
        shapes += [(n_embd, n_embd), (n_embd,)]                    # attn.c_proj
        shapes += [(n_embd,), (n_embd,)]                           # ln_2
        shapes += [(n_embd, 4 * n_embd), (4 * n_embd,)]            # mlp.c_fc
        shapes += [(4 * n_embd, n_embd), (n_embd,)]                # mlp.c_proj
    shapes += [(n_embd,), (n_embd,)]                               # ln_f
    return shapes


def resnet50_shapes(num_classes: int = 1000) -> List[Shape]:
    """ResNet-50 (25.6M) from its published configuration: bottleneck blocks
    [3, 4, 6, 3], widths 64..512, expansion 4 (torchvision's layout)."""
    shapes: List[Shape] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(num_classes, 2048), (num_classes,)]
    return shapes


WORKLOADS: Dict[str, Callable[[], List[Shape]]] = {
    "small-many": small_many_shapes,
    "large-few": large_few_shapes,
    "gpt2-small": gpt2_small_shapes,
    "resnet50": resnet50_shapes,
}

# ------------------------------------------------------------ optimizers, schedules

# Hyperparameters keep the lr in the normal float range for many thousands of
# steps (a denormal lr would slow every implementation down).
OPTIMIZERS = {
    "SGD": dict(lr=1e-3, momentum=0.9),
    "Adam": dict(lr=1e-3),
    "AdamW": dict(lr=1e-3, weight_decay=1e-2),
}
SCHEDULES = {
    "StepLR": dict(step_size=1000, gamma=0.5),
    "CosineAnnealingLR": dict(T_max=1000, eta_min=1e-5),
    "ReduceLROnPlateau": dict(factor=0.5, patience=10, min_lr=1e-5),
}
BYTES_PER_ELEMENT_MOVED = {"SGD": 5, "Adam": 7, "AdamW": 7}  # NOTE: [byte model]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

TORCH_OPTIMIZER = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
OUR_OPTIMIZER = {"SGD": FusedSGD, "Adam": FusedAdam, "AdamW": FusedAdamW}
TORCH_SCHEDULER = {
    "StepLR": torch.optim.lr_scheduler.StepLR,
    "CosineAnnealingLR": torch.optim.lr_scheduler.CosineAnnealingLR,
    "ReduceLROnPlateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
}
OUR_SCHEDULE = {
    "StepLR": schedules.StepLR,
    "CosineAnnealingLR": schedules.CosineAnnealingLR,
    "ReduceLROnPlateau": schedules.ReduceLROnPlateau,
}
TORCH_IMPLEMENTATIONS = {"torch-forloop": dict(foreach=False), "torch-foreach": dict(foreach=True),
                         "torch-fused": dict(fused=True)}
CEILING = "add_ ceiling"
OURS = "ours"
OURS_GRAPH = "ours+cudagraph"
DEEPSPEED = "deepspeed-cpu-adam"


@dataclass
class Config:
    workload: str
    dtype: str
    optimizer: str
    schedule: str


def _deepspeed_cpu_adam():
    """DeepSpeedCPUAdam's class when deepspeed is importable, else None."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:  # absent, or present but broken: either way not measured
        return None
    return DeepSpeedCPUAdam


# --------------------------------------------------------------------- one setup


class Inputs:
    """The parameters' initial values and the gradients of one workload and dtype,
    made once and shared (the gradients are only read by every implementation)."""

    def __init__(self, shapes: Sequence[Shape], dtype: torch.dtype, device: torch.device, seed: int = 0):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.params = [torch.randn(s, generator=generator, dtype=torch.float32).to(device, dtype) for s in shapes]
        self.grads = [torch.randn(s, generator=generator, dtype=torch.float32).mul_(1e-2).to(device, dtype)
                      for s in shapes]
        self.numel = sum(p.numel() for p in self.params)
        self.metric = torch.tensor(1.0, device=device)  # a constant loss: plateau reduces down to min_lr

    def fresh_params(self) -> List[torch.Tensor]:
        params = []
        for p, g in zip(self.params, self.grads):
            q = p.clone()
            q.grad = g
            params.append(q)
        return params


def _step_fn(optimizer, scheduler_step: Callable[[], None]) -> Callable[[], None]:
    def step():
        optimizer.step()
        scheduler_step()
    return step


def build_step(impl: str, config: Config, inputs: Inputs) -> Optional[Callable[[], None]]:
    """The timed callable of one implementation; None when it does not apply."""
    plateau = config.schedule == "ReduceLROnPlateau"
    hyper = dict(OPTIMIZERS[config.optimizer])
    if impl == CEILING:
        a = torch.empty(inputs.numel, dtype=inputs.params[0].dtype, device=inputs.params[0].device).fill_(1.0)
        b = torch.empty_like(a).fill_(1e-3)
        return lambda: a.add_(b, alpha=0.5)
    if impl in TORCH_IMPLEMENTATIONS:
        optimizer = TORCH_OPTIMIZER[config.optimizer](inputs.fresh_params(), **hyper, **TORCH_IMPLEMENTATIONS[impl])
        scheduler = TORCH_SCHEDULER[config.schedule](optimizer, **SCHEDULES[config.schedule])
        if plateau:
            return _step_fn(optimizer, lambda: scheduler.step(inputs.metric))
        return _step_fn(optimizer, scheduler.step)
    if impl in (OURS, OURS_GRAPH):
        optimizer = OUR_OPTIMIZER[config.optimizer](inputs.fresh_params(), **hyper,
                                                    schedule=OUR_SCHEDULE[config.schedule](**SCHEDULES[config.schedule]))
        if plateau:
            step = _step_fn(optimizer, lambda: optimizer.schedule_step(inputs.metric))
        else:
            step = _step_fn(optimizer, optimizer.schedule_step)
        return step if impl == OURS else _cuda_graph(step)
    if impl == DEEPSPEED:
        cls = _deepspeed_cpu_adam()
        if cls is None or config.optimizer == "SGD":
            return None
        optimizer = cls(inputs.fresh_params(), **hyper, adamw_mode=config.optimizer == "AdamW")
        scheduler = TORCH_SCHEDULER[config.schedule](optimizer, **SCHEDULES[config.schedule])
        if plateau:
            return _step_fn(optimizer, lambda: scheduler.step(inputs.metric))
        return _step_fn(optimizer, scheduler.step)
    raise ValueError(f"unknown implementation {impl!r}")


def _cuda_graph(step: Callable[[], None]) -> Callable[[], None]:
    """UNVERIFIED (written without a GPU at hand): captures one step of ours,
    optimizer and schedule, in a CUDA graph and returns its replay. Warm-up on a
    side stream allocates the optimizer state before capture, as torch's docs ask."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


# ------------------------------------------------------------------------ timing


def time_cpu(step: Callable[[], None], min_run_time: float, threads: int) -> List[float]:
    """Seconds per step of each block of torch.utils.benchmark's blocked_autorange."""
    timer = torch_benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def time_cuda(step: Callable[[], None], min_run_time: float, threads: int) -> List[float]:
    """Seconds per step of blocks timed with CUDA events (blocks of >= 10 ms)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_block = 1
    while True:
        torch.cuda.synchronize()
        start.record()
        for _ in range(per_block):
            step()
        end.record()
        end.synchronize()
        if start.elapsed_time(end) >= 10.0 or per_block >= 1 << 14:
            break
        per_block *= 2
    times, spent = [], 0.0
    while spent < min_run_time or len(times) < 5:
        start.record()
        for _ in range(per_block):
            step()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        spent += seconds
        times.append(seconds / per_block)
    return times


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ------------------------------------------------------------------------- a run


def implementations(device: torch.device, deepspeed: bool) -> List[str]:
    impls = [CEILING, "torch-forloop", "torch-foreach", "torch-fused", OURS]
    if device.type == "cuda":
        impls.append(OURS_GRAPH)
    elif deepspeed and _deepspeed_cpu_adam() is not None:
        impls.append(DEEPSPEED)
    return impls


STATE_TENSORS = {"SGD": 1, "Adam": 2, "AdamW": 2}


def _memory_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _all_fit(config: Config, inputs: Inputs, impls: Sequence[str]) -> bool:
    """Whether every implementation's copy of the parameters and state fits in
    half the available memory at once (needed for the round-robin)."""
    available = _memory_available() if inputs.params[0].device.type == "cpu" else None
    if available is None:
        return True
    per_impl = inputs.numel * inputs.params[0].element_size() * (1 + STATE_TENSORS[config.optimizer])
    return per_impl * len(impls) < available / 2


def _build_and_warm(impl: str, config: Config, inputs: Inputs, warmup: int, errors: Dict[str, str]):
    try:
        step = build_step(impl, config, inputs)
        if step is not None:
            for _ in range(warmup):
                step()
        return step
    except Exception as exc:  # e.g. an implementation without bf16 support: reported, not fatal
        errors[impl] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        return None


def run_config(config: Config, inputs: Inputs, impls: Sequence[str], args, timer) -> List[dict]:
    errors: Dict[str, str] = {}
    times: Dict[str, List[float]] = {}
    load = _load()
    if _all_fit(config, inputs, impls):
        steps = {impl: _build_and_warm(impl, config, inputs, args.warmup, errors) for impl in impls}
        steps = {impl: step for impl, step in steps.items() if step is not None}
        times = {impl: [] for impl in steps}
        for _ in range(args.rounds):
            for impl, step in steps.items():
                times[impl] += timer(step, args.min_run_time / args.rounds, args.threads)
        round_robin = True
    else:  # one implementation alive at a time, its rounds back to back
        for impl in impls:
            step = _build_and_warm(impl, config, inputs, args.warmup, errors)
            if step is not None:
                times[impl] = timer(step, args.min_run_time, args.threads)
            del step
        round_robin = False
    element_size = inputs.params[0].element_size()
    moved = {impl: inputs.numel * element_size * (3 if impl == CEILING else BYTES_PER_ELEMENT_MOVED[config.optimizer])
             for impl in steps}
    medians = {impl: statistics.median(t) for impl, t in times.items()}
    ceiling_gbps = moved[CEILING] / medians[CEILING] / 1e9 if CEILING in medians else float("nan")
    rows = []
    for impl in impls:
        row = dict(workload=config.workload, dtype=config.dtype, optimizer=config.optimizer,
                   schedule=config.schedule, impl=impl, tensors=len(inputs.params), params=inputs.numel,
                   bytes_per_param=moved.get(impl, 0) / max(inputs.numel, 1), round_robin=round_robin,
                   load_average_1min=load)
        if impl in errors:
            row["error"] = errors[impl]
        elif impl in times:
            t = times[impl]
            gbps = moved[impl] / medians[impl] / 1e9
            row.update(median_ms=medians[impl] * 1e3, iqr_ms=(_quantile(t, 0.75) - _quantile(t, 0.25)) * 1e3,
                       blocks=len(t), gbps=gbps, share_of_ceiling=gbps / ceiling_gbps,
                       time_over_ours=medians[impl] / medians[OURS] if OURS in medians and impl != CEILING else None)
        else:
            continue
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"    {r['impl']:<20} n/a ({r['error']})")
            continue
        ratio = "" if r["time_over_ours"] is None else f"{r['time_over_ours']:6.2f}x"
        lines.append(f"    {r['impl']:<20} {r['median_ms']:9.3f} ms  +-{r['iqr_ms'] / 2:7.3f}  "
                     f"{r['gbps']:7.1f} GB/s  {100 * r['share_of_ceiling']:5.1f}% of ceiling  {ratio}")
    return "\n".join(lines)


QUICK_CONFIGS = (
    [Config(w, "fp32", o, "CosineAnnealingLR") for w in ("small-many", "large-few") for o in OPTIMIZERS]
    + [Config("small-many", "fp32", "Adam", s) for s in ("StepLR", "ReduceLROnPlateau")]
)


def plan(args) -> List[Config]:
    """The configurations to run: all of them by default, QUICK_CONFIGS with
    --quick, either narrowed by --workloads/--dtypes/--optimizers/--schedules."""
    chosen = {"workload": args.workloads, "dtype": args.dtypes, "optimizer": args.optimizers,
              "schedule": args.schedules}
    known = {"workload": WORKLOADS, "dtype": DTYPES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for name, values in chosen.items():
        unknown = [v for v in values or [] if v not in known[name]]
        if unknown:
            sys.exit(f"unknown {name} {unknown}; accepted: {list(known[name])}")
    if args.quick:
        configs = list(QUICK_CONFIGS)
    else:
        configs = [Config(w, d, o, s) for w in WORKLOADS for d in DTYPES for o in OPTIMIZERS for s in SCHEDULES]
    return [c for c in configs if all(values is None or getattr(c, name) in values for name, values in chosen.items())]


def summary(rows: Sequence[dict]) -> List[str]:
    """One line per configuration: torch-fused pair / ours, and ours' share of the ceiling."""
    lines = []
    by_config: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        by_config.setdefault((r["workload"], r["dtype"], r["optimizer"], r["schedule"]), {})[r["impl"]] = r
    for key, impls in by_config.items():
        ours, fused = impls.get(OURS, {}), impls.get("torch-fused", {})
        if "median_ms" not in ours:
            continue
        fused_ratio = f"{fused['time_over_ours']:.2f}" if "median_ms" in fused else "n/a"
        ds = impls.get(DEEPSPEED, {})
        ds_ratio = f"  deepspeed/ours {ds['time_over_ours']:.2f}" if "median_ms" in ds else ""
        lines.append(f"  {' '.join(key):<48} torch-fused/ours {fused_ratio:>5}  ours {ours['gbps']:6.1f} GB/s "
                     f"= {100 * ours['share_of_ceiling']:5.1f}% of ceiling{ds_ratio}")
    return lines


def plot(rows: Sequence[dict], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no plot (pip install matplotlib)"
    panels = sorted({(r["workload"], r["dtype"]) for r in rows}, key=lambda k: (list(WORKLOADS).index(k[0]), k[1]))
    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != CEILING]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 3.2 * len(panels)), squeeze=False)
    for ax, (workload, dtype) in zip(axes[:, 0], panels):
        mine = [r for r in rows if r["workload"] == workload and r["dtype"] == dtype and "median_ms" in r]
        groups = list(dict.fromkeys((r["optimizer"], r["schedule"]) for r in mine))
        width = 0.8 / max(len(impls), 1)
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for g, (opt_name, sched) in enumerate(groups):
                hit = [r for r in mine if r["impl"] == impl and r["optimizer"] == opt_name and r["schedule"] == sched]
                if hit:
                    xs.append(g + (k - (len(impls) - 1) / 2) * width)
                    ys.append(hit[0]["median_ms"])
            ax.bar(xs, ys, width=width, label=impl)
        ceiling = [r for r in mine if r["impl"] == CEILING]
        if ceiling:
            # the time the ceiling's bandwidth would need for Adam's / SGD's bytes
            for g, (opt_name, sched) in enumerate(groups):
                c = [r for r in ceiling if r["optimizer"] == opt_name and r["schedule"] == sched]
                if c:
                    ideal = c[0]["params"] * BYTES_PER_ELEMENT_MOVED[opt_name] * (c[0]["bytes_per_param"] / 3) / \
                        (c[0]["gbps"] * 1e9) * 1e3
                    ax.plot([g - 0.4, g + 0.4], [ideal, ideal], color="black", linewidth=1,
                            label="bytes / add_ bandwidth" if g == 0 else None)
        ax.set_yscale("log")
        ax.set_ylabel("ms / step")
        ax.set_title(f"{workload} {dtype}")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{o}\n{s}" for o, s in groups], fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return None


def _load() -> float:
    """The 1-minute load average: above the thread count, other processes
    compete for the cores and every figure of that configuration suffers."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_info(device: torch.device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                nproc=os.cpu_count(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrsched_fused.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="8 configurations: small-many and large-few, fp32, SGD/Adam/AdamW with "
                             "CosineAnnealingLR, plus small-many Adam with StepLR and ReduceLROnPlateau")
    parser.add_argument("--out", help="directory for bench_<device>.json and bench_<device>.png")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds per configuration (default 3)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per implementation and configuration (default 1.0, quick 0.3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--workloads", nargs="+", help=f"subset of {list(WORKLOADS)}")
    parser.add_argument("--dtypes", nargs="+", help=f"subset of {list(DTYPES)}")
    parser.add_argument("--optimizers", nargs="+", help=f"subset of {list(OPTIMIZERS)}")
    parser.add_argument("--schedules", nargs="+", help=f"subset of {list(SCHEDULES)}")
    parser.add_argument("--no-deepspeed", action="store_true", help="leave out DeepSpeedCPUAdam even when importable")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or 3
    args.min_run_time = args.min_run_time or (0.3 if args.quick else 1.0)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(args.threads)
    timer = time_cuda if device.type == "cuda" else time_cpu
    configs = plan(args)
    impls = implementations(device, not args.no_deepspeed)
    info = machine_info(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = _load()
    print(f"lrsched_fused.bench on {device} ({info.get('gpu') or info.get('cpu_model')}, {args.threads} threads), "
          f"torch {torch.__version__}, load average {load_at_start:.1f}, {len(configs)} configurations x {impls}",
          flush=True)
    if device.type == "cpu" and DEEPSPEED not in impls and not args.no_deepspeed:
        print("  deepspeed is not importable: DeepSpeedCPUAdam skipped", flush=True)
    rows: List[dict] = []
    inputs, inputs_key = None, None
    clock = time.perf_counter()
    for n, config in enumerate(configs, 1):
        if (config.workload, config.dtype) != inputs_key:
            inputs = None
            inputs_key = (config.workload, config.dtype)
            inputs = Inputs(WORKLOADS[config.workload](), DTYPES[config.dtype], device)
        print(f"[{n}/{len(configs)} {time.perf_counter() - clock:6.0f}s, load {_load():.1f}] {config.workload} "
              f"({len(inputs.params)} tensors, {inputs.numel / 1e6:.2f}M params) {config.dtype} {config.optimizer} + "
              f"{config.schedule}", flush=True)
        config_rows = run_config(config, inputs, impls, args, timer)
        print(format_rows(config_rows), flush=True)
        rows += config_rows
    print("\nSummary (time ratios > 1: ours is faster):")
    print("\n".join(summary(rows)))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"bench_{device.type}")
        command = "python -m lrsched_fused.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(stem + ".json", "w") as f:
            json.dump(dict(command=command.strip(), started_utc=started.isoformat(timespec="seconds"),
                           seconds=round(time.perf_counter() - clock, 1), device=str(device), threads=args.threads,
                           rounds=args.rounds, min_run_time=args.min_run_time, machine=info,
                           load_average_1min=dict(start=load_at_start, end=_load()),
                           byte_model="per parameter: SGD momentum 5 elements, Adam/AdamW 7, add_ ceiling 3; "
                                      "element = parameter dtype size",
                           optimizers=OPTIMIZERS, schedules=SCHEDULES, results=rows), f, indent=1)
        message = plot(rows, stem + ".png", f"{command.strip()}  |  {info.get('gpu') or info.get('cpu_model')}, "
                       f"{args.threads} threads, torch {torch.__version__}")
        print(f"wrote {stem}.json" + (f"; {message}" if message else f" and {stem}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
