"""BoxLite's ``boxlite.interactivebox``: ``InteractiveBox``, a shell wired to this terminal."""

from .api.interactive import InteractiveBox

__all__ = ["InteractiveBox"]
