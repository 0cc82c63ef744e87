"""Which server host paths a REST client may name: a volume's host path and ``rootfs_path``.

An API key is not the server's host account: a volume of ``/`` mounted read-write (box root writes
as the directory's owner) or ``/etc`` as a box's root file system would hand a client the host.
Over TCP a client may name only the directories the operator listed (``boxlite serve
--allow-host-path DIR``; none by default), each exactly, never a path inside one: a box with a
writable volume of a listed directory could otherwise turn ``DIR/sub``, checked as a directory
when another box was created, into a symlink to ``/`` before that box starts. Listed directories
may not nest, for the same reason. ``--allow-any-host-path`` trusts every client with the host
(BoxLite's behaviour). Over the server's unix socket (created 0700: only the server's own user
connects) the client could run the library itself, so it names any path. Named volumes
(``vol-…``) and images are not host paths and are always allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from fastapi import Request

from ..api.options import BoxOptions, parse_volume
from ..errors import ConfigError, PermissionDeniedError
from .trust import over_unix_socket


class HostPaths:
    """The directories TCP clients may name (resolved once, at server start; ``any_path``: every
    path), and the server's own unix socket (``None``: it has none), whose clients name any path."""

    def __init__(self, allowed: Iterable[str] = (), any_path: bool = False, unix_socket: str | None = None) -> None:
        self.allowed = _listed(allowed)
        self.any_path = any_path
        self.unix_socket = unix_socket

    def vet(self, options: BoxOptions, request: Request) -> BoxOptions:
        """``options`` with each host path replaced by the listed directory it names, or
        PermissionDeniedError (403) for any other path; unchanged for a trusted client."""
        if self.any_path or over_unix_socket(request.scope, self.unix_socket):
            return options
        rootfs = None if options.rootfs_path is None else self._listed_dir(str(options.rootfs_path), "rootfs_path")
        return replace(options, rootfs_path=rootfs, volumes=[self._volume(v) for v in options.volumes])

    def _volume(self, entry: Any) -> Any:
        mount = parse_volume(entry)  # ConfigError for a malformed entry, as a local create would raise
        if mount.volume_id is not None:
            return entry
        return (self._listed_dir(_given_host(entry), f"volume {mount.guest_path}"), mount.guest_path, mount.read_only)

    def _listed_dir(self, path: str, what: str) -> str:
        """The listed directory ``path`` names (through symlinks, resolved now: re-pointing a
        link later does not move the box), or PermissionDeniedError; the same answer whether or
        not an unlisted path exists."""
        if not path.startswith("/"):
            raise ConfigError(f"{what}: host path {path!r} must be absolute")
        if not self.allowed:
            raise PermissionDeniedError(
                f"{what}: this server lets its clients name no host path (its operator lists directories "
                "with --allow-host-path); use an image or a named volume"
            )
        real = os.path.realpath(path)
        if real not in self.allowed:
            raise PermissionDeniedError(
                f"{what}: host path {path!r} is not one of the directories this server allows "
                "(only those exactly, not paths inside them)"
            )
        return real


def _given_host(entry: Any) -> str:
    """The host path as the client wrote it, in any of parse_volume's forms (already validated;
    parse_volume itself makes a relative path absolute in the server's working directory)."""
    if isinstance(entry, str):
        return entry.split(":")[0]
    if isinstance(entry, Mapping):
        return str(entry.get("host_path", entry.get("host")))
    return str(entry[0])


def _listed(paths: Iterable[str]) -> frozenset[str]:
    """The real paths of the listed directories; each must exist (a typo must not fail late) and
    none may lie inside another (a writable volume of the outer one could replace the inner)."""
    real = []
    for path in paths:
        resolved = os.path.realpath(path)
        if not os.path.isdir(resolved):
            raise ConfigError(f"--allow-host-path {path!r} is not a directory")
        if resolved == "/":
            raise ConfigError("--allow-host-path / would give clients the whole host: use --allow-any-host-path")
        real.append(resolved)
    for a in real:
        for b in real:
            if a != b and b.startswith(a + "/"):
                raise ConfigError(f"--allow-host-path {b!r} lies inside {a!r}: list directories that do not nest")
    return frozenset(real)
