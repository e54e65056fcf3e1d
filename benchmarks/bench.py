"""Throughput benchmark: lrsched_fused against torch's optimizer + scheduler pairs.

    python benchmarks/bench.py                    # everything, on the CPU
    python benchmarks/bench.py --quick            # a subset, < 3 minutes on 2 CPU cores
    python benchmarks/bench.py --device cuda      # on a GPU: CUDA events, graph replay
    python benchmarks/bench.py --gpu-check        # the GPU subset benchmarks/gpu_check.sh runs
    python benchmarks/bench.py --host-cost --threads 1   # the per-tensor cost of a step's bookkeeping
    python benchmarks/bench.py --clip             # gradient clipping: clip + step + schedule
    python benchmarks/bench.py --out DIR          # also DIR/bench_<device>.json and .png

One timed step is ``optimizer.step()`` plus one scheduler step (the per-step
interval), so the schedule's cost is inside the figure: torch's pairs call
``scheduler.step()`` (``scheduler.step(metric)`` with a 0-dim tensor metric for
ReduceLROnPlateau, as users write it), ours calls ``opt.schedule_step()``.

What is compared is table-driven: WORKLOADS (parameter shapes), COMPETITORS
(how one implementation builds its timed step, on which devices), and the
configurations (workload x dtype x optimizer x schedule) a run selects. A new
row is one entry in a table.

NOTE: [byte model]
GB/s counts the bytes a step must move per parameter, the same for every
implementation but in "fp32+bf16 states" (below): SGD with momentum reads p,
g, buf and writes p, buf (5 elements), and so does Lion (p, g, exp_avg);
Adam/AdamW read p, g, exp_avg,
exp_avg_sq and write p, exp_avg, exp_avg_sq (7 elements); with gradient
clipping ("+clip" rows) the grads must also be read once for the global norm
before any update (one element more: ours reads them twice; torch's recipe,
clip_grad_norm_ then the step, reads them three times and writes them once, 3
more). An element is the parameter dtype's size (4 B fp32, 2 B bf16; the
optimizer state has the parameter's dtype), so Adam fp32 is 28 B/param.
"bf16+master" (master_weights=True, NOTE: [master weights]): bf16 parameter
and grad, fp32 master and states; Adam reads g (2 B), master and exp_avg,
exp_avg_sq (12 B) and writes p (2 B), master and the states (12 B): 28
B/param, SGD with momentum 2 + 8 + 2 + 8 = 20 B/param, the same bytes as
fp32. Its torch competitors step fp32 copies of the parameters with fp32
grads (cast before timing) and write the bf16 weights back with
``torch._foreach_copy_``: the same trajectory, the way one gets it from torch.
"bf16+SR" (stochastic_rounding=True): bf16 parameters and states, as "bf16",
and the same bytes (Adam 14 B/param, SGD 10 B/param: the random bits are
computed where each element is, not loaded); its torch competitors are their
bf16 optimizers (round to nearest) on the same bf16 parameters.
"fp32+bf16 states" (state_dtype=torch.bfloat16): fp32 parameters and grads,
bf16 states, so the bytes differ by implementation and each row's GB/s (and
bytes_per_param) is from its own: ours (and ours+cudagraph) reads p, g (8 B),
exp_avg, exp_avg_sq (4 B) and writes p (4 B) and the states (4 B): Adam 20
B/param, SGD with momentum 4 + 4 + 2 + 4 + 2 = 16 B/param; its torch
competitors are their fp32 optimizers on the same fp32 parameters, with fp32
states: 28 and 20 B/param, as "fp32".
"fp32+8bit states" (state_dtype="8bit", NOTE: [8-bit states] in
csrc/states_8bit.h): fp32 parameters and grads, one-byte codes per state
element (the absmax, 4 B per 256 elements, is left out): ours and
bitsandbytes' 8-bit optimizers read p, g (8 B) and the codes and write p and
the codes: Adam 16 B/param, SGD with momentum and Lion 14 B/param; torch's
fp32 optimizers move what they move in "fp32".
The ceiling is ``a.add_(b, alpha=s)`` on one tensor with the workload's
element count (reads a, b, writes a: 3 elements; on a GPU the device-copy
bandwidth), timed in the same round-robin as the optimizers, so "share" is a
fraction of what this machine's memory system sustains for an in-place update
at that moment.

NOTE: [host cost]
The host-* workloads are tensors of 16 elements: the arithmetic is
negligible, so a step costs what its bookkeeping costs (Python, the op call,
per-tensor checks), reported as ns per tensor. On a GPU that is what a model
of many small parameters pays per eager step. "new-grads" assigns new grad
objects before every step, as ``zero_grad(set_to_none=True)`` + ``backward()``
do; the plain ones keep the grads. Measure with ``--threads 1``.

Method: parameters, gradients and the metric are made before timing; every
implementation is warmed up (its state allocated) before its first timed
block; the implementations of one configuration are timed round-robin in
``--rounds`` rounds, and the figures are the median and IQR of all blocks
(torch.utils.benchmark's blocked_autorange on the CPU; blocks of >= 10 ms
timed with CUDA events on a GPU, so host overhead that idles the GPU counts).
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the in-place build
from lrsched_fused import FusedAdam, FusedAdamW, FusedLion, FusedMuon, FusedSGD, schedules  # noqa: E402

Shape = Tuple[int, ...]
Step = Callable[[], None]

# --------------------------------------------------------------------- workloads


def log_uniform_shapes(count: int, low: float, high: float, seed: int = 0) -> List[Shape]:
    """`count` 1-d tensors with sizes log-uniform in [low, high] (fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    sizes = torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).round().long()
    return [(int(n),) for n in sizes]


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


