"""BoxLite's ``boxlite.computerbox``: ``ComputerBox`` raises UnsupportedOptionError until issue 13."""

from .api.simplebox import ComputerBox

__all__ = ["ComputerBox"]
