"""The CUDA launcher's plan (csrc/cuda/chunk_plan.h) against brute force, on
any machine: lrsched_fused._C.testing.chunk_plan runs the same host code that
cuts a call's tensors into launches and the same C10_HOST_DEVICE functions a
kernel block calls (its tensor by binary search over its launch's first
chunks, its part of that tensor).

NOTE: [tensors in kernel arguments] in csrc/cuda/multi_tensor_launcher.cuh.
"""
import random

import pytest

from lrsched_fused import _C

CHUNK = _C.CHUNK_ELEMENTS
GRID = 2**31 - 1  # blocks a launch may have


def brute_force_blocks(numels):
    """(tensor, first element, element count) of every block, in launch order:
    each tensor cut into CHUNK-element pieces, the tensors one after another."""
    return [(t, begin, min(CHUNK, n - begin)) for t, n in enumerate(numels) for begin in range(0, n, CHUNK)]


def blocks_of(plan):
    flat = plan["blocks"]
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def chunks(n):
    return -(-n // CHUNK)


def random_sizes(count, seed):
    rng = random.Random(seed)
    return [rng.choice([0, 1, rng.randrange(2, CHUNK), CHUNK, CHUNK + 1, rng.randrange(CHUNK, 5 * CHUNK)])
            for _ in range(count)]


CASES = {
    "one element": [1],
    "a zero-size tensor alone": [0],
    "zero-size first, between and last": [0, 0, 5, 0, CHUNK + 3, 0, 0, 7, 0],
    "chunk boundaries": [CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1],
    "1000 tensors": random_sizes(1000, seed=1),
    "4000 tiny tensors": [16] * 4000,
    "over 2**31 elements in one tensor": [3, 2**31 + 5, 0, 11],
    "over 2**32 elements in all": [2**31 - 1, 0, 2**31 + 1, CHUNK, 2**32 + 17],
}
# 1: every tensor its own launch; 406, 451, 1015: what a launch carries for
# Adam with amsgrad, Adam, the grad norm (_C.testing.cuda_tensors_per_launch);
# 507: SGD with momentum (Adam's before the element offset joined the entry).
CAPACITIES = [1, 2, 7, 406, 451, 507, 1015]


def check_launches(plan, numels, capacity):
    """The launches tile the tensors in order, each with at most `capacity`
    tensors and a grid's blocks, the chunks likewise; each tensor's first
    block counts from its launch's first."""
    launches = [tuple(x) for x in plan["launches"]]
    tensor, chunk = 0, 0
    for first_tensor, count, first_chunk, num_chunks in launches:
        assert first_tensor == tensor and first_chunk == chunk
        assert 0 < count <= capacity and 0 <= num_chunks <= GRID
        local = 0
        for t in range(first_tensor, first_tensor + count):
            assert plan["first_chunks"][t] == local
            local += chunks(numels[t])
        assert local == num_chunks
        tensor += count
        chunk += num_chunks
    assert tensor == len(numels) and chunk == plan["num_chunks"] == sum(chunks(n) for n in numels)
    return launches


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("numels", list(CASES.values()), ids=list(CASES))
def test_every_chunk_is_one_block_of_one_launch(numels, capacity):
    """Across all launches, in launch order, the blocks are every chunk of
    every tensor exactly once: none skipped or repeated at a launch boundary."""
    plan = _C.testing.chunk_plan(numels, capacity)
    check_launches(plan, numels, capacity)
    assert blocks_of(plan) == brute_force_blocks(numels)


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("tensors", [1, 2, 450, 451, 452, 507, 508, 1015, 1016, 3000])
def test_launches_per_call(tensors, capacity):
    """Below a grid's blocks, n tensors take ceil(n / capacity) launches."""
    numels = [(t * 7919) % (3 * CHUNK) for t in range(tensors)]
    plan = _C.testing.chunk_plan(numels, capacity)
    launches = check_launches(plan, numels, capacity)
    assert len(launches) == -(-tensors // capacity)


def test_no_tensors_no_launches():
    plan = _C.testing.chunk_plan([], 507)
    assert plan["launches"] == [] and plan["num_chunks"] == 0 and plan["blocks"] == []


def test_a_launch_of_zero_size_tensors_has_no_blocks():
    plan = _C.testing.chunk_plan([0, 0, 0, 5], 3)
    assert [tuple(x) for x in plan["launches"]] == [(0, 3, 0, 0), (3, 1, 0, 1)]
    assert blocks_of(plan) == [(3, 0, 5)]


def test_a_launch_is_cut_at_a_grid_of_blocks():
    """Tensors whose chunks together exceed a grid go to separate launches,
    even below the tensor capacity (no memory is touched: sizes only)."""
    half = (GRID // 2 + 1) * CHUNK  # a bit over half a grid of chunks
    numels = [half, half, 5, half]
    plan = _C.testing.chunk_plan(numels, 507, with_blocks=False)
    launches = check_launches(plan, numels, 507)
    assert [(first, count) for first, count, _, _ in launches] == [(0, 1), (1, 2), (3, 1)]


def test_a_tensor_that_needs_more_blocks_than_a_grid_holds_is_refused():
    too_many = GRID * CHUNK + 1
    with pytest.raises(RuntimeError, match="more than a CUDA grid holds"):
        _C.testing.chunk_plan([too_many], 507, with_blocks=False)
    plan = _C.testing.chunk_plan([GRID * CHUNK], 507, with_blocks=False)  # exactly a grid: one launch
    assert [tuple(x) for x in plan["launches"]] == [(0, 1, 0, GRID)]


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_capacity_below_one_is_refused(capacity):
    with pytest.raises(RuntimeError, match="tensors per launch"):
        _C.testing.chunk_plan([1], capacity)
