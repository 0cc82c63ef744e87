"""BoxLite's ``boxlite.browserbox``: ``BrowserBox`` raises UnsupportedOptionError until issue 13."""

from .api.later import BrowserBoxOptions
from .api.simplebox import BrowserBox

__all__ = ["BrowserBox", "BrowserBoxOptions"]
