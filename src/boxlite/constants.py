"""BoxLite's ``boxlite.constants``, with this runtime's values where they differ (docs/compat.md).

The defaults are the ones boxes really get here; the ComputerBox/BrowserBox/SkillBox values are
BoxLite's, kept for code that reads them. Those boxes exist here (docs/computerbox.md,
docs/browserbox.md, docs/skillbox.md), but their images are built from Debian packages rather
than pulled (``COMPUTERBOX_IMAGE``/``SKILLBOX_IMAGE`` name images they do not use), ComputerBox
publishes noVNC on a host port the OS picks and SkillBox has no GUI (the ``*_GUI_HTTP(S)_PORT``
values are not used)."""

from .api.options import DEFAULT_MEMORY_MIB

DEFAULT_CPUS = 1
"""BoxLite's default CPU count (what a box asking for none gets here: ``cpus`` in docs/compat.md)."""

COMPUTERBOX_CPUS = 2
COMPUTERBOX_MEMORY_MIB = 2048
COMPUTERBOX_IMAGE = "lscr.io/linuxserver/webtop:ubuntu-xfce"
COMPUTERBOX_DISPLAY_NUMBER = ":1"
COMPUTERBOX_DISPLAY_WIDTH = 1024
COMPUTERBOX_DISPLAY_HEIGHT = 768
COMPUTERBOX_GUI_HTTP_PORT = 3000
COMPUTERBOX_GUI_HTTPS_PORT = 3001
BROWSERBOX_PORT = 3000
SKILLBOX_IMAGE = "ghcr.io/boxlite-ai/boxlite-skillbox:0.1.0"
SKILLBOX_MEMORY_MIB = 4096
SKILLBOX_DISK_SIZE_GB = 10
SKILLBOX_GUI_HTTP_PORT = 3000
SKILLBOX_GUI_HTTPS_PORT = 3001
DESKTOP_READY_TIMEOUT = 60
DESKTOP_READY_RETRY_DELAY = 0.5

GUEST_IP = "10.0.2.15"
"""The box's address on the VM engine's user-mode network (BoxLite's is 192.168.127.2; the
namespace engine's address differs too: address boxes by published ports, not by IP)."""

__all__ = [
    "BROWSERBOX_PORT",
    "COMPUTERBOX_CPUS",
    "COMPUTERBOX_DISPLAY_HEIGHT",
    "COMPUTERBOX_DISPLAY_NUMBER",
    "COMPUTERBOX_DISPLAY_WIDTH",
    "COMPUTERBOX_GUI_HTTPS_PORT",
    "COMPUTERBOX_GUI_HTTP_PORT",
    "COMPUTERBOX_IMAGE",
    "COMPUTERBOX_MEMORY_MIB",
    "DEFAULT_CPUS",
    "DEFAULT_MEMORY_MIB",
    "DESKTOP_READY_RETRY_DELAY",
    "DESKTOP_READY_TIMEOUT",
    "GUEST_IP",
    "SKILLBOX_DISK_SIZE_GB",
    "SKILLBOX_GUI_HTTPS_PORT",
    "SKILLBOX_GUI_HTTP_PORT",
    "SKILLBOX_IMAGE",
    "SKILLBOX_MEMORY_MIB",
]
