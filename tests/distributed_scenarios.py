"""The torch.distributed scenarios of tests/test_distributed.py.

Each scenario trains the same small float64 MLP for EPOCHS x STEPS_PER_EPOCH
steps. On two gloo ranks (CPU processes spawned by the test) each rank takes
half of every batch; the single-process torch pair takes the whole batch.
Both record the full parameters after every step and the lrs after every
schedule step, so the test can compare them step by step.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from lrsched_fused import FusedAdam, schedules

WORLD_SIZE = 2
EPOCHS = 6
STEPS_PER_EPOCH = 2
BATCH = 16  # rows per step, split evenly between the ranks


@dataclass(frozen=True)
class Scenario:
    wrap: str  # "ddp", "zero" (ZeroRedundancyOptimizer under DDP) or "fsdp2"
    adam: dict  # FusedAdam / torch.optim.Adam keyword arguments
    schedule: Tuple[str, dict]  # a name in both lrsched_fused.schedules and torch.optim.lr_scheduler
    # checkpoint after this epoch, rebuild everything, load and continue (ZeRO: the schedule
    # entry travels beside ZeRO's consolidated state_dict, through as_lr_scheduler)
    resume_after_epoch: Optional[int] = None
    # ours: max_grad_norm / grad_norm_type; the reference: clip_grad_norm_ before its step
    clipping: Optional[dict] = None


SCENARIOS: Dict[str, Scenario] = {
    "ddp-steplr": Scenario("ddp", {"lr": 0.05, "weight_decay": 0.01}, ("StepLR", {"step_size": 2, "gamma": 0.5})),
    "zero-cosine-amsgrad": Scenario("zero", {"lr": 0.05, "amsgrad": True},
                                    ("CosineAnnealingLR", {"T_max": 4, "eta_min": 1e-3})),
    "zero-cosine-amsgrad-resumed": Scenario("zero", {"lr": 0.05, "amsgrad": True},
                                            ("CosineAnnealingLR", {"T_max": 4, "eta_min": 1e-3}),
                                            resume_after_epoch=3),
    "fsdp2-cosine-adamw": Scenario("fsdp2", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True},
                                   ("CosineAnnealingLR", {"T_max": 4, "eta_min": 1e-3})),
    # threshold 0.4: the validation loss falls by more than 40 % from its best
    # on one epoch and by less on the others, so the run crosses both branches
    "ddp-plateau-allreduced-metric": Scenario(
        "ddp", {"lr": 0.05}, ("ReduceLROnPlateau", {"factor": 0.5, "patience": 0, "threshold": 0.4})),
    # the grads' total norm is ~0.05-0.3 over the run: clipped on some steps, not on others
    "ddp-steplr-clipped": Scenario("ddp", {"lr": 0.05, "weight_decay": 0.01},
                                   ("StepLR", {"step_size": 2, "gamma": 0.5}), clipping={"max_grad_norm": 0.1}),
    # the norm of DTensor grads: each rank's shards, summed over the ranks (rank 1 holds an empty shard)
    "fsdp2-cosine-adamw-clipped": Scenario(
        "fsdp2", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ("CosineAnnealingLR", {"T_max": 4, "eta_min": 1e-3}), clipping={"max_grad_norm": 0.1}),
    "fsdp2-cosine-clipped-inf-norm": Scenario(
        "fsdp2", {"lr": 0.05}, ("CosineAnnealingLR", {"T_max": 4, "eta_min": 1e-3}),
        clipping={"max_grad_norm": 0.03, "grad_norm_type": float("inf")}),
}


@dataclass
class Trace:
    """Full parameters after every step; every group's lr after every schedule
    step; the optimizer state's names and types at the end ("exp_avg: DTensor")."""
    params: List[List[torch.Tensor]]
    lrs: List[List[float]]
    state_types: List[str] = field(default_factory=list)


def make_model() -> torch.nn.Module:
    """The last layer's weight (1, 3) and bias (1,) leave rank 1 an empty FSDP2 shard."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Tanh(),
                               torch.nn.Linear(3, 1)).double()


def data(step: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch of a training step, or (step None) the validation set."""
    gen = torch.Generator().manual_seed(1000 if step is None else step)
    x = torch.randn(BATCH, 6, generator=gen, dtype=torch.float64)
    return x, torch.tanh(x[:, :3].sum(dim=1, keepdim=True))


