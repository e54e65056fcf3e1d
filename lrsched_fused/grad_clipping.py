"""Gradient clipping inside the step: the global grad norm of
``torch.nn.utils.clip_grad_norm_`` on the device, and the clip coefficient
the update kernels multiply each grad by (NOTE: [grad norm] in
csrc/grad_norm_math.h).

``clip_grad_norm_(params, max_norm, norm_type)`` then ``opt.step()`` reads the
grads three times and writes them once (norm, then ``g *= coef``, then the
step). Here one op reads them for the norm and the update reads them again,
multiplies by the coefficient as it loads them and leaves ``p.grad`` as it
was: unclipped.

One op returns ``partial``, the sum over grads of ``||g||_p ** p`` (each norm
rounded to its grad's dtype, as torch's per-grad norms are); a second one
computes the rest from that float64 number on the device, rounding as
``clip_grad_norm_``'s tensor ops round (into preallocated 0-dim tensors:
nothing syncs, nothing is allocated after the first step):

    total = partial ** (1/p)                     rounded to the grads' promoted dtype
    coef  = clamp(reciprocal(total + 1e-6) * max_norm, max=1)

DTensor grads (FSDP2, 1-D mesh, sharded): each rank's shards give a part of
``partial``; one all-reduce of that 0-dim tensor (a sum; a max for p = inf)
makes it global. Plain grads beside them are full on every rank (DDP) and
are not reduced.
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional

import torch

from . import _C, _ops
from .validation import is_dtensor, is_real

__all__ = ["GradClipping", "check_grad_clipping_arguments"]


def check_grad_clipping_arguments(max_grad_norm, grad_norm_type, owner: str) -> None:
    """``max_grad_norm``: None (no clipping) or a real number > 0 (inf: the
    norm is computed and finite grads are left as they are);
    ``grad_norm_type``: a real p > 0, or inf."""
    if max_grad_norm is not None:
        if not is_real(max_grad_norm):
            raise TypeError(f"{owner}: max_grad_norm must be None or a real number > 0, got {max_grad_norm!r}")
        if not max_grad_norm > 0:  # also refuses NaN
            raise ValueError(f"{owner}: max_grad_norm must be > 0 (or None for no clipping), got {max_grad_norm!r}")
    if not is_real(grad_norm_type):
        raise TypeError(f"{owner}: grad_norm_type must be a real number p > 0 or float('inf'), "
                        f"got {grad_norm_type!r}")
    if not grad_norm_type > 0:  # also refuses NaN and -inf
        raise ValueError(f"{owner}: grad_norm_type must be p > 0 or float('inf'), got {grad_norm_type!r} "
                         "(torch's 0-'norm' and negative orders are not supported)")


class GradClipping:
    """One optimizer's clipping: its settings and the 0-dim device tensors
    each step writes (``total_norm``, ``clip_coef``)."""

    def __init__(self, max_norm: float, norm_type: float, owner: str):
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.owner = owner
        self.total_norm: Optional[torch.Tensor] = None
        self.clip_coef: Optional[torch.Tensor] = None
        self._partial: Optional[torch.Tensor] = None  # float64: the op's output, then the global sum
        # float64: a second set of grads (plain ones beside DTensor ones, Python buckets beside native ones)
        self._replicated_partial: Optional[torch.Tensor] = None

    def clip_coefficient(self, buckets: List, grad_scale: Optional[torch.Tensor],
                         device: torch.device) -> torch.Tensor:
        """This step's clip coefficient from the grads of ``buckets`` (all
        param groups), unscaled by ``grad_scale`` first. Raises before
        anything changes on a DTensor layout it cannot reduce."""
        # clip_grad_norm_ stacks the per-grad norms: their promoted dtype (float32 without grads)
        dtype = functools.reduce(torch.promote_types, {b.params[0].dtype for b in buckets}) if buckets \
            else torch.float32
        self._buffers(dtype, device)
        partial, p = self._partial, self.norm_type
        native = list({id(b.native): b.native for b in buckets if b.native is not None}.values())
        if native:
            _C.grad_norm_partial_of_plans(native, p, grad_scale, partial)
            rest = [g for b in buckets if b.native is None for g in b.grads]
            if rest:  # buckets kept in Python beside native ones (FusedMuon's matrices)
                _ops.grad_norm_partial_(rest, p, grad_scale, self._replicated_partial)
                self._combine_partials()
        else:
            self._python_partial(buckets, grad_scale)
        _ops.clip_coefficient_(partial, p, self.max_norm, self.total_norm, self.clip_coef)
        return self.clip_coef

    def _buffers(self, dtype: torch.dtype, device: torch.device) -> None:
        if self.total_norm is None or self.total_norm.dtype != dtype or self.total_norm.device != device:
            self.total_norm = torch.zeros((), dtype=dtype, device=device)
            self.clip_coef = torch.ones((), dtype=dtype, device=device)
        if self._partial is None or self._partial.device != device:
            self._partial = torch.zeros((), dtype=torch.float64, device=device)
            self._replicated_partial = torch.zeros((), dtype=torch.float64, device=device)

    def _python_partial(self, buckets: List, grad_scale: Optional[torch.Tensor]) -> None:
        """The op on the Python lists (DTensor parameters, torch.compile)."""
        grads = [g for b in buckets for g in b.grads]
        sharded = [g for g in grads if is_dtensor(g)]
        if not sharded:
            _ops.grad_norm_partial_(grads, self.norm_type, grad_scale, self._partial)
            return
        group = self._shard_group(sharded)
        _ops.grad_norm_partial_([g.to_local() for g in sharded], self.norm_type, grad_scale, self._partial)
        torch.distributed.all_reduce(
            self._partial, op=torch.distributed.ReduceOp.MAX if math.isinf(self.norm_type)
            else torch.distributed.ReduceOp.SUM,
            group=group)
        replicated = [g for g in grads if not is_dtensor(g)]
        if replicated:
            _ops.grad_norm_partial_(replicated, self.norm_type, grad_scale, self._replicated_partial)
            self._combine_partials()

    def _combine_partials(self) -> None:
        """partial <- the max (p = inf) or the sum of partial and the second partial."""
        if math.isinf(self.norm_type):
            torch.maximum(self._partial, self._replicated_partial, out=self._partial)
        else:
            self._partial.add_(self._replicated_partial)

    def _shard_group(self, grads: List[torch.Tensor]):
        """The process group over which DTensor grads' shards are summed: one
        1-D mesh whose every grad is sharded (FSDP2's layout)."""
        from torch.distributed.tensor import Shard

        mesh = grads[0].device_mesh
        for g in grads:
            if g.device_mesh != mesh or mesh.ndim != 1 or not all(isinstance(pl, Shard) for pl in g.placements):
                raise ValueError(
                    f"{self.owner}: max_grad_norm supports DTensor grads sharded over one 1-D device mesh (FSDP2's "
                    f"fully_shard), got placements {g.placements} on {g.device_mesh}; clip with "
                    "torch.nn.utils.clip_grad_norm_ instead")
        return mesh.get_group()
