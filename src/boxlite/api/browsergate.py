"""The CDP gate: runs *inside* a BrowserBox (``python3 browsergate.py LISTEN_PORT CDP_PORT CDP_PATH``).

Chromium's DevTools server answers anyone who reaches its port: /json/version hands out the
browser's websocket path and with it full control (read every page, run code in it, read its
files). Chromium listens on the box's loopback only; this gate is what the published port
reaches. It forwards a connection only when its first request is ``GET <the browser's
websocket path>``, a random id chromium writes to ``DevToolsActivePort``: the URL that
``BrowserBox.endpoint()`` returns is the capability, and a process on the host that merely
finds the port gets 403. Every request head is bounded in size and time, connections in number.
It runs as ``nobody``, not as Chromium's user, so a compromised renderer cannot kill it and put
its own listener on the published port. Stdlib only: sent to the box, run by its python3.
"""

from __future__ import annotations

import hmac
import socket
import sys
import threading

MAX_HEAD = 8192
HEAD_DEADLINE = 10.0
MAX_CONNECTIONS = 64
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 52\r\n\r\n"
    b"only the websocket URL of BrowserBox.endpoint() here"
)


def read_head(conn: socket.socket) -> bytes:
    """The request head (and whatever followed it in the same reads); OSError past the limits."""
    conn.settimeout(HEAD_DEADLINE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk or len(head) + len(chunk) > MAX_HEAD:
            raise OSError("request head too large or cut short")
        head += chunk
    return head


def allowed(head: bytes, path: bytes) -> bool:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return len(parts) == 3 and parts[0] == b"GET" and hmac.compare_digest(parts[1], path)


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(conn: socket.socket, port: int, path: bytes, slots: threading.Semaphore) -> None:
    upstream = None
    try:
        head = read_head(conn)
        if not allowed(head, path):
            conn.sendall(FORBIDDEN)
            return
        upstream = socket.create_connection(("127.0.0.1", port), timeout=HEAD_DEADLINE)
        upstream.settimeout(None)
        conn.settimeout(None)
        upstream.sendall(head)
        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join()
    except (OSError, ValueError):
        pass
    finally:
        conn.close()
        if upstream is not None:
            upstream.close()
        slots.release()


def main(argv: list[str]) -> None:
    listen_port, port, path = int(argv[1]), int(argv[2]), argv[3].encode()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", listen_port))
    srv.listen(16)
    print("gate listening", flush=True)
    slots = threading.Semaphore(MAX_CONNECTIONS)
    while True:
        conn, _ = srv.accept()
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        threading.Thread(target=handle, args=(conn, port, path, slots), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv)