def train(model: torch.nn.Module, optimizer, schedule_step: Callable[[torch.Tensor], None],
          lrs: Callable[[], List[float]], rank: int = 0, world_size: int = 1, epochs: range = range(EPOCHS),
          before_step: Optional[Callable[[], None]] = None) -> Trace:
    """rank/world_size: which rows of each batch this process sees (all of them when world_size is 1)."""
    rows = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
    trace = Trace([], [])
    for epoch in epochs:
        for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH):
            x, y = data(step)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            trace.params.append([_full(p) for p in model.parameters()])
        with torch.no_grad():
            x, y = data(None)
            schedule_step(torch.nn.functional.mse_loss(model(x[rows]), y[rows]))
        trace.lrs.append(lrs())
    return trace


def _full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


def torch_pair_trace(name: str) -> Trace:
    """The reference: torch.optim.Adam(fused=True) + torch's scheduler in one process, full batches."""
    scenario = SCENARIOS[name]
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), fused=True, **scenario.adam)
    schedule_name, schedule_kwargs = scenario.schedule
    scheduler = getattr(torch.optim.lr_scheduler, schedule_name)(optimizer, **schedule_kwargs)
    plateau = schedule_name == "ReduceLROnPlateau"
    clip = None
    if scenario.clipping:
        clip = lambda: torch.nn.utils.clip_grad_norm_(  # noqa: E731
            model.parameters(), scenario.clipping["max_grad_norm"], scenario.clipping.get("grad_norm_type", 2.0),
            foreach=True)
    return train(model, optimizer, lambda metric: scheduler.step(metric) if plateau else scheduler.step(),
                 lambda: [float(g["lr"]) for g in optimizer.param_groups], before_step=clip)


