"""Moved to ``lrsched_fused.testing.torch_reference`` (the test oracle is not
part of the training API); this alias stays for code that imported it here."""
import warnings

from .testing.torch_reference import *  # noqa: F401,F403
from .testing.torch_reference import __all__  # noqa: F401

warnings.warn("lrsched_fused.torch_reference moved to lrsched_fused.testing.torch_reference",
              DeprecationWarning, stacklevel=2)