@dataclass(frozen=True)
class Workload:
    shapes: Callable[[], List[Shape]]
    description: str
    in_full_run: bool = True  # part of a run that names no workloads
    # New grad objects every step, as zero_grad(set_to_none=True) + backward()
    # give them: each timed step first assigns p.grad from one of two
    # pre-made sets (the same assignments for every implementation).
    new_grads: bool = False


WORKLOADS: Dict[str, Workload] = {
    "small-many": Workload(lambda: log_uniform_shapes(400, 1e3, 2e5),
                           "400 1-d tensors, sizes log-uniform in [1e3, 2e5]: 14.75M"),
    "large-few": Workload(lambda: [(4096, 2048)] * 8, "8 tensors of 2**23 elements: 67.1M"),
    "gpt2-small": Workload(gpt2_small_shapes, "GPT-2 small, 148 tensors: 124.4M"),
    "resnet50": Workload(resnet50_shapes, "ResNet-50, 161 tensors: 25.6M"),
    "many-small": Workload(lambda: log_uniform_shapes(2000, 64, 8192, seed=1),
                           "2000 1-d tensors, sizes log-uniform in [64, 8192]: launch- and host-bound"),
    # NOTE: [host cost]
    "host-1000": Workload(lambda: [(16,)] * 1000, "1000 tensors of 16 elements, grads kept: host cost"),
    "host-1000-new-grads": Workload(lambda: [(16,)] * 1000, "the same, new grad objects every step",
                                    new_grads=True),
    "host-4000": Workload(lambda: [(16,)] * 4000, "4000 tensors of 16 elements, grads kept: host cost"),
    "host-4000-new-grads": Workload(lambda: [(16,)] * 4000, "the same, new grad objects every step",
                                    new_grads=True),
    "tiny": Workload(lambda: [(300,), (17, 5), (0,), (1000,)], "4 small tensors: a smoke test of the harness",
                     in_full_run=False),
}
HOST_COST_WORKLOADS = [w for w in WORKLOADS if w.startswith("host-")]

# ------------------------------------------------------------ optimizers, schedules

# Hyperparameters keep the lr in the normal float range for many thousands of
# steps (a denormal lr would slow every implementation down).
OPTIMIZERS = {
    "SGD": dict(lr=1e-3, momentum=0.9),
    "Adam": dict(lr=1e-3),
    "AdamW": dict(lr=1e-3, weight_decay=1e-2),
    "Lion": dict(lr=1e-4, weight_decay=1e-1),
    # the Muon group's; the other parameters are an AdamW group with torch AdamW's defaults (muon_split)
    "Muon": dict(lr=2e-2),
}
SCHEDULES = {
    "StepLR": dict(step_size=1000, gamma=0.5),
    "CosineAnnealingLR": dict(T_max=1000, eta_min=1e-5),
    "ReduceLROnPlateau": dict(factor=0.5, patience=10, min_lr=1e-5),
}
BYTES_PER_ELEMENT_MOVED = {"SGD": 5, "Adam": 7, "AdamW": 7, "Lion": 5, "Muon": 7}  # NOTE: [byte model]
CLIP_ELEMENTS_MOVED = 1  # the norm's read of the grads (NOTE: [byte model])
# max_grad_norm of the "+clip" rows: the norm is computed and the grads are
# multiplied by the coefficient as in any clipped step (torch: _foreach_mul_,
# ours: inside the update), but the coefficient is 1, so torch's in-place
# clip leaves the grads that every implementation shares unchanged.
CLIP_MAX_NORM = 1e30
MASTER_BYTES_PER_PARAM = {"SGD": 20, "Adam": 28, "AdamW": 28, "Lion": 20, "Muon": 28}  # bf16+master, NOTE: [byte model]
# fp32+bf16 states, ours only (torch's fp32 competitors move BYTES_PER_ELEMENT_MOVED fp32 elements), NOTE: [byte model]
BF16_STATES_BYTES_PER_PARAM = {"SGD": 16, "Adam": 20, "AdamW": 20, "Lion": 16, "Muon": 20}
# fp32+8bit states: ours and bitsandbytes' (NOTE: [byte model])
EIGHT_BIT_STATES_BYTES_PER_PARAM = {"SGD": 14, "Adam": 16, "AdamW": 16, "Lion": 14, "Muon": 16}
CEILING_ELEMENTS_MOVED = 3
STATE_TENSORS = {"SGD": 1, "Adam": 2, "AdamW": 2, "Lion": 1, "Muon": 1}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16+master": torch.bfloat16,
          "bf16+SR": torch.bfloat16, "fp32+bf16 states": torch.float32,
          "fp32+8bit states": torch.float32}  # the parameters' dtype
