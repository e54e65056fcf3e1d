"""griffe extension for the API pages: the docstrings are written for Python's
help() with a few reStructuredText math roles (``:math:`x```, ``.. math::``
blocks, as optax and torch write them); Markdown shows those as code. This
drops the role markers and keeps the formulas as code, so a page reads
``\\eta \\leftarrow \\gamma\\,\\eta`` instead of ``:math:`...```."""
import re

import griffe

_ROLE = re.compile(r":math:(`[^`]*`)")
_DIRECTIVE = re.compile(r"^[ \t]*\.\. math::[ \t]*\n", re.MULTILINE)


class ReSTMath(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _DIRECTIVE.sub("", _ROLE.sub(r"\1", obj.docstring.value))
