"""Under torch.distributed (two gloo ranks on the CPU) FusedAdam trains as the
single-process torch pair does on the full batch: DDP, ZeroRedundancyOptimizer,
FSDP2 (fully_shard, DTensor parameters) and a ReduceLROnPlateau metric
all-reduced on the device. Scenarios: tests/distributed_scenarios.py.

Tolerances. The lrs must be equal: the schedule math is the same float64
code on every rank. The parameters are float64 and may differ only by the
rounding of the gradient: each rank averages the loss over its half of the
batch and the halves are averaged by the all-reduce / reduce-scatter, where
the reference averages over the whole batch at once (another summation
order). Adam normalises each update by its running RMS, so a gradient
rounding difference of ~1e-16 moves a parameter by ~lr * 1e-16 per step; 1e-12
relative per tensor (the suite's fp64 tolerance) leaves room for 12 steps of
that and catches any real difference (a wrong lr, a missed shard, a step
applied twice: all >= 1e-4 here).
"""
import os

import pytest
import torch
import torch.distributed as dist

import distributed_scenarios
from distributed_scenarios import SCENARIOS, WORLD_SIZE, Trace, torch_pair_trace
from torch_pair import WORST_SEEN, record_worst, relative_error

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch built without torch.distributed / gloo")

PARAM_TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    """One spawn of two ranks runs every scenario (starting the processes costs more than the scenarios)."""
    import torch.multiprocessing as mp
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(distributed_scenarios.run_ranks, nprocs=WORLD_SIZE,
             args=(str(out_dir / "init"), list(SCENARIOS), str(out_dir)))
    return {name: [torch.load(os.path.join(out_dir, f"{name}.rank{rank}.pt"), weights_only=False)
                   for rank in range(WORLD_SIZE)] for name in [*SCENARIOS, "mismatched-grad", "stochastic-rounding", "muon", "8bit"]}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_matches_the_single_process_torch_pair_step_by_step(name, rank_results):
    reference = torch_pair_trace(name)
    for rank, trace in enumerate(rank_results[name]):
        assert isinstance(trace, Trace)
        assert trace.lrs == reference.lrs, f"rank {rank}"
        assert len(trace.params) == len(reference.params)
        worst = 0.0
        for step, (ours, theirs) in enumerate(zip(trace.params, reference.params)):
            for i, (a, b) in enumerate(zip(ours, theirs)):
                error = relative_error(a, b)
                assert error <= PARAM_TOLERANCE, f"rank {rank}, step {step}, parameter {i}: {error:.3e}"
                worst = max(worst, error)
        # its own line in the summary: not the same gradients (see the module docstring)
        seen = WORST_SEEN.setdefault("distributed fp64", {"lr": 0.0, "param": 0.0, "runs": 0})
        seen["param"] = max(seen["param"], worst)
        seen["runs"] += 1


def test_fsdp2_states_are_dtensors_like_torchs(rank_results):
    """As torch's Adam keeps them under FSDP2: moments sharded like the parameter, a plain step count."""
    for trace in rank_results["fsdp2-cosine-adamw"]:
        assert trace.state_types == ["exp_avg: DTensor", "exp_avg_sq: DTensor", "step: Tensor"]


def test_the_scenarios_cross_the_schedule_changes():
    """The lr changes in every scenario, and the plateau run has both kinds of epoch."""
    for name in SCENARIOS:
        lrs = [epoch[0] for epoch in torch_pair_trace(name).lrs]
        assert len(set(lrs)) > 2, (name, lrs)
    plateau = [epoch[0] for epoch in torch_pair_trace("ddp-plateau-allreduced-metric").lrs]
    kept = sum(a == b for a, b in zip(plateau, plateau[1:]))
    assert 0 < kept < len(plateau) - 1, plateau


def test_a_grad_sharded_unlike_its_dtensor_parameter_is_refused(rank_results):
    for message, local_shard in rank_results["mismatched-grad"]:
        assert message is not None and "FusedAdam: the grad of params[0] of param group 0 is sharded as" in message
        assert "Replicate()" in message and "Shard(dim=0)" in message
        assert torch.equal(local_shard, torch.ones(2, 3, dtype=torch.float64))  # refused before any update


def test_stochastic_rounding_of_shards_and_replicas(rank_results):
    """FSDP2 shards draw the bits the unsharded parameters draw (the element
    index is global), and replicas agree: the seed is rank 0's on every rank."""
    runs = rank_results["stochastic-rounding"]
    assert runs[0]["seed"] == runs[1]["seed"]
    for run in runs:
        assert all(torch.equal(a, b) for a, b in zip(run["fsdp2"], run["unsharded"]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0]["replicated"], runs[1]["replicated"]))


# DDP all-reduces the two half-batch grads (a mean in float64): equal to the
# full batch's grad to a few float64 ulps. Measured: 2.1e-16 relative, no
# bfloat16 rounding of the Newton-Schulz input flipped in this run (the bits
# are the same every run; a flip would show as ~1e-4).
MUON_DDP_TOLERANCE = 1e-12


def assert_replicas_follow(runs, single: Trace, what: str, tolerance: float) -> None:
    """Both DDP replicas' "ddp" traces are equal bit for bit, within
    `tolerance` (relative, per tensor) of the single-process run, with its lrs."""
    for a, b in zip(runs[0]["ddp"].params, runs[1]["ddp"].params):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    worst = max(relative_error(x, y) for step, reference in zip(runs[0]["ddp"].params, single.params)
                for x, y in zip(step, reference))
    record_worst(f"{what} ddp vs one process", param=worst)
    assert worst <= tolerance
    assert runs[0]["ddp"].lrs == single.lrs


def test_muon_under_ddp_and_fsdp2(rank_results):
    """FusedMuon under DDP: both replicas step alike (bit for bit) and follow
    the single-process run; under FSDP2 its Muon group is refused with a
    message naming the way out."""
    runs = rank_results["muon"]
    assert_replicas_follow(runs, distributed_scenarios.muon_single_process_trace(), "muon", MUON_DDP_TOLERANCE)
    for run in runs:
        message = run["fsdp2 refusal"]
        assert message is not None and "is a DTensor shard" in message and "use_muon=False" in message


# 8-bit states under DDP against one process: the replicas' all-reduced grads
# differ from the full batch's by rounding (~1e-7 in float32), which may move
# a value across a code's crossing; measured 4.6e-7 relative here, bound 1e-5.
EIGHT_BIT_DDP_TOLERANCE = 1e-5


def test_8bit_states_under_ddp_and_fsdp2(rank_results):
    """8-bit states under DDP: both replicas step alike, bit for bit, and
    follow the single-process run; FSDP2's DTensor shards are refused."""
    runs = rank_results["8bit"]
    assert runs[0]["coded"] == "torch.uint8"
    assert_replicas_follow(runs, distributed_scenarios.eight_bit_single_process_trace(), "8-bit",
                           EIGHT_BIT_DDP_TOLERANCE)
    for run in runs:
        assert run["fsdp2 refusal"] is not None and "DTensor" in run["fsdp2 refusal"]