MASTER_WEIGHT_DTYPES = ("bf16+master",)  # ours with master_weights=True
STOCHASTIC_ROUNDING_DTYPES = ("bf16+SR",)  # ours with stochastic_rounding=True
BF16_STATE_DTYPES = ("fp32+bf16 states",)  # ours with state_dtype=torch.bfloat16
EIGHT_BIT_STATE_DTYPES = ("fp32+8bit states",)  # ours with state_dtype="8bit"; bitsandbytes' 8-bit optimizers

# torch's optimizers (torch has no Lion: lion-pytorch's is its competitor, "lion-pytorch")
TORCH_OPTIMIZER = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
OUR_OPTIMIZER = {"SGD": FusedSGD, "Adam": FusedAdam, "AdamW": FusedAdamW, "Lion": FusedLion}
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


@dataclass(frozen=True)
class Config:
    workload: str
    dtype: str
    optimizer: str
    schedule: str
    clip: bool = False  # gradient clipping: torch's clip_grad_norm_ + step, ours with max_grad_norm

    @property
    def optimizer_label(self) -> str:
        return self.optimizer + ("+clip" if self.clip else "")


class Inputs:
    """The parameters' initial values and the gradients of one workload and dtype,
    made once and shared (the gradients are only read by every implementation)."""

    def __init__(self, shapes: Sequence[Shape], dtype: torch.dtype, device: torch.device, seed: int = 0):
        generator = torch.Generator(device=device).manual_seed(seed)

        def draw(shape, scale=1.0):
            return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).mul_(scale).to(dtype)

        self.params = [draw(s) for s in shapes]
        self.grads = [draw(s, 1e-2) for s in shapes]
        self.numel = sum(p.numel() for p in self.params)
        self.device = device
        self.metric = torch.tensor(1.0, device=device)  # a constant loss: plateau reduces down to min_lr

    def fresh_params(self) -> List[torch.Tensor]:
        params = []
        for p, g in zip(self.params, self.grads):
            q = p.clone()
            q.grad = g
            params.append(q)
        return params


# -------------------------------------------------------------------- competitors


def _step_and_schedule(optimizer, schedule_step: Callable, config: Config, inputs: Inputs,
                       before_step: Optional[Callable] = None) -> Step:
    """optimizer.step() and one schedule step, fed the metric for ReduceLROnPlateau
    (after new grad objects, for a workload with new_grads; after before_step())."""
    if config.schedule == "ReduceLROnPlateau":
        advance = lambda: schedule_step(inputs.metric)  # noqa: E731
    else:
        advance = schedule_step

    def step():
        if before_step is not None:
            before_step()
        optimizer.step()
        advance()
    if not WORKLOADS[config.workload].new_grads:
        return step
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_sets = [[p.grad for p in params], [p.grad.clone() for p in params]]
    turn = [0]

    def step_with_new_grads():
        turn[0] ^= 1
        for p, g in zip(params, grad_sets[turn[0]]):
            p.grad = g
        step()
    return step_with_new_grads


def _torch_params(config: Config, inputs: Inputs) -> List[torch.Tensor]:
    """The parameters a torch competitor steps: fresh copies, in fp32 (grads
    cast to fp32 here, before timing) for a master-weights dtype."""
    params = inputs.fresh_params()
    if config.dtype not in MASTER_WEIGHT_DTYPES:
        return params
    masters = []
    for p in params:
        master = p.float()
        master.grad = p.grad.float()
        masters.append(master)
    return masters


def _with_torch_scheduler(optimizer, config: Config, inputs: Inputs) -> Step:
    """A torch optimizer + torch's scheduler; with config.clip, clip_grad_norm_(foreach=True) before the step."""
    scheduler = TORCH_SCHEDULER[config.schedule](optimizer, **SCHEDULES[config.schedule])
    clip = None
    if config.clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip = lambda: torch.nn.utils.clip_grad_norm_(params, CLIP_MAX_NORM, foreach=True)  # noqa: E731
    step = _step_and_schedule(optimizer, scheduler.step, config, inputs, clip)
    if config.dtype not in MASTER_WEIGHT_DTYPES:
        return step
    masters = [p for group in optimizer.param_groups for p in group["params"]]
    weights = [p.clone() for p in inputs.params]  # the bf16 weights the model would use

    def step_and_write_back():
        step()
        torch._foreach_copy_(weights, masters)
    return step_and_write_back


def build_ceiling(config: Config, inputs: Inputs) -> Step:
    a = torch.empty(inputs.numel, dtype=inputs.params[0].dtype, device=inputs.device).fill_(1.0)
    b = torch.empty_like(a).fill_(1e-3)
    return lambda: a.add_(b, alpha=0.5)


def torch_pair(**options) -> Callable[[Config, Inputs], Step]:
    """torch's optimizer with `options` + its scheduler, stepped as users do."""
    def build(config: Config, inputs: Inputs) -> Step:
        optimizer = TORCH_OPTIMIZER[config.optimizer](_torch_params(config, inputs), **OPTIMIZERS[config.optimizer],
                                                      **options)
        return _with_torch_scheduler(optimizer, config, inputs)
    return build


