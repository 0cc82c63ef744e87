"""BoxLite's ``boxlite.simplebox``: ``SimpleBox`` with ``NetworkHandle`` and ``BoxTunnel`` (api/network.py)."""

from .api.network import BoxTunnel, NetworkHandle
from .api.simplebox import SimpleBox

__all__ = ["BoxTunnel", "NetworkHandle", "SimpleBox"]
