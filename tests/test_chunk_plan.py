"""The CUDA launcher's chunk plan (csrc/cuda/chunk_plan.h) against brute
force, on any machine: lrsched_fused._C.testing.chunk_plan runs the same
C10_HOST_DEVICE functions the kernels call (the chunk index each block reads,
the part of its tensor each block updates) and the host's upload batching.

NOTE: [device tensor table] in csrc/cuda/multi_tensor_launcher.cuh.
"""
import random

import pytest

from lrsched_fused import _C

CHUNK = _C.CHUNK_ELEMENTS


def brute_force_blocks(numels):
    """(tensor, first element, element count) of every block, in launch order:
    each tensor cut into CHUNK-element pieces, the tensors one after another."""
    return [(t, begin, min(CHUNK, n - begin)) for t, n in enumerate(numels) for begin in range(0, n, CHUNK)]


def blocks_of(plan):
    flat = plan["blocks"]
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


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


@pytest.mark.parametrize("numels", list(CASES.values()), ids=list(CASES))
def test_every_block_gets_its_tensor_and_range(numels):
    plan = _C.testing.chunk_plan(numels, _C.UPLOAD_WORDS_LARGE)
    expected = brute_force_blocks(numels)
    assert plan["num_chunks"] == len(expected)
    assert blocks_of(plan) == expected
    first_chunks, chunk = [], 0
    for n in numels:
        first_chunks.append(chunk)
        chunk += -(-n // CHUNK)
    assert plan["first_chunks"] == first_chunks


def test_no_tensors():
    plan = _C.testing.chunk_plan([], _C.UPLOAD_WORDS_LARGE)
    assert plan["num_chunks"] == 0 and plan["blocks"] == [] and plan["layout_batches"] == []


def test_a_call_that_needs_more_blocks_than_a_grid_holds_is_refused():
    too_many = (2**31 - 1) * CHUNK + 1  # 2**31 chunks
    with pytest.raises(RuntimeError, match="more than a CUDA grid holds; split the param group"):
        _C.testing.chunk_plan([too_many], _C.UPLOAD_WORDS_LARGE)
    with pytest.raises(RuntimeError, match="more than a CUDA grid holds"):
        _C.testing.chunk_plan([too_many // 2, too_many // 2 + 1], _C.UPLOAD_WORDS_LARGE)


def expected_batches(words, capacity):
    return [(offset, min(capacity, words - offset)) for offset in range(0, words, capacity)]


@pytest.mark.parametrize("capacity", [_C.UPLOAD_WORDS_SMALL, _C.UPLOAD_WORDS_LARGE], ids=["4KB", "32KB"])
@pytest.mark.parametrize("tensors", [1, 61, 62, 63, 495, 496, 497, 500, 3999, 4000, 4001, 9000])
def test_uploads_cover_the_table_once_in_few_launches(tensors, capacity):
    """A layout's entries are 8 words per tensor, a grad array 1; each launch
    carries at most `capacity` words, and consecutive launches tile the buffer."""
    plan = _C.testing.chunk_plan([1] * tensors, capacity)
    for key, words in (("layout_batches", 8 * tensors), ("grad_batches", tensors)):
        batches = [tuple(b) for b in plan[key]]
        assert batches == expected_batches(words, capacity)
        assert sum(count for _, count in batches) == words
        assert all(0 < count <= capacity for _, count in batches)
    if capacity == _C.UPLOAD_WORDS_LARGE and tensors <= capacity:
        assert len(plan["grad_batches"]) == 1  # moved grads: one upload launch