def run_ranks(rank: int, init_file: str, names: List[str], out_dir: str) -> None:
    """torch.multiprocessing.spawn target: runs the named scenarios on this rank, saves their traces."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=300))
    try:
        for name in names:
            torch.save(_run_scenario(SCENARIOS[name], rank), os.path.join(out_dir, f"{name}.rank{rank}.pt"))
        torch.save(_mismatched_grad_error(), os.path.join(out_dir, f"mismatched-grad.rank{rank}.pt"))
        torch.save(_stochastic_rounding_runs(rank), os.path.join(out_dir, f"stochastic-rounding.rank{rank}.pt"))
        torch.save(_muon_runs(rank), os.path.join(out_dir, f"muon.rank{rank}.pt"))
        torch.save(_eight_bit_runs(rank), os.path.join(out_dir, f"8bit.rank{rank}.pt"))
        dist.barrier()  # neither rank tears down while the other still talks to it
    finally:
        dist.destroy_process_group()
    # Every result is on disk. Leave without the interpreter's finalization:
    # gloo's worker threads may still hold work objects whose tensors are freed
    # while the interpreter is torn down, which aborts the process (CI saw
    # rank 1 end with SIGABRT after both ranks had saved every result).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _build(scenario: Scenario, model_state: Optional[dict] = None):
    """(the trained module, the optimizer to step, this rank's FusedAdam, its schedule)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    model = make_model()
    if model_state is not None:
        model.load_state_dict(model_state)
    schedule_name, schedule_kwargs = scenario.schedule
    schedule = getattr(schedules, schedule_name)(**schedule_kwargs)
    if scenario.wrap == "fsdp2":
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        trained = model
    else:
        trained = DistributedDataParallel(model)
    if scenario.wrap == "zero":
        optimizer = ZeroRedundancyOptimizer(trained.parameters(), optimizer_class=FusedAdam, schedule=schedule,
                                            **scenario.adam)
        local = optimizer.optim  # this rank's FusedAdam: its share of the parameters, and the schedule
    else:
        optimizer = local = FusedAdam(trained.parameters(), schedule=schedule, **scenario.adam,
                                      **(scenario.clipping or {}))
    return trained, optimizer, local, schedule


def _run_scenario(scenario: Scenario, rank: int) -> Trace:
    from test_no_sync import HostReadDetector

    trained, optimizer, local, schedule = _build(scenario)

    def schedule_step(metric: torch.Tensor) -> None:
        if not schedule.requires_metric:
            local.schedule_step()
            return
        with HostReadDetector():  # the mean metric of all ranks, on the device, no host read
            dist.all_reduce(metric)
            local.schedule_step(metric / WORLD_SIZE)

    if scenario.resume_after_epoch is None:
        trace = train(trained, optimizer, schedule_step, local.get_last_lr, rank, WORLD_SIZE)
    else:
        split = scenario.resume_after_epoch
        trace = train(trained, optimizer, schedule_step, local.get_last_lr, rank, WORLD_SIZE, range(split))
        trained, optimizer, local = _checkpoint_and_rebuild(scenario, trained, optimizer, local, rank)
        rest = train(trained, optimizer, schedule_step, local.get_last_lr, rank, WORLD_SIZE, range(split, EPOCHS))
        trace = Trace(trace.params + rest.params, trace.lrs + rest.lrs)
    trace.state_types = sorted({f"{k}: {type(v).__name__}" for state in local.state.values() for k, v in state.items()})
    return trace


def _checkpoint_and_rebuild(scenario: Scenario, trained, optimizer, local, rank: int):
    """A ZeRO checkpoint as the README describes it: the model, ZeRO's
    consolidated state_dict (which keeps only torch's keys) and, beside it,
    as_lr_scheduler(opt.optim).state_dict(); then everything built anew and loaded."""
    from lrsched_fused import as_lr_scheduler

    model_state = {k: v.detach().clone() for k, v in trained.module.state_dict().items()}
    optimizer.consolidate_state_dict(to=0)
    consolidated = [optimizer.state_dict() if rank == 0 else None]
    dist.broadcast_object_list(consolidated, src=0)
    schedule_part = as_lr_scheduler(local).state_dict()
    assert "schedule" not in consolidated[0]  # ZeRO drops it: hence the separate entry
    trained, optimizer, local, _ = _build(scenario, model_state)
    optimizer.load_state_dict(consolidated[0])
    as_lr_scheduler(local).load_state_dict(schedule_part)
    return trained, optimizer, local


def _mismatched_grad_error() -> Tuple[Optional[str], torch.Tensor]:
    """What FusedAdam says about a grad sharded unlike its parameter (None:
    nothing), and the parameter's local shard afterwards."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD_SIZE,))
    param = torch.nn.Parameter(distribute_tensor(torch.ones(4, 3, dtype=torch.float64), mesh, [Shard(0)]))
    param.grad = distribute_tensor(torch.ones(4, 3, dtype=torch.float64), mesh, [Replicate()])
    optimizer = FusedAdam([param])
    try:
        optimizer.step()
    except ValueError as error:
        return str(error), param.to_local().detach().clone()
    return None, param.to_local().detach().clone()


def _stochastic_rounding_runs(rank: int) -> dict:
    """stochastic_rounding under torch.distributed (NOTE: [stochastic rounding]):
    - "fsdp2": bf16 parameters sharded on dim 0 (an uneven split) stepped with
      the same grads as "unsharded", one plain FusedAdam over the full
      tensors on this rank: the gathered parameters must be equal bit for bit;
    - "replicated": plain bf16 parameters stepped with the same grads on both
      ranks, whose generators were seeded differently before the optimizer
      was built: the seed is rank 0's on both, so the ranks must agree."""
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD_SIZE,))
    g = torch.Generator().manual_seed(11)
    shapes = [(5, 3), (7,), (4, 2)]
    values = [torch.randn(s, generator=g).to(torch.bfloat16) for s in shapes]
    grads = [[torch.randn(s, generator=g).to(torch.bfloat16) for s in shapes] for _ in range(3)]
    options = dict(lr=1e-2, stochastic_rounding=True, state_dtype=torch.bfloat16)

    def run(make_param, make_grad):
        torch.manual_seed(100 + rank)  # each rank's generator differs: the seed must come from rank 0
        params = [torch.nn.Parameter(make_param(v)) for v in values]
        optimizer = FusedAdam(params, **options)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = make_grad(grad)
            optimizer.step()
        return [_full(p) for p in params], optimizer.rounding_seed

    sharded, seed = run(lambda v: distribute_tensor(v.clone(), mesh, [Shard(0)]),
                        lambda grad: distribute_tensor(grad.clone(), mesh, [Shard(0)]))
    unsharded, _ = run(lambda v: v.clone(), lambda grad: grad.clone())
    replicated, _ = run(lambda v: v.clone(), lambda grad: grad.clone())
    return {"fsdp2": sharded, "unsharded": unsharded, "replicated": replicated, "seed": seed}


