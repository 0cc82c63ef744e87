"""Limits for what a caller that is not the host's user makes BoxLite reach: for applications
that serve BoxLite to others (``boxlite serve`` uses it for its TCP clients).

Inside ``with untrusted_caller(...)`` (and in tasks started there) pulls connect only to public
addresses and the listed registries (images/registry_access.py), and boxes created, cloned,
forked or imported get ``public_only`` network unless ``box_lan`` (runtime/reach.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ..images.registry_access import RegistryAccess, restricted
from ..runtime.reach import public_only_boxes


@contextmanager
def untrusted_caller(registries: RegistryAccess | None, box_lan: bool = False) -> Iterator[None]:
    """``registries``: where pulls may connect (None: anywhere); ``box_lan``: boxes may reach
    private networks."""
    with ExitStack() as stack:
        if registries is not None:
            stack.enter_context(restricted(registries))
        if not box_lan:
            stack.enter_context(public_only_boxes())
        yield
