"""The precision options of an optimizer: master weights, stochastic
rounding and the states' dtype (NOTE: [master weights] in csrc/op_checks.h,
NOTE: [stochastic rounding] in csrc/stochastic_rounding.h).

What each combination stores, per parameter of a bfloat16/float16 model:

- default: the states in the parameter's dtype, every write rounded to nearest;
- ``master_weights=True``: an fp32 master and fp32 states (or ``state_dtype``);
  the parameter is the master rounded to nearest;
- ``stochastic_rounding=True``: every 16-bit value the step writes (the
  parameter without master weights, 16-bit states) is rounded stochastically;
- ``state_dtype``: the dtype of every floating state tensor (``exp_avg``,
  ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``), for parameters of
  any dtype; the math runs in opmath (float32, float64 for float64 params);
- ``state_dtype="8bit"``: blockwise 8-bit states (NOTE: [8-bit states] in
  csrc/states_8bit.h, ``lrsched_fused.states_8bit``) for parameters of at
  least ``MIN_ELEMENTS`` elements, float32 states for smaller ones.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

from . import states_8bit
from .validation import is_dtensor

__all__ = ["Precision", "STATE_DTYPES", "EIGHT_BIT"]

STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
EIGHT_BIT = "8bit"
_CODED_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq")  # squares of grads: float16's range is too narrow
_SEED_BOUND = 2 ** 53  # the seed is kept in the float64 schedule state, exactly


class Precision:
    """An optimizer's precision options, checked (before anything is built)."""

    def __init__(self, master_weights, stochastic_rounding, state_dtype, owner: str):
        if not isinstance(master_weights, bool):
            raise TypeError(f"{owner}: master_weights must be True or False, got {master_weights!r}")
        if not isinstance(stochastic_rounding, bool):
            raise TypeError(f"{owner}: stochastic_rounding must be True or False, got {stochastic_rounding!r}")
        accepted = "None, torch.float32, torch.bfloat16, torch.float16 or '8bit'"
        if isinstance(state_dtype, str):
            if state_dtype != EIGHT_BIT:
                raise ValueError(f"{owner}: state_dtype must be {accepted}, got {state_dtype!r}")
        elif state_dtype is not None and not isinstance(state_dtype, torch.dtype):
            raise TypeError(f"{owner}: state_dtype must be {accepted}, got {state_dtype!r}")
        elif state_dtype is not None and state_dtype not in STATE_DTYPES:
            raise ValueError(f"{owner}: state_dtype must be {accepted}, got {state_dtype}")
        self.master_weights = master_weights
        self.stochastic_rounding = stochastic_rounding
        self.state_dtype: Optional[torch.dtype | str] = state_dtype
        self.eight_bit = state_dtype == EIGHT_BIT
        self.owner = owner
        # The key of the rounding bits: drawn from torch's default CPU
        # generator (so torch.manual_seed makes a run reproducible), only
        # when asked for (so a default optimizer leaves the generator as it is).
        self.seed: Optional[int] = None
        if stochastic_rounding:
            self.seed = int(torch.randint(0, _SEED_BOUND, (), dtype=torch.int64))

    def uses_master(self, dtype: torch.dtype) -> bool:
        """Whether a parameter of ``dtype`` is stepped through an fp32 master."""
        return self.master_weights and dtype in (torch.bfloat16, torch.float16)

    def codes(self, p: torch.Tensor) -> bool:
        """Whether ``p``'s states are 8-bit codes: ``state_dtype="8bit"``
        and at least ``states_8bit.MIN_ELEMENTS`` elements."""
        return self.eight_bit and p.numel() >= states_8bit.MIN_ELEMENTS

    def check_params(self, params, where: str) -> None:
        """8-bit states are kept for float32/bfloat16/float16 parameters
        that are plain tensors (DDP's replicas included), not DTensor shards."""
        if not self.eight_bit:
            return
        for i, p in enumerate(params):
            if p.dtype not in _CODED_PARAM_DTYPES:
                raise ValueError(f"{self.owner}: state_dtype='8bit' keeps 8-bit states for float32, bfloat16 and "
                                 f"float16 parameters; parameter {i} of {where} is {p.dtype}")
            if is_dtensor(p):
                raise ValueError(f"{self.owner}: state_dtype='8bit' does not take DTensor parameters (FSDP2, tensor "
                                 f"parallel): parameter {i} of {where} is one. A shard's absmax vector would not be "
                                 "a DTensor a distributed checkpoint can gather; use DDP, or another state_dtype")

    def state_dtype_of(self, p: torch.Tensor, key: str = "exp_avg") -> torch.dtype:
        """The dtype of ``p``'s floating state ``key``: ``state_dtype``, else
        fp32 with master weights, else the parameter's; Adam's second moments
        in bf16 where fp16 states were asked for (NOTE: [float16 second
        moments] in csrc/dispatch.h); with 8-bit states uint8 codes (float32
        states for a parameter too small to code)."""
        if self.eight_bit:
            return torch.uint8 if self.codes(p) else torch.float32
        own = torch.float32 if self.uses_master(p.dtype) else p.dtype
        dtype = own if self.state_dtype is None else self.state_dtype
        if dtype == torch.float16 and own != torch.float16 and key in SECOND_MOMENTS:
            return torch.bfloat16
        return dtype

    def check_seed(self, seed) -> int:
        """A saved seed (``state_dict()["rounding_seed"]``), checked."""
        if isinstance(seed, torch.Tensor) and seed.numel() == 1 and not seed.is_floating_point():
            seed = int(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_BOUND:
            raise ValueError(f"{self.owner}: the state_dict's rounding_seed must be an integer in [0, 2**53), "
                             f"got {seed!r}")
        return seed

    def share_seed_across_ranks(self) -> None:
        """Under torch.distributed (DDP, FSDP2), every rank takes rank 0's
        seed, so replicated parameters round alike on every rank whatever each
        rank's generator holds. A collective: every rank builds the optimizer."""
        if self.seed is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return
        if torch.distributed.get_world_size() > 1:
            box: List[Optional[int]] = [self.seed]
            torch.distributed.broadcast_object_list(box, src=0)
            self.seed = int(box[0])


def element_offsets(params: Sequence[torch.Tensor], all_params: Sequence[torch.Tensor]) -> List[int]:
    """Each of ``params``' first element's global index: its position in
    ``all_params`` (the optimizer's parameters in param-group order) laid
    end to end at their full sizes, plus, for a DTensor shard, the shard's
    first element within the full parameter (NOTE: [stochastic rounding])."""
    starts, at = {}, 0
    for q in all_params:
        starts[id(q)] = at
        at += q.numel()
    return [starts[id(p)] + shard_start(p) for p in params]


def shard_start(p: torch.Tensor) -> int:
    """The global index of a DTensor's local shard's first element (0 for a
    plain tensor or a replicated one)."""
    if not is_dtensor(p):
        return 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]) * math.prod(p.shape[1:]) if len(offset) else 0


def check_roundable(p: torch.Tensor, owner: str, where: str) -> None:
    """Stochastic rounding keys each element's bits by its global index, so a
    DTensor's local shard must be a contiguous run of the full parameter:
    replicated, or sharded on dim 0 over a 1-D mesh (FSDP2)."""
    if not is_dtensor(p):
        return
    from torch.distributed.tensor import Replicate, Shard
    placements = tuple(p.placements)
    if p.device_mesh.ndim == 1 and placements[0] in (Replicate(), Shard(0)):
        return
    raise ValueError(f"{owner}: stochastic_rounding takes DTensor parameters sharded on dim 0 over a 1-D mesh "
                     f"(FSDP2's fully_shard) or replicated; a parameter of shape {tuple(p.shape)} has placements "
                     f"{placements} on a {p.device_mesh.ndim}-D mesh ({where})")
