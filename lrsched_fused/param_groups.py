"""``ParamGroup``: a param group dict that tells its optimizer when a value
is assigned, so that an edited hyperparameter reaches the device at once;
an optimizer's groups become ParamGroups once one of its steps was
captured in a CUDA graph (NOTE: [hyperparameters on the device] in
device_schedule.py)."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict

__all__ = ["ParamGroup"]


class ParamGroup(dict):
    """One of ``optimizer.param_groups``: a plain dict for every reader
    (saved, copied and pickled as one), whose assignments are first shown to
    ``on_edit(group, key, value)``, a method of the optimizer held weakly. It
    may raise, and then nothing is assigned."""

    __slots__ = ("_on_edit",)

    def __init__(self, items: Dict[str, Any], on_edit: Callable[["ParamGroup", str, Any], None]):
        super().__init__(items)
        self._on_edit = weakref.WeakMethod(on_edit)

    def __setitem__(self, key, value):
        on_edit = self._on_edit()
        if on_edit is not None:
            on_edit(self, key, value)
        super().__setitem__(key, value)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other):
        self.update(other)
        return self

    def __reduce__(self):
        return dict, (dict(self),)
