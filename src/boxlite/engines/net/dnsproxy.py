"""The DNS proxy of one allow-listed box: ``python3 -I -S dnsproxy.py CONFIG.json``.

A host process (stdlib only, run by the box's keeper or shim, dying with it) that the host's
nftables sends all of the box helper's DNS to (:mod:`.allowlist`), whatever address the box
asked. It answers NXDOMAIN for names no entry allows, without asking anyone (so no data leaves
through DNS to other names), forwards queries for allowed names to the host's resolver, and
adds the A/AAAA addresses of each answer to the box's nft sets (for the records' TTL, at least
``MIN_TTL``) *before* the box gets the answer, so its connect that follows is let through.

Input is the box's: each message is bounded (UDP 4 KiB, TCP 64 KiB), each exchange has a
deadline, concurrency is capped, and malformed queries get REFUSED or nothing. Once it bound its
port it installs the box's rules (port in place of ``@PORT@``), prints ``ready <port>`` and serves.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

MAX_UDP = 4096
MAX_TCP = 65535
UPSTREAM_TIMEOUT = 4.0
TCP_DEADLINE = 10.0
TCP_QUERIES = 32
UDP_WORKERS = 16
UDP_BACKLOG = 256
MAX_TCP_CLIENTS = 16
MIN_TTL, MAX_TTL = 60, 86400
MAX_ADDRESSES = 64
"""Addresses taken from one answer (the box gets the answer as it came)."""
NXDOMAIN, SERVFAIL, REFUSED, FORMERR = 3, 2, 5, 1
A, AAAA = 1, 28
PORT_MARK = "@PORT@"
STATS_NAME = "dnsproxy.stats"  # next to the config: {"refused": n}, rewritten when n changed
STATS_INTERVAL = 2.0
LABEL_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class BadMessage(Exception):
    pass


def question(msg: bytes) -> tuple[str, int, int]:
    """(lower-case name, qtype, end offset) of a query with one question; BadMessage otherwise.
    Labels are letters, digits, ``-`` and ``_`` only: no dots or bytes hidden inside a label."""
    if len(msg) < 12:
        raise BadMessage("short")
    flags, qdcount = struct.unpack(">HH", msg[2:6])
    if flags & 0x8000 or (flags >> 11) & 0xF or qdcount != 1:
        raise BadMessage("not a standard query")
    labels, pos = [], 12
    while True:
        if pos >= len(msg):
            raise BadMessage("truncated name")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(msg):
            raise BadMessage("bad label")
        label = msg[pos + 1 : pos + 1 + n]
        if not set(label) <= LABEL_CHARS:
            raise BadMessage("bad label characters")
        labels.append(label.decode().lower())
        pos += 1 + n
    if pos + 4 > len(msg) or sum(len(x) + 1 for x in labels) > 254:
        raise BadMessage("truncated question")
    qtype = struct.unpack(">H", msg[pos : pos + 2])[0]
    return ".".join(labels), qtype, pos + 4


def reply(query: bytes, rcode: int) -> bytes:
    """An answer-less reply to ``query`` (its id, question and RD bit) with ``rcode``."""
    try:
        end = question(query)[2]
        qd = 1
    except BadMessage:
        end, qd = 12, 0
    flags = 0x8000 | 0x0080 | (struct.unpack(">H", query[2:4])[0] & 0x0100) | rcode
    return query[:2] + struct.pack(">HHHHH", flags, qd, 0, 0, 0) + query[12:end]


def skip_name(msg: bytes, pos: int) -> int:
    for _ in range(128):
        if pos >= len(msg):
            raise BadMessage("truncated name")
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        if n & 0xC0:
            raise BadMessage("bad label")
        pos += 1 + n
    raise BadMessage("name too long")


def addresses(query: bytes, resp: bytes) -> list[tuple[int, bytes, int]]:
    """(family 4/6, packed address, ttl) of the answer section's A/AAAA records, after checking
    that ``resp`` answers ``query`` (same id, same question)."""
    if len(resp) < 12 or resp[:2] != query[:2] or not resp[2] & 0x80:
        raise BadMessage("not our answer")
    qend = question(query)[2]
    qdcount, ancount = struct.unpack(">HH", resp[4:8])
    if qdcount != 1 or resp[12:qend].lower() != query[12:qend].lower():
        raise BadMessage("answer to another question")
    pos, out = qend, []
    for _ in range(ancount):
        pos = skip_name(resp, pos)
        if pos + 10 > len(resp):
            raise BadMessage("truncated record")
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", resp[pos : pos + 10])
        pos += 10
        if pos + rdlen > len(resp):
            raise BadMessage("truncated record")
        if (rtype, rdlen) in ((A, 4), (AAAA, 16)):
            out.append((4 if rtype == A else 6, resp[pos : pos + rdlen], ttl))
        pos += rdlen
    return out


class Proxy:
    def __init__(self, conf: dict) -> None:
        self.gid = int(conf["gid"])
        self.entries = [(str(k), str(v), None if p is None else int(p)) for k, v, p in conf["entries"]]
        self.upstream = str(conf["upstream"])
        ports = conf.get("upstream_ports")
        self.upstream_ports = (int(ports[0]), int(ports[1])) if ports else None
        self.table = str(conf["table"])
        self.nft_path = str(conf["nft"])
        self.rules = str(conf["rules"])
        self.known: dict[str, float] = {}  # set element -> monotonic expiry we installed
        self.lock = threading.Lock()
        self.backlog: queue.Queue[tuple[socket.socket, bytes, tuple]] = queue.Queue(UDP_BACKLOG)
        self.tcp_slots = threading.BoundedSemaphore(MAX_TCP_CLIENTS)
        self.refused = 0  # names answered NXDOMAIN by policy (BoxMetrics: net_dns_refused)

    # --- policy ---------------------------------------------------------------------------
    def allowed(self, name: str) -> tuple[bool, set[int]] | None:
        hit, any_port, ports = False, False, set()
        for kind, value, port in self.entries:
            if (kind == "name" and name == value) or (kind == "wildcard" and name.endswith("." + value)):
                hit = True
                if port is None:
                    any_port = True
                else:
                    ports.add(port)
        return (any_port, ports) if hit else None

    def answer(self, query: bytes, tcp: bool) -> bytes | None:
        """The box's answer to ``query`` (None: drop it)."""
        if len(query) < 12:
            return None
        try:
            name, _, end = question(query)
        except BadMessage:
            return reply(query, REFUSED)
        policy = self.allowed(name)
        if policy is None:
            self.refused += 1
            return reply(query, NXDOMAIN)
        # Upstream gets the question alone (RD and CD kept) under an id of ours: nothing else
        # the box wrote (id, records, EDNS options, trailing bytes) leaves the host.
        flags = struct.unpack(">H", query[2:4])[0] & 0x0110
        clean = os.urandom(2) + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + query[12:end]
        try:
            resp = self.forward(clean, tcp)
            found = addresses(clean, resp)
        except (OSError, BadMessage):
            return reply(query, SERVFAIL)
        if found and not self.allow(found[:MAX_ADDRESSES], *policy):
            return reply(query, SERVFAIL)
        return query[:2] + resp[2:]

    def allow(self, found: list[tuple[int, bytes, int]], any_port: bool, ports: set[int]) -> bool:
        """Add the addresses to the box's sets (refreshing their timeouts); False if nft failed."""
        t, c, now = f"inet {self.table}", f"b{self.gid}", time.monotonic()
        lines = []
        with self.lock:
            for family, packed, ttl in found:
                addr = socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, packed)
                timeout = min(max(ttl, MIN_TTL), MAX_TTL)
                keys = [(f"{c}_{family}", addr)] if any_port else [(f"{c}_{family}p", f"{addr} . {p}") for p in ports]
                for set_name, elem in keys:
                    key = f"{set_name} {elem}"
                    if self.known.get(key, 0) - now > timeout / 2:
                        continue
                    self.known[key] = now + timeout
                    lines += [
                        f"add element {t} {set_name} {{ {elem} timeout {timeout}s }}",
                        f"delete element {t} {set_name} {{ {elem} }}",
                        f"add element {t} {set_name} {{ {elem} timeout {timeout}s }}",
                    ]
            if len(self.known) > 65536:
                self.known = {k: v for k, v in self.known.items() if v > now}
            return not lines or self.nft("\n".join(lines) + "\n")

    def nft(self, script: str) -> bool:
        try:
            proc = subprocess.run([self.nft_path, "-f", "-"], input=script.encode(), capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if proc.returncode != 0:
            print(f"boxlite dnsproxy: nft: {proc.stderr.decode(errors='replace')[:300]}", file=sys.stderr, flush=True)
        return proc.returncode == 0

    # --- upstream -------------------------------------------------------------------------
    def forward(self, query: bytes, tcp: bool) -> bytes:
        family = socket.AF_INET6 if ":" in self.upstream else socket.AF_INET
        deadline = time.monotonic() + UPSTREAM_TIMEOUT
        sock = socket.socket(family, socket.SOCK_STREAM) if tcp else upstream_udp(family, self.upstream_ports)
        with sock as s:
            s.settimeout(UPSTREAM_TIMEOUT)
            s.connect((self.upstream, 53))
            if tcp:
                s.sendall(struct.pack(">H", len(query)) + query)
                return read_framed(s, deadline)
            s.send(query)
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                resp = s.recv(MAX_TCP)
                if resp[:2] == query[:2]:
                    return resp

    # --- serving --------------------------------------------------------------------------
    def serve_udp(self, sock: socket.socket) -> None:
        while True:
            try:
                query, peer = sock.recvfrom(MAX_UDP + 1)
            except OSError:
                continue
            if len(query) > MAX_UDP:
                continue
            try:
                self.backlog.put_nowait((sock, query, peer))
            except queue.Full:
                pass  # a flood: the box's resolver retries

    def udp_worker(self) -> None:
        while True:
            sock, query, peer = self.backlog.get()
            try:
                resp = self.answer(query, tcp=False)
                if resp is not None:
                    if len(resp) > 512 and not has_edns(query):
                        resp = truncated(resp)
                    sock.sendto(resp, peer)
            except OSError:
                pass

    def serve_tcp(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            if not self.tcp_slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._tcp_one, args=(conn,), daemon=True).start()

    def _tcp_one(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + TCP_DEADLINE
        try:
            with conn:
                for _ in range(TCP_QUERIES):
                    query = read_framed(conn, deadline)
                    resp = self.answer(query, tcp=True)
                    if resp is None:
                        return
                    conn.settimeout(max(0.01, deadline - time.monotonic()))
                    conn.sendall(struct.pack(">H", len(resp)) + resp)
        except (OSError, BadMessage):
            pass
        finally:
            self.tcp_slots.release()


def upstream_udp(family: int, ports: tuple[int, int] | None) -> socket.socket:
    """A UDP socket for one upstream query, on a random port of ``ports`` (allowlist.upstream_ports:
    no box's DNS flow uses them, so the conntrack entry it leaves behind cannot catch one); where
    the kernel puts it if none is given or 16 tries found none free. TCP needs no such care: a new
    connection's SYN replaces a closed one's lingering entry."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    if ports is not None:
        low, span = ports[0], ports[1] - ports[0] + 1
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        for _ in range(16):
            try:
                s.bind((wildcard, low + int.from_bytes(os.urandom(4), "big") % span))
                break
            except OSError:
                continue
    return s


def read_framed(s: socket.socket, deadline: float) -> bytes:
    """One length-prefixed DNS message from a TCP stream, by ``deadline``."""
    buf = b""
    need = 2
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BadMessage("deadline")
        s.settimeout(left)
        chunk = s.recv(need - len(buf))
        if not chunk:
            raise BadMessage("closed")
        buf += chunk
        if need == 2 and len(buf) == 2:
            need = 2 + struct.unpack(">H", buf)[0]
    return buf[2:]


def has_edns(query: bytes) -> bool:
    return len(query) >= 12 and struct.unpack(">H", query[10:12])[0] > 0


def truncated(resp: bytes) -> bytes:
    """The header and question only, with TC set: the box retries over TCP."""
    try:
        end = skip_name(resp, 12) + 4
    except BadMessage:
        end = 12
    flags = struct.unpack(">H", resp[2:4])[0] | 0x0200
    return resp[:2] + struct.pack(">HHHHH", flags, 1 if end > 12 else 0, 0, 0, 0) + resp[12:end]


def bind_pair() -> tuple[int, list[socket.socket], list[socket.socket]]:
    """UDP and TCP sockets on one loopback port (127.0.0.1, and ::1 where it exists)."""
    for _ in range(64):
        udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp4.bind(("127.0.0.1", 0))
        port = udp4.getsockname()[1]
        udps, tcps = [udp4], []
        try:
            tcp4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcps.append(tcp4)
            tcp4.bind(("127.0.0.1", port))
            tcp4.listen(64)
            try:
                udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                udps.append(udp6)
                udp6.bind(("::1", port))
                tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                tcps.append(tcp6)
                tcp6.bind(("::1", port))
                tcp6.listen(64)
            except OSError:  # no IPv6 loopback here: IPv6 DNS of the box is then refused
                for s in udps[1:] + tcps[1:]:
                    s.close()
                udps, tcps = udps[:1], tcps[:1]
            return port, udps, tcps
        except OSError:
            for s in udps + tcps:
                s.close()
    raise OSError("no free loopback port for both UDP and TCP")


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        conf = json.load(f)
    proxy = Proxy(conf)
    port, udps, tcps = bind_pair()
    if not proxy.nft(proxy.rules.replace(PORT_MARK, str(port))):
        print("boxlite dnsproxy: cannot install the box's rules", file=sys.stderr, flush=True)
        return 1
    for _ in range(UDP_WORKERS):
        threading.Thread(target=proxy.udp_worker, daemon=True).start()
    for s in udps:
        threading.Thread(target=proxy.serve_udp, args=(s,), daemon=True).start()
    for s in tcps:
        threading.Thread(target=proxy.serve_tcp, args=(s,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.write(1, f"ready {port}\n".encode())
    # The parent's pipe ends here, but fd 1 is never left free: a box's connection accepted
    # later would take it, and any stray write to stdout would then reach the box.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    stats, written = Path(argv[1]).with_name(STATS_NAME), -1
    while True:
        select.select([], [], [], STATS_INTERVAL)
        if proxy.refused != written:  # for the box's metrics (engines/net/netcounters.py)
            written = proxy.refused
            tmp = stats.with_suffix(".tmp")
            tmp.write_text(json.dumps({"refused": written}))
            os.replace(tmp, stats)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
