"""A fault-injecting HTTP proxy to put in front of a test registry.

Faults match a request path regex and fire ``times`` times (``-1``: always):

* ``status``   answer ``status`` (429 gets ``Retry-After: 0``) without asking upstream;
* ``reset``    close the connection with a TCP RST before answering;
* ``truncate`` send upstream's headers (full Content-Length), half the body, then EOF;
* ``corrupt``  send upstream's answer with one byte flipped in the middle of the body;
* ``norange``  drop the request's Range header (upstream answers 200 with the full body);
* ``slow``     wait ``status`` milliseconds, then forward normally;
* ``redirect`` answer 307 with ``Location`` pointing straight at upstream (another origin).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "proxy-connection", "upgrade", "te"}


@dataclass
class Fault:
    kind: str
    path: str = ""
    status: int = 500
    times: int = 1


@dataclass
class Hit:
    method: str
    path: str
    status: int
    range: str | None
    fault: str | None


class FaultProxy:
    """Forwards to ``upstream`` (``host:port``); ``host`` is where clients connect."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, kind: str, path: str = "", status: int = 500, times: int = 1) -> Fault:
        fault = Fault(kind, path, status, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.hits.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _take(self, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times != 0 and re.search(f.path, path):
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None

    def hits_for(self, pattern: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if re.search(pattern, h.path)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _record(self, status: int, fault: str | None) -> None:
                with proxy.lock:
                    proxy.hits.append(Hit(self.command, self.path, status, self.headers.get("Range"), fault))

            def _rst(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                try:
                    self.wfile.flush()
                except OSError:
                    pass
                self.connection.close()

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

            def _handle(self) -> None:
                fault = proxy._take(self.path)
                kind = fault.kind if fault else None
                if fault and kind == "status":
                    body = b'{"errors":[{"code":"INJECTED"}]}'
                    self.send_response(fault.status)
                    if fault.status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    self._record(fault.status, kind)
                    return
                if fault and kind == "slow":
                    time.sleep(fault.status / 1000)
                if kind == "redirect":
                    self.send_response(307)
                    self.send_header("Location", f"http://{proxy.upstream}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._record(307, kind)
                    return
                if kind == "reset":
                    self._record(0, kind)
                    self._rst()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                req_body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if kind == "norange":
                    headers.pop("Range", None)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=req_body, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    status, out_headers = resp.status, resp.getheaders()
                finally:
                    conn.close()
                self.send_response(status)
                for k, v in out_headers:
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._record(status, kind)
                if self.command == "HEAD":
                    return
                if kind == "truncate" and len(body) > 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_WR)  # clean EOF mid-body
                    return
                if kind == "corrupt" and body:
                    i = len(body) // 2
                    body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