def _muon_optimizer(model: torch.nn.Module):
    """FusedMuon over the MLP: its weights a Muon group, its biases an AdamW group; a cosine schedule."""
    from lrsched_fused import FusedMuon

    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    return FusedMuon([{"params": weights}, {"params": biases, "use_muon": False, "lr": 0.01}], lr=0.05,
                     schedule=schedules.CosineAnnealingLR(T_max=4, eta_min=1e-3))


def muon_single_process_trace() -> Trace:
    """FusedMuon in one process on full batches: what DDP's ranks must follow."""
    model = make_model()
    optimizer = _muon_optimizer(model)
    return train(model, optimizer, lambda metric: optimizer.schedule_step(), optimizer.get_last_lr)


def _muon_runs(rank: int) -> dict:
    """FusedMuon under torch.distributed:
    - "ddp": the MLP under DistributedDataParallel, each rank half of every
      batch: a replica of the single-process run (muon_single_process_trace),
      the same on both ranks;
    - "fsdp2": the MLP under fully_shard: its weights are DTensor shards, and
      FusedMuon refuses them at construction (the message)."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(make_model())
    optimizer = _muon_optimizer(model.module)
    trace = train(model, optimizer, lambda metric: optimizer.schedule_step(), optimizer.get_last_lr, rank=rank,
                  world_size=WORLD_SIZE)
    sharded = make_model()
    for layer in sharded:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(sharded)
    try:
        _muon_optimizer(sharded)
        refusal = None
    except ValueError as error:
        refusal = str(error)
    return {"ddp": trace, "fsdp2 refusal": refusal}


def _eight_bit_model() -> torch.nn.Module:
    """A float32 MLP whose first weight (6144 elements) gets 8-bit states, its other tensors float32 states."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 1))


def _eight_bit_optimizer(model: torch.nn.Module):
    return FusedAdam(model.parameters(), lr=0.01, weight_decay=0.01, decoupled_weight_decay=True,
                     state_dtype="8bit", schedule=schedules.CosineAnnealingLR(T_max=4, eta_min=1e-3))


class _Float32(torch.nn.Module):
    """The scenarios' float64 batches into a float32 model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.float()).double()


def eight_bit_single_process_trace() -> Trace:
    """FusedAdam with 8-bit states in one process on full batches."""
    model = _eight_bit_model()
    optimizer = _eight_bit_optimizer(model)
    return train(_Float32(model), optimizer, lambda metric: optimizer.schedule_step(), optimizer.get_last_lr)


def _eight_bit_runs(rank: int) -> dict:
    """8-bit states under torch.distributed:
    - "ddp": the float32 MLP under DistributedDataParallel, each rank half of
      every batch (replicas code the same values alike);
    - "fsdp2": the MLP under fully_shard: refused at construction (the message)."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(_eight_bit_model())
    optimizer = _eight_bit_optimizer(model.module)
    trace = train(_Float32(model), optimizer, lambda metric: optimizer.schedule_step(), optimizer.get_last_lr,
                  rank=rank, world_size=WORLD_SIZE)
    coded = optimizer.state[model.module[0].weight]["exp_avg"].dtype
    sharded = _eight_bit_model()
    fully_shard(sharded)
    try:
        _eight_bit_optimizer(sharded)
        refusal = None
    except ValueError as error:
        refusal = str(error)
    return {"ddp": trace, "coded": str(coded), "fsdp2 refusal": refusal}
