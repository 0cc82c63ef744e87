"""The secret proxy of one box: ``python3 -I -S secretproxy.py CONFIG.json``.

A host process (stdlib only, like :mod:`.dnsproxy`) that the host's nftables sends the box
helper's outbound TCP to ports 80 and 443 to (``redirect``, matched by the box's helper group).
The box holds only placeholders (``<BOXLITE_SECRET:name>``); the real values live in this
process and its 0600 config file on the host, never in the box.

Per connection it looks at what the box sends first, without consuming it:

* TLS (a ClientHello): the SNI name. A name one of the secrets lists is intercepted: the
  proxy completes the handshake itself with a leaf certificate of the box's CA
  (:mod:`.boxca`, minted on the host at box start for the listed names only, its CA certificate
  in the box's trust store), and opens its own verified TLS connection to that name.
* plain HTTP: the request head's ``Host``. A listed name is intercepted the same way, without TLS.
* anything else, or a name no secret lists: passed through unchanged to the address the box
  asked for (``SO_ORIGINAL_DST``). The proxy's sockets are its own user's (the redirect skips
  that uid) in the box's group: the box's other rules (host guard, allow-list) still apply.

An intercepted connection carries one request: the proxy replaces the placeholders of the
secrets that list the name (request line, headers, and a ``Content-Length`` body up to
``MAX_BODY``), asks upstream to close after it, and relays the answer. The proxy connects to
the *name* (resolved by the host), never to the address the box chose, so a box cannot send a
listed SNI/Host to an address of its own and receive the value. A TLS ``Host`` other than its
SNI gets 421. Bodies larger than ``MAX_BODY`` and chunked bodies are passed on unchanged
(placeholders left as they are: the value never goes where it was not substituted on purpose).

Input is the box's: the request head is capped (``MAX_HEAD``, else 431), each phase has a
deadline (slow clients are cut), and at most ``MAX_CONNS`` connections are served at once
(beyond: closed at once). Prints ``ready <port>`` once it listens (``127.0.0.1:port`` and
``[::1]:port``: the host's redirect sends IPv4 flows to the one, IPv6 ones to the other) and its
rules are in place, then drops root (to the config's ``uid``; its leaf key is loaded by then).

Fast path (namespace boxes: the keeper passes ``--netns-fd=N``, an fd of the box's network
namespace): more listening sockets are made *inside* that namespace (IPv4 and IPv6, from a
thread that joined it; a socket stays in the namespace it was made in), and nat rules there
(:func:`fast_rules`) send the box's own TCP to ports 80/443 to them, so those flows never pass
through pasta (whose per-byte cost dominated: docs/network.md, "Cost"). Everything after
``accept`` is the same code: the original destination from that namespace's conntrack,
upstream connections from the host's namespace, the same limits. The host-side redirect stays
as the fallback for anything that still reaches pasta. The namespace belongs to the host's user
namespace (the box's user namespace is made later, inside it): box root cannot change its rules.
"""

from __future__ import annotations

import contextlib
import ctypes
import encodings.idna  # noqa: F401  (getaddrinfo's codec, loaded before root is dropped: the stdlib may be root-only)
import errno
import fcntl
import ipaddress
import json
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from typing import Any

MAX_HEAD = 64 * 1024
"""Request line + headers of an intercepted request (more: 431)."""
MAX_BODY = 1024 * 1024
"""Bodies with a Content-Length up to this are substituted; larger ones pass unchanged."""
MAX_HELLO = 16 * 1024
"""Bytes peeked for a TLS ClientHello / first HTTP line before deciding."""
PEEK_DEADLINE = 10.0
"""The box must have sent its ClientHello / request head within this (slowloris)."""
HEAD_DEADLINE = 30.0
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
SPLICE_CHUNK = 1 << 20  # bytes moved per splice(2) (and the pipe's size) in a pass-through relay
F_SETPIPE_SZ = 1031
"""A relayed connection with no byte either way for this long is closed."""
MAX_CONNS = 64
HOST_BIND_TRIES = 32
"""Ports tried for the host listeners' pair (one taken on ::1 only: the next)."""
PORT_MARK = "@PORT@"
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
PROXIED_PORTS = (80, 443)
"""The only destination ports the proxy serves (what both redirects send it)."""
IP_FREEBIND = 15
CLONE_NEWNET = 0x40000000
STATS_NAME = "secretproxy.stats"
"""Next to the config: the fast path's byte counts (:class:`FastStats`); read by ..net.proxystats
(this file runs as a script of its own: it imports no package module; a test keeps them equal)."""
STATS_INTERVAL = 2.0
FAST_TABLE = "boxlite_secrets"
"""The nat table made in a namespace box's own network namespace for the fast path."""
_HOST_RE = re.compile(r"^[a-z0-9_.-]{1,253}$")


