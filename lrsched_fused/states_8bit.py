"""8-bit optimizer states (``state_dtype="8bit"``, NOTE: [8-bit states] in
csrc/states_8bit.h): which parameters are coded, the maps, and the
conversions a load needs (float states coded once, codes read back into
float states, bitsandbytes' 8-bit state_dicts). The step itself runs in the
kernels; nothing here is on the hot path.

A coded parameter's state holds, per coded state ``key`` (Adam's ``exp_avg``
and ``exp_avg_sq``, SGD's ``momentum_buffer``, Lion's ``exp_avg``):
``key`` the uint8 codes (shaped like the parameter), ``key + "_absmax"``
one float32 absmax per block of ``BLOCK`` elements, and ``key + "_qmap"``
the 256 values a code stands for (bitsandbytes' dynamic map, signed for the
first moment and the momentum, unsigned for the second moment; one tensor
shared by every parameter, never written).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from . import _C

__all__ = ["BLOCK", "MIN_ELEMENTS", "dynamic_map", "quantize", "dequantize", "coded_keys", "from_bitsandbytes"]

BLOCK: int = _C.STATES_8BIT["block"]
MIN_ELEMENTS: int = _C.STATES_8BIT["min_elements"]  # smaller tensors keep float32 states
_MAPS = {"signed": _C.STATES_8BIT["signed_map"], "unsigned": _C.STATES_8BIT["unsigned_map"]}
_map_tensors: Dict[tuple, torch.Tensor] = {}
# bitsandbytes' CPU quantizer writes -1.0 into the first value of the map it is
# given (its binary search wants the range to start at -1): a map saved from
# a CPU run differs from create_dynamic_map there. And create_dynamic_map
# builds its map with torch.linspace, whose float32 values depend on the
# CPU kernel torch picks: with AVX2 or AVX-512 they are the maps above, bit
# for bit; with the baseline ISA (ATEN_CPU_CAPABILITY=default) 42 signed and
# 31 unsigned values are one or two ulps off. A saved map within 2 ulps is
# the same scheme (a code then reads at most 2 ulps differently).
_BNB_CPU_FIRST = -1.0
_BNB_WRAPPED = "__bnb_optimizer_quant_state__"  # bitsandbytes' state_dict nests its quantization tensors here


def dynamic_map(kind: str, device: torch.device) -> torch.Tensor:
    """The map of ``kind`` ("signed" or "unsigned") on ``device``: one
    shared tensor per device (kept by the states, never written)."""
    key = (kind, torch.device(device))
    if key not in _map_tensors:
        _map_tensors[key] = torch.tensor(_MAPS[kind], dtype=torch.float32, device=device)
    return _map_tensors[key]


def coded_keys(update_op: str) -> Dict[str, str]:
    """The states update op ``update_op`` codes with 8-bit states, each with its map kind."""
    coded = _C.UPDATE_OPS[update_op]["coded"]
    return {key: kind for key, kind in coded.items() if kind in _MAPS}


def num_blocks(numel: int) -> int:
    return -(-numel // BLOCK)


@torch.no_grad()
def quantize(values: torch.Tensor, kind: str):
    """``values`` coded as the kernels code them (nearest_code of value *
    (1 / the block's absmax)), in torch ops on their device: (codes shaped
    like ``values``, float32 absmax per block)."""
    flat = values.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    blocks = num_blocks(n)
    padded = flat.new_zeros(blocks * BLOCK)
    padded[:n] = flat
    padded = padded.view(blocks, BLOCK)
    absmax = padded.abs().amax(dim=1)
    inverse = torch.where(absmax > 0, 1 / absmax, torch.zeros_like(absmax))  # inverse_scale
    x = padded * inverse[:, None]
    x = torch.where(x == x, x, torch.zeros_like(x))
    code_values = dynamic_map(kind, values.device)
    bounded = torch.cat([code_values, code_values.new_full((1,), math.inf)])
    j = (torch.searchsorted(code_values, x, right=True) - 1).clamp(min=0)
    lower, upper = code_values[j], bounded[j + 1]
    up = (x >= upper) | ((x >= lower) & ((x - upper).abs() < (x - lower).abs()))
    codes = (j + up.long()).to(torch.uint8).reshape(-1)[:n].reshape(values.shape)
    return codes, absmax


@torch.no_grad()
def dequantize(codes: torch.Tensor, absmax: torch.Tensor, kind: str) -> torch.Tensor:
    """The float32 values of ``codes``: map[code] * the block's absmax."""
    n = codes.numel()
    code_values = dynamic_map(kind, codes.device)
    scale = absmax.to(torch.float32).repeat_interleave(BLOCK)[:n]
    return (code_values[codes.reshape(-1).long()] * scale).reshape(codes.shape)


def check_map(saved: Any, kind: str, what: str, owner: str) -> None:
    """A saved map must be ``kind``'s (bitsandbytes' CPU form accepted, see
    _BNB_CPU_FIRST): codes made with another map mean other values."""
    expected = torch.tensor(_MAPS[kind], dtype=torch.float32)
    ok = isinstance(saved, torch.Tensor) and saved.shape == expected.shape and saved.is_floating_point()
    if ok:
        saved = saved.detach().to("cpu", torch.float32)
        close = (saved.view(torch.int32).long() - expected.view(torch.int32).long()).abs() <= 2  # ulps
        close[0] |= bool(saved[0] == _BNB_CPU_FIRST)
        ok = bool(close.all())
    if not ok:
        raise ValueError(f"{owner}: {what} is not the {kind} dynamic map these 8-bit states are coded with "
                         f"(bitsandbytes' create_dynamic_map(signed={kind == 'signed'})): codes made with another "
                         "map stand for other values, so they cannot be loaded")


def check_saved(key: str, value: Any, p: torch.Tensor, coded: Dict[str, str], index: int, owner: str) -> bool:
    """Checks a saved ``*_absmax`` or ``*_qmap`` entry of a coded state; False
    for any other key (checked as a state shaped like the parameter)."""
    for base, kind in coded.items():
        if key == base + "_qmap":
            check_map(value, kind, f"the state_dict's {key} of parameter {index}", owner)
            return True
        if key == base + "_absmax":
            blocks = num_blocks(p.numel())
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (blocks,):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{owner}: the state_dict's {key} of parameter {index} has shape {got}; a "
                                 f"parameter of {p.numel()} elements has {blocks} blocks of {BLOCK}")
            return True
    return False


