"""The ``connect`` builtin: one TCP connection to a service inside the box, as an execution.

``box.network.tunnel(port)`` runs it (docs/network.md, "Tunnels"). It runs confined like a
user process, inside the box's network namespace (or the VM), and connects to the port on
the box's own loopback only: the address is not the caller's to choose, so a tunnel never
reaches anything the box itself cannot. Once connected it says ``connected`` on stderr, then
copies stdin to the socket and the socket to stdout (the execution's credit is the flow
control), half-closing each direction at its end. Stdlib only; imported before the chroot.
Its thread comes from ``_thread``: importing ``threading`` in the zygote would register an at-fork
hook that costs every box process forked from it ~0.4 MiB of private memory (docs/performance.md).
"""

from __future__ import annotations

import _thread
import os
import socket

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

CONNECT_TIMEOUT = 10.0
CHUNK = 1 << 16
READY = b"connected\n"


def _port(args: dict[str, Any]) -> int:
    port = args.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"bad port {port!r}")
    return port


def _dial(port: int) -> socket.socket:
    """The service on the box's loopback, IPv4 first (services bound to 0.0.0.0 answer there)."""
    error: OSError | None = None
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((addr, port))
        except OSError as e:
            sock.close()
            error = e
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    assert error is not None
    raise error


def _inbound(sock: socket.socket) -> None:
    """stdin (the host's bytes) -> the service; end of stdin: half-close."""
    try:
        while data := os.read(0, CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def connect(spec: Any) -> int:
    port = _port(spec.builtin_args)
    sock = _dial(port)
    os.write(2, READY)
    inbound_done = _thread.allocate_lock()
    inbound_done.acquire()

    def inbound() -> None:
        try:
            _inbound(sock)
        finally:
            inbound_done.release()

    _thread.start_new_thread(inbound, ())
    try:
        while data := sock.recv(CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        pass
    os.close(1)  # the host sees the end of the service's stream; its own may still flow
    inbound_done.acquire()  # the inbound copy has half-closed the socket
    sock.close()
    return 0


BUILTINS = {"connect": connect}
