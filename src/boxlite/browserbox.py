"""BoxLite's ``boxlite.browserbox``: ``BrowserBox`` (headless Chromium in a box, api/browserbox.py)."""

from .api.browserbox import BrowserBox
from .api.later import BrowserBoxOptions

__all__ = ["BrowserBox", "BrowserBoxOptions"]