def from_bitsandbytes(state: Dict[str, Any], coded: Dict[str, str], index: int, owner: str) -> Dict[str, Any]:
    """One parameter's state saved by a bitsandbytes 8-bit optimizer
    (``state1``/``state2``, ``absmax1``/``absmax2``, ``qmap1``/``qmap2``), in
    this optimizer's names; bitsandbytes' states come in the order of
    ``coded`` (Adam: exp_avg, exp_avg_sq). Its blockwise 8-bit scheme is ours
    (blocks of 256, the dynamic maps, float32 absmax); anything else (its
    non-blockwise 8-bit states, another map) is refused."""
    state = dict(state)
    state.update(state.pop(_BNB_WRAPPED, {}) or {})
    result: Dict[str, Any] = {}
    if "step" in state:
        result["step"] = state["step"]
    for number, (key, kind) in enumerate(coded.items(), start=1):
        value = state.get(f"state{number}")
        if value is None:
            continue
        result[key] = value
        if value.dtype == torch.uint8:
            if f"absmax{number}" not in state:
                raise ValueError(f"{owner}: parameter {index}'s bitsandbytes state{number} is 8-bit without "
                                 f"absmax{number}: not the blockwise scheme (block_wise=False keeps one max per "
                                 "tensor), which these states do not use")
            check_map(state.get(f"qmap{number}"), kind, f"parameter {index}'s bitsandbytes qmap{number}", owner)
            result[key + "_absmax"] = state[f"absmax{number}"]
            result[key + "_qmap"] = state[f"qmap{number}"]
    return result


def is_bitsandbytes_state(state: Optional[Dict[str, Any]]) -> bool:
    return isinstance(state, dict) and ("state1" in state or _BNB_WRAPPED in state)
