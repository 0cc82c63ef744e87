"""Listeners (unix socket by default, TCP with an API key) and the uvicorn server loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..api.homes import resolve_home
from ..api.options import Options
from ..errors import ConfigError

SOCKET_NAME = "boxlite.sock"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(host: str | None, port: int | None, api_key: str | None, insecure_no_auth: bool) -> None:
    """TCP needs an API key, except ``insecure_no_auth`` on a loopback address."""
    if host is None and port is None:
        return
    if insecure_no_auth and api_key:
        raise ConfigError("pass either an API key or insecure_no_auth, not both")
    if not api_key and not insecure_no_auth:
        raise ConfigError("listening on TCP needs an API key (--api-key or BOXLITE_API_KEY)")
    if insecure_no_auth and not is_loopback(host or "127.0.0.1"):
        raise ConfigError(f"insecure_no_auth is only allowed on a loopback address, not {host!r}")


def unix_listener(path: Path) -> socket.socket:
    """A listening unix socket only its owner can connect to; a stale socket file is replaced."""
    if len(os.fsencode(path)) > 107:
        raise ConfigError(f"socket path is too long for a unix socket: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise ConfigError(f"a server is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class _DenialNoise(logging.Filter):
    """uvicorn's sans-I/O WebSocket protocol logs a bogus error after an app answers a handshake
    with an HTTP response (our 401); the client did receive the 401."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing handshake" not in record.getMessage()


def serve(
    home: str | None,
    socket_path: str | None,
    host: str | None,
    port: int | None,
    api_key: str | None,
    insecure_no_auth: bool,
    *,
    exit_on_stdin_eof: bool = False,
    log_level: str = "warning",
    mcp: bool = False,
    allow_host_paths: Sequence[str] = (),
    allow_any_host_path: bool = False,
    allow_registries: Sequence[str] = (),
    allow_any_registry: bool = False,
    allow_box_lan: bool = False,
) -> None:
    """Serve the runtime of ``home`` until SIGINT/SIGTERM.

    Listens on ``socket_path`` (default ``<home>/boxlite.sock``) unless only TCP is asked for;
    TCP (``host``/``port``) requires ``api_key`` (or ``BOXLITE_API_KEY``) unless
    ``insecure_no_auth`` on loopback. A key, when given, is required on every listener.
    ``exit_on_stdin_eof``: stop when stdin closes (a parent process that spawned us died).
    ``mcp``: also serve MCP (streamable HTTP) at ``/mcp`` (needs the ``mcp`` package).
    ``allow_host_paths``: the directories TCP clients may name as volumes or ``rootfs_path``
    (each exactly); ``allow_any_host_path``: any path; clients on the unix socket name any.
    ``allow_registries``: hosts at non-public addresses that pulls for TCP clients may reach;
    ``allow_any_registry``: any address; pulls for unix-socket clients reach any.
    ``allow_box_lan``: boxes of TCP clients may reach private networks (else public addresses only).
    """
    import uvicorn

    from .app import create_app

    api_key = api_key or os.environ.get("BOXLITE_API_KEY") or None
    check_auth(host, port, api_key, insecure_no_auth)
    home_root = resolve_home(home)
    unix_path = None
    if socket_path is not None or (host is None and port is None):
        unix_path = Path(socket_path) if socket_path else home_root / SOCKET_NAME
    app = create_app(
        Options(home_dir=str(home_root)), api_key, loopback_guard=insecure_no_auth, mcp=mcp,
        allow_host_paths=allow_host_paths, allow_any_host_path=allow_any_host_path,
        allow_registries=allow_registries, allow_any_registry=allow_any_registry, allow_box_lan=allow_box_lan,
        unix_socket=None if unix_path is None else str(unix_path),
    )  # fmt: skip
    config = uvicorn.Config(app, ws="websockets-sansio", log_level=log_level, lifespan="on", ws_max_size=1 << 21)
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_DenialNoise())
    sockets: list[socket.socket] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn stops gracefully on SIGINT/SIGTERM, restores the previous handlers and then
        # re-raises the signal: make that a no-op so that the cleanup below runs and we exit 0.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        urls = []
        if unix_path is not None:
            sockets.append(unix_listener(unix_path))
            urls.append(f"unix://{unix_path}")
        if host is not None or port is not None:
            sockets.append(tcp_listener(host or "127.0.0.1", port or 8000))
            addr = sockets[-1].getsockname()
            urls.append(f"http://{addr[0]}:{addr[1]}")
        print(f"boxlite: serving {', '.join(urls)}", file=sys.stderr, flush=True)
        asyncio.run(_run(server, sockets, exit_on_stdin_eof))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        if sockets and unix_path is not None:
            with contextlib.suppress(OSError):
                unix_path.unlink()


async def _run(server: object, sockets: list[socket.socket], exit_on_stdin_eof: bool) -> None:
    import uvicorn

    assert isinstance(server, uvicorn.Server)
    if exit_on_stdin_eof:
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), _on_stdin, server)
    await server.serve(sockets=sockets)


def _on_stdin(server: object) -> None:
    data = os.read(sys.stdin.fileno(), 4096)
    if not data:
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        server.should_exit = True  # type: ignore[attr-defined]
