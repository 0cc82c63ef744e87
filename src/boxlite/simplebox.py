"""BoxLite's ``boxlite.simplebox``: ``SimpleBox`` (tunnels and ``NetworkHandle`` come with issue 12)."""

from .api.later import BoxTunnel, NetworkHandle
from .api.simplebox import SimpleBox

__all__ = ["BoxTunnel", "NetworkHandle", "SimpleBox"]
