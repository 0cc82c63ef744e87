"""A plain HTTP server for network tests' private "internet": ``GET /<n>`` answers n MiB of body."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path


def serve(addr: str, port: int, log: Path) -> None:
    """Serve on ``addr:port`` in the background; ``GET /<n>[?query]`` gets n MiB of body (0 for
    any other path), and every request is logged to ``log`` as a JSON line
    ``{"server": "addr:port", "request": ...}``."""
    srv = socket.create_server((addr, port), family=socket.AF_INET6 if ":" in addr else socket.AF_INET)
    lock = threading.Lock()

    def one(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with lock, open(log, "a") as f:
                    f.write(json.dumps({"server": f"{addr}:{port}", "request": data.decode(errors="replace")}) + "\n")
                path = data.split(b" ")[1][1:].split(b"?")[0]
                n = int(path) << 20 if path.isdigit() else 0
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % n)
                block = b"x" * 65536
                for _ in range(n // len(block)):
                    conn.sendall(block)
            except (OSError, ValueError, IndexError):
                pass

    def loop() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
