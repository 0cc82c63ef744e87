"""BoxLite's ``boxlite.exec``: the result of a finished command."""

from .api.results import ExecResult

__all__ = ["ExecResult"]
