"""BoxLite's ``boxlite.codebox``: ``CodeBox``, a box that runs Python code."""

from .api.simplebox import CodeBox

__all__ = ["CodeBox"]