# --- pure helpers (unit-tested) ------------------------------------------------------------


def host_matches(patterns: list[str], name: str) -> bool:
    """``name`` (lower-case, no port) is one of ``patterns`` (exact, or ``*.d``: any name below d)."""
    for p in patterns:
        if p.startswith("*."):
            if name.endswith(p[1:]) and len(name) > len(p) - 1:
                return True
        elif name == p:
            return True
    return False


def sni_of(hello: bytes) -> str | None:
    """The server name of a TLS ClientHello record (None: none, or not a ClientHello);
    ValueError if the bytes are not complete yet or malformed."""
    if len(hello) < 5 or hello[0] != 0x16:
        return None
    rec_len = struct.unpack(">H", hello[3:5])[0]
    body = hello[5 : 5 + rec_len]
    if len(body) < rec_len:
        raise ValueError("incomplete record")
    if len(body) < 4 or body[0] != 1:
        return None
    pos = 4 + 2 + 32
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack(">H", body[pos : pos + 2])[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    if pos + 2 > len(body):
        return None
    end = pos + 2 + struct.unpack(">H", body[pos : pos + 2])[0]
    pos += 2
    while pos + 4 <= min(end, len(body)):
        etype, elen = struct.unpack(">HH", body[pos : pos + 4])
        data = body[pos + 4 : pos + 4 + elen]
        if etype == 0 and len(data) >= 5 and data[2] == 0:
            nlen = struct.unpack(">H", data[3:5])[0]
            name = data[5 : 5 + nlen].decode("ascii", "replace").lower().rstrip(".")
            return name if _HOST_RE.match(name) else None
        pos += 4 + elen
    return None


def host_header(head: bytes) -> str | None:
    """The lower-case name of the ``Host`` header of a request head (port removed)."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == b"host":
            host = value.strip().decode("ascii", "replace").lower()
            if host.startswith("["):
                host = host[1 : host.find("]")] if "]" in host else host
            elif host.count(":") == 1:
                host = host.split(":")[0]
            host = host.rstrip(".")
            return host if _HOST_RE.match(host) else None
    return None


def rewrite_head(head: bytes, subs: list[tuple[bytes, bytes]], body_len: int | None) -> bytes:
    """The request head with placeholders replaced, ``Connection: close`` and, when the body was
    substituted, its new ``Content-Length``. ``head`` ends before the blank line."""
    lines = head.split(b"\r\n")
    out = [_sub(lines[0], subs)]
    for line in lines[1:]:
        key = line.partition(b":")[0].strip().lower()
        if key in (b"connection", b"proxy-connection", b"keep-alive"):
            continue
        if key == b"expect" and body_len is not None:  # answered by the proxy already
            continue
        if key == b"content-length" and body_len is not None:
            continue
        out.append(_sub(line, subs))
    out.append(b"Connection: close")
    if body_len is not None:
        out.append(b"Content-Length: %d" % body_len)
    return b"\r\n".join(out) + b"\r\n\r\n"


def _sub(data: bytes, subs: list[tuple[bytes, bytes]]) -> bytes:
    for placeholder, value in subs:
        data = data.replace(placeholder, value)
    return data


def expects_continue(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"expect" and value.strip().lower() == b"100-continue":
            return True
    return False


def content_length(head: bytes) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked?) of a request head; ValueError if malformed/ambiguous."""
    length, chunked, seen = None, False, 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            seen += 1
            v = value.strip()
            if not v.isdigit() or len(v) > 18:
                raise ValueError("bad Content-Length")
            length = int(v)
        elif key == b"transfer-encoding":
            chunked = True
    if seen > 1 or (chunked and length is not None):
        raise ValueError("ambiguous body length")
    return length, chunked


# --- the proxy -----------------------------------------------------------------------------


class Proxy:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.secrets = [
            (s["placeholder"].encode(), s["value"].encode(), [h.lower() for h in s["hosts"]]) for s in conf["secrets"]
        ]
        self.hosts = sorted({h for _, _, hosts in self.secrets for h in hosts})
        self.slots = threading.BoundedSemaphore(MAX_CONNS)
        self.tls_server: ssl.SSLContext | None = None
        if conf.get("cert"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(conf["cert"], conf["key"])
            ctx.set_alpn_protocols(["http/1.1"])
            self.tls_server = ctx
        self.tls_client = ssl.create_default_context(cafile=conf.get("upstream_cafile") or None)
        self.tls_client.set_alpn_protocols(["http/1.1"])

    def subs_for(self, name: str) -> list[tuple[bytes, bytes]]:
        return [(p, v) for p, v, hosts in self.secrets if host_matches(hosts, name)]

    # --- accept ---------------------------------------------------------------------------
    def serve(self, lsock: socket.socket, counted: FastStats | None = None) -> None:
        """Accept the box's connections; ``counted``: they bypass the box's interfaces (fast
        path), so their bytes are counted here for its metrics."""
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._one, args=(conn, counted), daemon=True).start()

    def _one(self, conn: socket.socket, counted: FastStats | None = None) -> None:
        fd = counted.begin(conn) if counted is not None else None
        try:
            with conn:
                self.handle(conn)
        except Exception:  # one connection's failure, whatever it is, ends only that connection
            pass
        finally:
            if counted is not None and fd is not None:
                counted.end(fd)
            self.slots.release()

    def handle(self, conn: socket.socket) -> None:
        dst = original_dst(conn)
        if dst == conn.getsockname()[:2]:  # not redirected by nftables: a host process, not the box
            return
        if not proxied(dst):  # only what the redirects send here, whichever listener it came to
            return
        first = peek(conn, time.monotonic() + PEEK_DEADLINE)
        if first[:1] == b"\x16":
            name = self._peek_sni(conn)
            if name and self.tls_server is not None and self.subs_for(name):
                self.intercept_tls(conn, name, dst[1])
                return
        else:
            head = peek_head(conn, time.monotonic() + PEEK_DEADLINE)
            name = host_header(head) if head else None
            if name and self.subs_for(name):
                self.intercept(conn, conn, name, dst[1], tls_name=None)
                return
        self.pass_through(conn, dst)

    def _peek_sni(self, conn: socket.socket) -> str | None:
        deadline = time.monotonic() + PEEK_DEADLINE
        while True:
            data = conn.recv(MAX_HELLO, socket.MSG_PEEK)
            try:
                return sni_of(data)
            except (ValueError, IndexError, struct.error):
                if len(data) >= MAX_HELLO:
                    return None
            wait_readable(conn, deadline, len(data))

    # --- pass-through ---------------------------------------------------------------------
    def pass_through(self, conn: socket.socket, dst: tuple[str, int]) -> None:
        up = self.connect_raw(dst)
        with up:
            relay_plain(conn, up)

    def connect_raw(self, dst: tuple[str, int]) -> socket.socket:
        family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(CONNECT_TIMEOUT)
            s.connect(dst)
        except OSError:
            s.close()
            raise
        return s

    # --- interception ---------------------------------------------------------------------
    def intercept_tls(self, conn: socket.socket, name: str, port: int) -> None:
        assert self.tls_server is not None
        conn.settimeout(PEEK_DEADLINE)
        tls = self.tls_server.wrap_socket(conn, server_side=True)
        with tls:
            self.intercept(tls, conn, name, port, tls_name=name)

    def intercept(self, c: socket.socket, raw: socket.socket, name: str, port: int, tls_name: str | None) -> None:
        deadline = time.monotonic() + HEAD_DEADLINE
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                c.sendall(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                )
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            c.settimeout(left)
            chunk = c.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            c.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return
        if tls_name is not None and host_header(head) not in (tls_name, None):
            c.sendall(b"HTTP/1.1 421 Misdirected Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return
        subs = self.subs_for(name)
        try:
            length, chunked = content_length(head)
        except ValueError:
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return
        body_len = None
        if length is not None and not chunked and length <= MAX_BODY:
            if len(rest) < length and expects_continue(head):  # the client waits for this before its body
                c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            while len(rest) < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                c.settimeout(left)
                chunk = c.recv(min(65536, length - len(rest)))
                if not chunk:
                    return
                rest += chunk
            body = _sub(rest[:length], subs)
            body_len, rest = len(body), body + rest[length:]  # (a pipelined request after it: unchanged)
        up = self.connect_name(name, port, tls_name)
        with up:
            up.settimeout(IDLE_TIMEOUT)
            up.sendall(rewrite_head(head, subs, body_len) + rest)
            relay(c, up)

    def connect_name(self, name: str, port: int, tls_name: str | None) -> socket.socket:
        """A connection to the listed *name* (resolved by the host, never the box's address)."""
        err: OSError = OSError(f"cannot resolve {name}")
        for _, _, _, _, addr in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
            try:
                s = self.connect_raw((str(addr[0]), int(addr[1])))
            except OSError as e:
                err = e
                continue
            if tls_name is None:
                return s
            try:
                return self.tls_client.wrap_socket(s, server_hostname=tls_name)
            except (OSError, ssl.SSLError):
                s.close()
                raise
        raise err


class FastStats:
    """Bytes and segments of the box's fast-path connections (box side, from ``TCP_INFO``): they
    go over the box's loopback, not its interfaces, which is where its network counters come
    from. Written to ``STATS_NAME`` in the box dir every ``STATS_INTERVAL`` s when changed, as
    four fixed-width numbers: received from the box, sent to it, segments in, segments out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = [0, 0, 0, 0]
        self.live: set[int] = set()

    def begin(self, conn: socket.socket) -> int | None:
        """A duplicate of the connection's fd (TLS wrapping detaches ``conn``), for ``end``."""
        try:
            fd = os.dup(conn.fileno())
        except OSError:
            return None
        with self.lock:
            self.live.add(fd)
        return fd

    def end(self, fd: int) -> None:
        with self.lock:
            self.live.discard(fd)
            self.done = [a + b for a, b in zip(self.done, tcp_counts(fd), strict=True)]
        os.close(fd)

    def totals(self) -> list[int]:
        with self.lock:
            out = list(self.done)
            for fd in self.live:
                out = [a + b for a, b in zip(out, tcp_counts(fd), strict=True)]
        return out

    def write_loop(self, fd: int) -> None:
        written: list[int] = []
        while True:
            time.sleep(STATS_INTERVAL)
            now = self.totals()
            if now != written:
                os.pwrite(fd, (" ".join(f"{n:20d}" for n in now) + "\n").encode(), 0)
                written = now


def tcp_counts(fd: int) -> list[int]:
    """[bytes received, bytes sent and acknowledged, segments in, segments out] of socket ``fd``."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    except OSError:
        return [0, 0, 0, 0]
    if len(info) < 144:
        return [0, 0, 0, 0]
    acked, received = struct.unpack_from("=QQ", info, 120)
    segs_out, segs_in = struct.unpack_from("=II", info, 136)
    return [received, acked, segs_in, segs_out]


def proxied(dst: tuple[str, int]) -> bool:
    """A destination the proxy serves: port 80 or 443 of an address that is not loopback or
    unspecified (the box's own loopback never reaches either redirect)."""
    try:
        addr = ipaddress.ip_address(dst[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return dst[1] in PROXIED_PORTS and not (addr.is_loopback or addr.is_unspecified or addr.is_multicast)


def fast_rules(port: int, family: str = "ip") -> str:
    """nft script for the box's network namespace (``family`` ip or ip6): its TCP to ports 80/443,
    except what stays inside the box (routed over ``lo``: loopback and its own addresses), goes
    to ``port`` there.

    Only those flows are tracked (``raw`` chains: everything else ``notrack``): a nat rule turns
    conntrack on for the namespace, and the box's other flows (its loopback ones above all) must
    not fill a table the box had no entries in before."""
    t, lo = f"{family} {FAST_TABLE}", ("127.0.0.1" if family == "ip" else "::1")
    return (
        f"add table {t}\nflush table {t}\n"
        f"add chain {t} rawout {{ type filter hook output priority raw; policy accept; }}\n"
        f'add rule {t} rawout oifname != "lo" tcp dport {{ 80, 443 }} return\n'
        f'add rule {t} rawout oifname "lo" {family} saddr {lo} tcp sport {port} return\n'  # the proxy's replies
        f"add rule {t} rawout notrack\n"
        f"add chain {t} rawpre {{ type filter hook prerouting priority raw; policy accept; }}\n"
        f'add rule {t} rawpre iifname != "lo" notrack\n'
        f"add chain {t} out {{ type nat hook output priority -100; policy accept; }}\n"
        f'add rule {t} out oifname "lo" return\n'
        f"add rule {t} out fib daddr type local return\n"
        f"add rule {t} out tcp dport {{ 80, 443 }} redirect to :{port}\n"
    )


def _fast_listener(nft_path: str, family: socket.AddressFamily) -> socket.socket:
    """In the box's namespace (the calling thread's): a listener on its loopback, and its rules."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)  # the box may not have brought lo up yet
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        s.listen(128)
        rules = fast_rules(s.getsockname()[1], "ip6" if family == socket.AF_INET6 else "ip")
        if not nft(nft_path, rules):  # forked from this thread: runs in the box's namespace
            raise OSError("nft")
    except OSError:
        s.close()
        raise
    return s


def listen_in_netns(netns: int, nft_path: str) -> list[socket.socket]:
    """Listening sockets on the loopback of the network namespace ``netns`` (IPv4, and IPv6 where
    the box has it), with :func:`fast_rules` installed there for each; none (reported) if the
    IPv4 one failed: the host path then serves the box."""
    result: list[socket.socket] = []

    def run() -> None:  # this thread only: the proxy itself stays in the host's namespace
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(netns, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            result.append(_fast_listener(nft_path, socket.AF_INET))
        except OSError as e:
            print(f"boxlite secretproxy: no fast path ({e}); the host path serves the box", file=sys.stderr, flush=True)
            return
        try:
            result.append(_fast_listener(nft_path, socket.AF_INET6))
        except OSError as e:
            print(f"boxlite secretproxy: no IPv6 fast path ({e})", file=sys.stderr, flush=True)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join()
    return result


def listen_on_host() -> tuple[socket.socket, socket.socket | None]:
    """The host path's listeners: ``127.0.0.1:P`` and ``[::1]:P``, one port for both families, as
    the host's redirect (an ``inet`` table: one port per box group) sends IPv4 flows to
    127.0.0.1 and IPv6 ones to ::1. No IPv6 listener (reported) where the host has no ``::1``."""
    for _ in range(HOST_BIND_TRIES):
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        v4.bind(("127.0.0.1", 0))
        v4.listen(128)
        v6 = None
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            v6.bind(("::1", v4.getsockname()[1]))
            v6.listen(128)
            return v4, v6
        except OSError as e:
            if v6 is not None:
                v6.close()
            if e.errno != errno.EADDRINUSE:
                print(f"boxlite secretproxy: no IPv6 host listener ({e})", file=sys.stderr, flush=True)
                return v4, None
            v4.close()  # that port is taken on ::1: another pair
    raise OSError(errno.EADDRINUSE, "no port free on both 127.0.0.1 and ::1")


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """Where the box connected to, before nftables redirected the flow here."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack(">H", raw[2:4])[0]
        return str(ipaddress.IPv6Address(raw[8:24])), port
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), struct.unpack(">H", raw[2:4])[0]


def wait_readable(conn: socket.socket, deadline: float, have: int) -> None:
    """Wait until more than ``have`` bytes are peekable, by ``deadline`` (else TimeoutError:
    a box that sends too little too slowly is cut); ConnectionError if the box closed."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the box sent too little too slowly")
        if not select.select([conn], [], [], min(left, 0.5))[0]:
            continue
        data = conn.recv(MAX_HEAD + 4, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if not data:
            raise ConnectionError("closed")
        if len(data) > have:
            return
        time.sleep(0.05)


def peek(conn: socket.socket, deadline: float) -> bytes:
    wait_readable(conn, deadline, 0)
    return conn.recv(MAX_HELLO, socket.MSG_PEEK)


def peek_head(conn: socket.socket, deadline: float) -> bytes | None:
    """The request head the box sent so far (peeked, not consumed): complete, or the first
    ``MAX_HEAD`` bytes of a longer one (an intercepted one then gets 431); None if it is not
    HTTP-like (then it is passed through and never substituted)."""
    while True:
        data = conn.recv(MAX_HEAD + 4, socket.MSG_PEEK)
        if b"\r\n\r\n" in data:
            return data.partition(b"\r\n\r\n")[0]
        if b"\r\n" in data and b" HTTP/1." not in data.split(b"\r\n")[0]:
            return None
        if len(data) >= MAX_HEAD:
            return data
        try:
            wait_readable(conn, deadline, len(data))
        except ConnectionError:
            return None


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways (one thread: TLS sockets are not used from two threads at once) until
    both sides closed, or nothing moved for ``IDLE_TIMEOUT``. A plain side's EOF is passed on as
    a half-close; a TLS side cannot half-close, so the end of the other direction then ends both."""
    peer = {a: b, b: a}
    reading = {a, b}
    for s in (a, b):
        s.settimeout(IDLE_TIMEOUT)
    last = time.monotonic()
    while reading:
        ready: list[socket.socket] = [s for s in reading if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready = select.select(list(reading), [], [], 1.0)[0]
        if not ready:
            if time.monotonic() - last > IDLE_TIMEOUT:
                return
            continue
        last = time.monotonic()
        for s in ready:
            try:
                data = s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            if data:
                peer[s].sendall(data)
                continue
            reading.discard(s)
            if isinstance(peer[s], ssl.SSLSocket):
                return
            try:
                peer[s].shutdown(socket.SHUT_WR)
            except OSError:
                pass


def relay_plain(a: socket.socket, b: socket.socket) -> None:
    """``relay`` for two plain sockets (pass-through): each direction in its own thread with
    splice(2) through a pipe, so the bytes are never copied into this process; EOF is passed on
    as a half-close; nothing moving either way for ``IDLE_TIMEOUT`` (or an error) ends both."""
    last = [time.monotonic()]
    other = threading.Thread(target=_splice_one, args=(b, a, last), daemon=True)
    other.start()
    _splice_one(a, b, last)
    other.join()


def _splice_one(src: socket.socket, dst: socket.socket, last: list[float]) -> None:
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, SPLICE_CHUNK)
        while True:
            if not select.select([src], [], [], 1.0)[0]:
                if time.monotonic() - last[0] > IDLE_TIMEOUT:
                    raise TimeoutError
                continue
            try:
                n = os.splice(src.fileno(), w, SPLICE_CHUNK, flags=flags)
            except BlockingIOError:
                continue
            if n == 0:  # EOF: pass it on, the other direction goes on
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            last[0] = time.monotonic()
            while n:
                try:
                    n -= os.splice(r, dst.fileno(), n, flags=flags)
                except BlockingIOError:
                    if not select.select([], [dst], [], IDLE_TIMEOUT)[1]:
                        raise TimeoutError from None
            last[0] = time.monotonic()
    except OSError:  # reset, broken pipe, idle (TimeoutError): end both directions
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(r)
        os.close(w)


def nft(path: str, script: str) -> bool:
    try:
        proc = subprocess.run([path, "-f", "-"], input=script.encode(), capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if proc.returncode != 0:
        print(f"boxlite secretproxy: nft: {proc.stderr.decode(errors='replace')[:300]}", file=sys.stderr, flush=True)
    return proc.returncode == 0


PR_SET_PDEATHSIG = 1
PARENT_POLL = 0.5
"""Seconds between checks that the proxy's parent (keeper or VM relay) is still alive."""


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(0)


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        conf = json.load(f)
    netns = next((int(a.split("=", 1)[1]) for a in argv[2:] if a.startswith("--netns-fd=")), None)
    proxy = Proxy(conf)
    lsock, lsock6 = listen_on_host()
    port = lsock.getsockname()[1]
    rules = conf.get("rules")
    if rules and not nft(str(conf["nft"]), rules.replace(PORT_MARK, str(port))):
        print("boxlite secretproxy: cannot install the box's redirect", file=sys.stderr, flush=True)
        return 1
    fast: list[socket.socket] = []
    stats_fd = -1
    if netns is not None:
        fast = listen_in_netns(netns, str(conf["nft"]))
        os.close(netns)
    path = os.path.join(os.path.dirname(os.path.abspath(argv[1])), STATS_NAME)
    if fast:  # opened as root: the box dir is root's
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        stats_fd = os.open(path, flags, 0o600)
    else:  # a last start's counts are not this one's
        with contextlib.suppress(OSError):
            os.unlink(path)
    uid = int(conf.get("uid") or 0)
    if uid:  # from here on it reads only what the box sends: no root (its group stays the box's)
        parent, libc = os.getppid(), ctypes.CDLL(None, use_errno=True)
        os.setresuid(uid, uid, uid)
        # A uid change clears PR_SET_PDEATHSIG: set it again, and watch the parent too (the signal
        # was seen not to arrive once root is dropped), or the proxy, holding the secrets' values,
        # would outlive the keeper or VM relay that started it.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.write(1, f"ready {port}\n".encode())
    # The parent's pipe ends here, but fd 1 is never left free: a box's connection accepted
    # later would take it, and any stray write to stdout would then reach the box.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    if lsock6 is not None:
        threading.Thread(target=proxy.serve, args=(lsock6,), daemon=True).start()
    if fast:
        counted = FastStats()
        for sock in fast:
            threading.Thread(target=proxy.serve, args=(sock, counted), daemon=True).start()
        threading.Thread(target=counted.write_loop, args=(stats_fd,), daemon=True).start()
    proxy.serve(lsock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
