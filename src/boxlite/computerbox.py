"""BoxLite's ``boxlite.computerbox``: ``ComputerBox``, a desktop driven by screenshots, mouse and keyboard."""

from .api.computerbox import ComputerBox, DesktopError, DesktopNotReadyError, ScreenshotTooLargeError

__all__ = ["ComputerBox", "DesktopError", "DesktopNotReadyError", "ScreenshotTooLargeError"]