def build_torch_tensor_lr(config: Config, inputs: Inputs) -> Step:
    """torch's sync-free pair: a device tensor lr that the scheduler writes in
    place; Adam/AdamW capturable (foreach), SGD fused (it has no capturable flag)."""
    hyper = dict(OPTIMIZERS[config.optimizer])
    hyper["lr"] = torch.tensor(hyper["lr"], device=inputs.device)
    options = dict(fused=True) if config.optimizer == "SGD" else dict(capturable=True, foreach=True)
    optimizer = TORCH_OPTIMIZER[config.optimizer](_torch_params(config, inputs), **hyper, **options)
    return _with_torch_scheduler(optimizer, config, inputs)


def muon_split(params: List[torch.Tensor], workload: str) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(the Muon group, the AdamW group): the 2-D parameters but a GPT-2's
    embeddings (wte, wpe: its first two tensors), as Muon's recipes split a
    transformer; the rest."""
    skip = 2 if workload.startswith("gpt2") else 0
    matrices = [p for i, p in enumerate(params) if p.dim() == 2 and i >= skip]
    chosen = {id(p) for p in matrices}
    return matrices, [p for p in params if id(p) not in chosen]


class _Together:
    """Optimizers stepped as one (torch's Muon + AdamW pair)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.param_groups = [g for opt in optimizers for g in opt.param_groups]

    def step(self):
        for opt in self.optimizers:
            opt.step()


def build_torch_muon(config: Config, inputs: Inputs) -> Optional[Step]:
    """torch.optim.Muon for the matrices + torch.optim.AdamW(fused=True) for the rest, a torch scheduler each."""
    if config.dtype not in ("fp32", "bf16") or config.clip:
        return None
    matrices, others = muon_split(_torch_params(config, inputs), config.workload)
    muon = torch.optim.Muon(matrices, **OPTIMIZERS["Muon"])
    adamw = torch.optim.AdamW(others, fused=True)
    schedulers = [TORCH_SCHEDULER[config.schedule](opt, **SCHEDULES[config.schedule]) for opt in (muon, adamw)]
    return _step_and_schedule(_Together(muon, adamw), lambda *metric: [s.step(*metric) for s in schedulers],
                              config, inputs)


def build_ours(config: Config, inputs: Inputs) -> Optional[Step]:
    schedule = OUR_SCHEDULE[config.schedule](**SCHEDULES[config.schedule])
    clipping = dict(max_grad_norm=CLIP_MAX_NORM) if config.clip else {}
    if config.optimizer == "Muon":
        if config.dtype not in ("fp32", "bf16"):
            return None
        matrices, others = muon_split(inputs.fresh_params(), config.workload)
        optimizer = FusedMuon([{"params": matrices}, {"params": others, "use_muon": False}], **OPTIMIZERS["Muon"],
                              schedule=schedule, **clipping)
        return _step_and_schedule(optimizer, optimizer.schedule_step, config, inputs)
    optimizer = OUR_OPTIMIZER[config.optimizer](inputs.fresh_params(), **OPTIMIZERS[config.optimizer],
                                                schedule=schedule,
                                                master_weights=config.dtype in MASTER_WEIGHT_DTYPES,
                                                stochastic_rounding=config.dtype in STOCHASTIC_ROUNDING_DTYPES,
                                                state_dtype=_our_state_dtype(config.dtype), **clipping)
    return _step_and_schedule(optimizer, optimizer.schedule_step, config, inputs)


def _our_state_dtype(dtype: str):
    if dtype in BF16_STATE_DTYPES:
        return torch.bfloat16
    return "8bit" if dtype in EIGHT_BIT_STATE_DTYPES else None


def build_ours_graph(config: Config, inputs: Inputs) -> Step:
    """Ours, optimizer and schedule step captured in one CUDA graph and
    replayed; warm-up on a side stream allocates the state before capture."""
    step = build_ours(config, inputs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def replay():
        graph.replay()
    replay.keep_alive = step  # the graph reads and writes the optimizer's tensors
    return replay


def build_lion_pytorch(config: Config, inputs: Inputs) -> Optional[Step]:
    """lion-pytorch's Lion (a for-loop over the tensors, four torch ops each) + torch's scheduler."""
    from lion_pytorch import Lion
    return _with_torch_scheduler(Lion(_torch_params(config, inputs), **OPTIMIZERS["Lion"]), config, inputs)


def build_bitsandbytes(config: Config, inputs: Inputs) -> Optional[Step]:
    """bitsandbytes' blockwise 8-bit optimizer (Adam8bit, AdamW8bit, SGD8bit,
    Lion8bit: their own step per tensor) + torch's scheduler."""
    import bitsandbytes as bnb
    optimizer = getattr(bnb.optim, f"{config.optimizer}8bit")(_torch_params(config, inputs),
                                                               **OPTIMIZERS[config.optimizer])
    return _with_torch_scheduler(optimizer, config, inputs)


def importable(module: str) -> Callable[[], bool]:
    def available() -> bool:
        try:
            __import__(module)
        except Exception:  # absent, or present but broken: either way not measured
            return False
        return True
    return available


def build_deepspeed_cpu_adam(config: Config, inputs: Inputs) -> Step:
    from deepspeed.ops.adam import DeepSpeedCPUAdam  # imported here only: optional and heavy
    optimizer = DeepSpeedCPUAdam(_torch_params(config, inputs), **OPTIMIZERS[config.optimizer],
                                 adamw_mode=config.optimizer == "AdamW")
    return _with_torch_scheduler(optimizer, config, inputs)


@dataclass(frozen=True)
class Competitor:
    build: Callable[[Config, Inputs], Optional[Step]]  # the timed step; None: does not apply
    devices: Tuple[str, ...]
    description: str
    available: Callable[[], bool] = lambda: True
    optimizers: Optional[Tuple[str, ...]] = None  # the optimizers it implements (None: every one torch has)
    dtypes: Optional[Tuple[str, ...]] = None  # the rows' dtypes it runs on (None: every one)

    def applies_to(self, optimizer: str, dtype: str) -> bool:
        if self.dtypes is not None and dtype not in self.dtypes:
            return False
        return optimizer in TORCH_OPTIMIZER if self.optimizers is None else optimizer in self.optimizers


CEILING = "add_ ceiling"
OURS = "ours"
OURS_GRAPH = "ours+cudagraph"
OUR_IMPLS = (OURS, OURS_GRAPH)  # built by build_ours: ours' byte model where it differs (NOTE: [byte model])
EIGHT_BIT_IMPLS = OUR_IMPLS + ("bitsandbytes-8bit",)  # 8-bit states on the fp32+8bit states rows
REFERENCE = "torch-fused"  # the pair the summary compares ours with
COMPETITORS: Dict[str, Competitor] = {
    CEILING: Competitor(build_ceiling, ("cpu", "cuda"), "a.add_(b, alpha) on one tensor of the workload's size",
                        optimizers=tuple(OPTIMIZERS)),
    "torch-forloop": Competitor(torch_pair(foreach=False), ("cpu",), "torch for-loop optimizer + torch scheduler"),
    "torch-foreach": Competitor(torch_pair(foreach=True), ("cpu",), "torch foreach optimizer + torch scheduler"),
    REFERENCE: Competitor(torch_pair(fused=True), ("cpu", "cuda"), "torch fused optimizer + torch scheduler (eager)"),
    "torch-tensor-lr": Competitor(build_torch_tensor_lr, ("cuda",),
                                  "torch capturable (Adam) / fused (SGD) with a tensor lr + torch scheduler"),
    OURS: Competitor(build_ours, ("cpu", "cuda"), "ours, eager: step() + schedule_step()",
                     optimizers=tuple(OPTIMIZERS)),
    OURS_GRAPH: Competitor(build_ours_graph, ("cuda",), "ours, one step captured in a CUDA graph, replayed",
                           optimizers=tuple(OPTIMIZERS)),
    "torch-muon": Competitor(build_torch_muon, ("cpu", "cuda"),
                             "torch.optim.Muon + torch.optim.AdamW(fused=True) + torch schedulers (Muon)",
                             optimizers=("Muon",)),
    "lion-pytorch": Competitor(build_lion_pytorch, ("cpu", "cuda"), "lion-pytorch's Lion + torch scheduler (Lion)",
                               available=importable("lion_pytorch"), optimizers=("Lion",)),
    "bitsandbytes-8bit": Competitor(build_bitsandbytes, ("cpu", "cuda"),
                                    "bitsandbytes' 8-bit optimizer + torch scheduler (fp32+8bit states rows)",
                                    available=importable("bitsandbytes"),
                                    optimizers=("SGD", "Adam", "AdamW", "Lion"), dtypes=EIGHT_BIT_STATE_DTYPES),
    "deepspeed-cpu-adam": Competitor(build_deepspeed_cpu_adam, ("cpu",), "DeepSpeedCPUAdam + torch scheduler",
                                     available=importable("deepspeed.ops.adam"), optimizers=("Adam", "AdamW")),
}

# ------------------------------------------------------------------------ timing


def time_cpu(step: Step, min_run_time: float, threads: int) -> List[float]:
    """Seconds per step of each block of torch.utils.benchmark's blocked_autorange."""
    timer = torch_benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def time_cuda(step: Step, min_run_time: float, threads: int) -> List[float]:
    """Seconds per step of blocks of >= 10 ms, timed with CUDA events."""
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


TIMERS = {"cpu": time_cpu, "cuda": time_cuda}


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ------------------------------------------------------------------------- a run


def competitors_for(device: torch.device, names: Optional[Sequence[str]]) -> List[str]:
    """The competitors that run on `device` (and are importable), in table order."""
    chosen = [n for n in COMPETITORS if names is None or n in names]
    return [n for n in chosen if device.type in COMPETITORS[n].devices and COMPETITORS[n].available()]


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
    if inputs.device.type == "cuda":
        available = torch.cuda.mem_get_info(inputs.device)[0]
    else:
        available = _memory_available()
    if available is None:
        return True
    per_impl = inputs.numel * inputs.params[0].element_size() * (1 + STATE_TENSORS[config.optimizer])
    return per_impl * len(impls) < available / 2


def _build_and_warm(impl: str, config: Config, inputs: Inputs, warmup: int, errors: Dict[str, str]):
    if not COMPETITORS[impl].applies_to(config.optimizer, config.dtype):
        return None
    try:
        step = COMPETITORS[impl].build(config, inputs)
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
        del steps
    else:  # one implementation alive at a time, its rounds back to back
        for impl in impls:
            step = _build_and_warm(impl, config, inputs, args.warmup, errors)
            if step is not None:
                times[impl] = timer(step, args.min_run_time, args.threads)
            del step
        round_robin = False
    element_size = inputs.params[0].element_size()
    if config.dtype in MASTER_WEIGHT_DTYPES:
        optimizer_bytes = inputs.numel * MASTER_BYTES_PER_PARAM[config.optimizer]
    else:
        optimizer_bytes = inputs.numel * element_size * BYTES_PER_ELEMENT_MOVED[config.optimizer]
    if config.dtype in BF16_STATE_DTYPES:  # ours moves fewer bytes than torch's fp32 competitors
        our_bytes = inputs.numel * BF16_STATES_BYTES_PER_PARAM[config.optimizer]
    elif config.dtype in EIGHT_BIT_STATE_DTYPES:  # ours and bitsandbytes' too
        our_bytes = inputs.numel * EIGHT_BIT_STATES_BYTES_PER_PARAM[config.optimizer]
    else:
        our_bytes = optimizer_bytes
    if config.clip:
        optimizer_bytes += inputs.numel * element_size * CLIP_ELEMENTS_MOVED
        our_bytes += inputs.numel * element_size * CLIP_ELEMENTS_MOVED
    moved = {impl: inputs.numel * element_size * CEILING_ELEMENTS_MOVED if impl == CEILING
             else our_bytes if impl in OUR_IMPLS or (impl in EIGHT_BIT_IMPLS and config.dtype in EIGHT_BIT_STATE_DTYPES)
             else optimizer_bytes for impl in impls}
    medians = {impl: statistics.median(t) for impl, t in times.items()}
    ceiling_gbps = moved[CEILING] / medians[CEILING] / 1e9 if CEILING in medians else float("nan")
    rows = []
    for impl in impls:
        row = dict(workload=config.workload, dtype=config.dtype, optimizer=config.optimizer_label,
                   schedule=config.schedule, impl=impl, tensors=len(inputs.params), params=inputs.numel,
                   bytes_per_param=moved[impl] / max(inputs.numel, 1), round_robin=round_robin,
                   load_average_1min=load, ceiling_gbps=ceiling_gbps)
        if impl in errors:
            row["error"] = errors[impl]
        elif impl in times:
            t = times[impl]
            gbps = moved[impl] / medians[impl] / 1e9
            row.update(median_ms=medians[impl] * 1e3, iqr_ms=(_quantile(t, 0.75) - _quantile(t, 0.25)) * 1e3,
                       blocks=len(t), gbps=gbps, share_of_ceiling=gbps / ceiling_gbps,
                       ns_per_tensor=medians[impl] * 1e9 / len(inputs.params),
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
                     f"{r['gbps']:7.1f} GB/s = {100 * r['share_of_ceiling']:5.1f}% of the "
                     f"{r['ceiling_gbps']:.0f} GB/s ceiling  {r['ns_per_tensor']:8.0f} ns/tensor  {ratio}")
    return "\n".join(lines)


# "+clip" rows (--clip): every optimizer, clip + step + schedule against torch's recipe.
# Muon's rows need matrices: the GPT-2 workloads only (MUON_ROWS).
ELEMENTWISE_OPTIMIZERS = [o for o in OPTIMIZERS if o != "Muon"]
MUON_ROWS = [Config("gpt2-small", d, "Muon", "CosineAnnealingLR") for d in ("fp32", "bf16")]
CLIP_CONFIGS = [Config(w, "fp32", o, "CosineAnnealingLR", clip=True) for w in ("small-many", "large-few")
                for o in ELEMENTWISE_OPTIMIZERS]
QUICK_CONFIGS = (
    [Config(w, "fp32", o, "CosineAnnealingLR") for w in ("small-many", "large-few") for o in ELEMENTWISE_OPTIMIZERS]
    + [Config("small-many", "fp32", "Adam", s) for s in ("StepLR", "ReduceLROnPlateau")]
    + [Config(w, d, "Adam", "CosineAnnealingLR") for w in ("small-many", "large-few")
       for d in ("bf16+master", "bf16+SR", "fp32+bf16 states")]
    + [Config(w, "fp32", o, "CosineAnnealingLR") for w in ("host-1000", "host-1000-new-grads")
       for o in ("SGD", "Adam")]
    + CLIP_CONFIGS
    + MUON_ROWS[:1]
    + [Config(w, "fp32+8bit states", "AdamW", "CosineAnnealingLR") for w in ("small-many", "large-few")]
)
# --host-cost (run it with --threads 1): the step's bookkeeping per tensor, NOTE: [host cost].
HOST_COST_CONFIGS = [Config(w, "fp32", o, "CosineAnnealingLR") for w in HOST_COST_WORKLOADS for o in ("SGD", "Adam")]
# benchmarks/gpu_check.sh: 100M+ parameters (GPT-2 small) and 2000 small tensors, fp32, bf16 and bf16 with
# master weights, SGD and Adam; clipped Adam; GPT-2 small Adam with stochastic rounding; GPT-2 small Lion
# and Muon (fp32, bf16) against lion-pytorch and torch's Muon + AdamW; AdamW with 8-bit states.
GPU_CHECK_CONFIGS = ([Config(w, d, o, "CosineAnnealingLR") for w in ("gpt2-small", "many-small")
                      for d in ("fp32", "bf16", "bf16+master") for o in ("SGD", "Adam")]
                     + [Config(w, "fp32", "Adam", "CosineAnnealingLR", clip=True) for w in ("gpt2-small", "many-small")]
                     + [Config("gpt2-small", "bf16+SR", "Adam", "CosineAnnealingLR")]
                     + [Config("gpt2-small", d, "Lion", "CosineAnnealingLR") for d in ("fp32", "bf16")]
                     + MUON_ROWS
                     + [Config(w, "fp32+8bit states", "AdamW", "CosineAnnealingLR")
                        for w in ("gpt2-small", "many-small")])


def plan(args) -> List[Config]:
    """The configurations to run: those in a full run by default, QUICK_CONFIGS
    with --quick, GPU_CHECK_CONFIGS with --gpu-check, any of them narrowed by
    --workloads/--dtypes/--optimizers/--schedules."""
    chosen = {"workload": args.workloads, "dtype": args.dtypes, "optimizer": args.optimizers,
              "schedule": args.schedules}
    known = {"workload": WORKLOADS, "dtype": DTYPES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for name, values in chosen.items():
        unknown = [v for v in values or [] if v not in known[name]]
        if unknown:
            sys.exit(f"unknown {name} {unknown}; accepted: {list(known[name])}")
    if args.quick:
        configs = list(QUICK_CONFIGS)
    elif args.host_cost:
        configs = list(HOST_COST_CONFIGS)
    elif args.gpu_check:
        configs = list(GPU_CHECK_CONFIGS)
    elif args.clip:
        configs = list(CLIP_CONFIGS)
    else:
        workloads = args.workloads or [w for w, spec in WORKLOADS.items() if spec.in_full_run]
        configs = [Config(w, d, o, s) for w in workloads for d in DTYPES for o in ELEMENTWISE_OPTIMIZERS
                   for s in SCHEDULES] + [c for c in MUON_ROWS if c.workload in workloads]
    return [c for c in configs if all(values is None or getattr(c, name) in values for name, values in chosen.items())]


def summary(rows: Sequence[dict]) -> List[str]:
    """One line per configuration: each competitor's time over ours, ours'
    share of the ceiling."""
    lines = []
    by_config: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        by_config.setdefault((r["workload"], r["dtype"], r["optimizer"], r["schedule"]), {})[r["impl"]] = r
    for key, impls in by_config.items():
        ours = impls.get(OURS, {})
        if "median_ms" not in ours:
            continue
        ratios = "  ".join(f"{impl}/ours {r['time_over_ours']:.2f}" for impl, r in impls.items()
                           if r.get("time_over_ours") is not None and impl != OURS)
        lines.append(f"  {' '.join(key):<48} ours {ours['median_ms']:8.3f} ms {ours['gbps']:7.1f} GB/s = "
                     f"{100 * ours['share_of_ceiling']:5.1f}% of ceiling  {ratios}")
    return lines


def plot(rows: Sequence[dict], path: str, title: str) -> Optional[str]:
    """One panel per workload: ms per step of each implementation for each
    (dtype, optimizer, schedule), log scale, and a black line where the
    optimizer's bytes (NOTE: [byte model]) at the add_ ceiling's bandwidth
    would put it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no plot"
    workloads = sorted({r["workload"] for r in rows}, key=list(WORKLOADS).index)
    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != CEILING]
    fig, axes = plt.subplots(len(workloads), 1, figsize=(13, 3.4 * len(workloads)), squeeze=False,
                             layout="constrained")
    for ax, workload in zip(axes[:, 0], workloads):
        mine = [r for r in rows if r["workload"] == workload and "median_ms" in r]
        groups = list(dict.fromkeys((r["dtype"], r["optimizer"], r["schedule"]) for r in mine))
        of_group = lambda g, impl: [r for r in mine if (r["dtype"], r["optimizer"], r["schedule"]) == g  # noqa: E731
                                    and (impl is None or r["impl"] == impl)]
        width = 0.8 / max(len(impls), 1)
        for k, impl in enumerate(impls):
            xs, ys = [], []
            for g, group in enumerate(groups):
                hit = of_group(group, impl)
                if hit:
                    xs.append(g + (k - (len(impls) - 1) / 2) * width)
                    ys.append(hit[0]["median_ms"])
            ax.bar(xs, ys, width=width, label=impl)
        for g, group in enumerate(groups):
            ceiling = of_group(group, CEILING)
            optimizer_rows = [r for r in of_group(group, None) if r["impl"] != CEILING]
            if ceiling and optimizer_rows:  # the time the ceiling's bandwidth would need for the optimizer's bytes
                c = ceiling[0]
                ours = next((r for r in optimizer_rows if r["impl"] == OURS), optimizer_rows[0])  # its bytes
                ideal = c["params"] * ours["bytes_per_param"] / (c["gbps"] * 1e9) * 1e3
                ax.plot([g - 0.4, g + 0.4], [ideal, ideal], color="black", linewidth=1,
                        label="bytes / add_ bandwidth" if g == 0 else None)
        first = mine[0] if mine else {}
        ax.set_yscale("log")
        ax.set_ylabel("ms / step")
        ax.set_title(f"{workload}: {first.get('tensors', '?')} tensors, {first.get('params', 0) / 1e6:.2f}M parameters",
                     fontsize=9)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{o}\n{s}\n{d}" for d, o, s in groups], fontsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=10)
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
            info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                                     None)
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small-many and large-few, fp32, SGD/Adam/AdamW with CosineAnnealingLR (also "
                             "clipped) and bf16+master/bf16+SR/fp32+bf16 states Adam, small-many Adam with StepLR "
                             "and ReduceLROnPlateau, host-1000 SGD/Adam")
    parser.add_argument("--host-cost", action="store_true",
                        help="1000 and 4000 tensors of 16 elements, grads kept and new, SGD/Adam with "
                             "CosineAnnealingLR: the cost of a step's bookkeeping (use --threads 1)")
    parser.add_argument("--gpu-check", action="store_true",
                        help="gpt2-small and many-small x fp32/bf16/bf16+master x SGD/Adam with CosineAnnealingLR "
                             "(and clipped fp32 Adam, gpt2-small bf16+SR Adam), on CUDA")
    parser.add_argument("--clip", action="store_true",
                        help="gradient clipping rows: small-many and large-few, fp32, SGD/Adam/AdamW + "
                             "CosineAnnealingLR, torch's clip_grad_norm_ + step against ours with max_grad_norm")
    parser.add_argument("--out", help="directory for bench_<device>.json and bench_<device>.png")
    parser.add_argument("--json", help="write the JSON here (and no plot)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda (default with --gpu-check)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds per configuration")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per implementation and configuration (default 1.0, quick 0.3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--workloads", nargs="+", help=f"subset of {list(WORKLOADS)}")
    parser.add_argument("--dtypes", nargs="+", help=f"subset of {list(DTYPES)}")
    parser.add_argument("--optimizers", nargs="+", help=f"subset of {list(OPTIMIZERS)}")
    parser.add_argument("--schedules", nargs="+", help=f"subset of {list(SCHEDULES)}")
    parser.add_argument("--competitors", nargs="+", help=f"subset of {list(COMPETITORS)} (the ceiling always runs)")
    args = parser.parse_args(argv)
    args.min_run_time = args.min_run_time or (0.3 if args.quick or args.gpu_check or args.host_cost or args.clip
                                              else 1.0)
    args.device = torch.device(args.device or ("cuda" if args.gpu_check else "cpu"))
    if args.competitors:
        unknown = [c for c in args.competitors if c not in COMPETITORS]
        if unknown:
            sys.exit(f"unknown competitors {unknown}; accepted: {list(COMPETITORS)}")
        args.competitors = [CEILING] + [c for c in args.competitors if c != CEILING]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = args.device
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    timer = TIMERS[device.type]
    configs = plan(args)
    impls = competitors_for(device, args.competitors)
    info = machine_info(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = _load()
    print(f"benchmarks/bench.py on {device} ({info.get('gpu') or info.get('cpu_model')}, {args.threads} threads), "
          f"torch {torch.__version__}, load average {load_at_start:.1f}, {len(configs)} configurations x {impls}",
          flush=True)
    skipped = [n for n in COMPETITORS if device.type in COMPETITORS[n].devices and n not in impls
               and (args.competitors is None or n in args.competitors)]
    if skipped:
        print(f"  not importable here, skipped: {skipped}", flush=True)
    rows: List[dict] = []
    inputs, inputs_key = None, None
    clock = time.perf_counter()
    for n, config in enumerate(configs, 1):
        if (config.workload, config.dtype) != inputs_key:
            inputs = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            inputs_key = (config.workload, config.dtype)
            inputs = Inputs(WORKLOADS[config.workload].shapes(), DTYPES[config.dtype], device)
        print(f"[{n}/{len(configs)} {time.perf_counter() - clock:6.0f}s, load {_load():.1f}] {config.workload} "
              f"({len(inputs.params)} tensors, {inputs.numel / 1e6:.2f}M params) {config.dtype} {config.optimizer_label} + "
              f"{config.schedule}", flush=True)
        config_rows = run_config(config, inputs, impls, args, timer)
        print(format_rows(config_rows), flush=True)
        rows += config_rows
    print("\nSummary (time / ours > 1: ours is faster):")
    print("\n".join(summary(rows)))
    command = "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = dict(command=command.strip(), started_utc=started.isoformat(timespec="seconds"),
                  seconds=round(time.perf_counter() - clock, 1), device=str(device), threads=args.threads,
                  rounds=args.rounds, min_run_time=args.min_run_time, machine=info,
                  load_average_1min=dict(start=load_at_start, end=_load()),
                  byte_model="per parameter: SGD momentum 5 elements, Adam/AdamW 7, add_ ceiling 3; "
                             "element = parameter dtype size; bf16+master 20/28 B; fp32+bf16 states: ours "
                             "16/20 B, torch 20/28 B (each row's bytes_per_param)",
                  competitors={name: COMPETITORS[name].description for name in impls},
                  optimizers=OPTIMIZERS, schedules=SCHEDULES, results=rows)
    paths = []
    if args.json:
        paths.append(args.json)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        paths.append(os.path.join(args.out, f"bench_{device.type}.json"))
    for path in paths:
        with open(path, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {path}")
    if args.out:
        png = os.path.join(args.out, f"bench_{device.type}.png")
        message = plot(rows, png, f"{command.strip()}  |  {info.get('gpu') or info.get('cpu_model')}, "
                       f"{args.threads} threads, torch {torch.__version__}")
        print(message or f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
