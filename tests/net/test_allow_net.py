"""Issue 12: ``NetworkSpec(allow_net=[...])`` lets a box reach the listed names, addresses and ports
and nothing else, on both engines, whatever box root does.

A private "internet" (tests never send traffic anywhere else): this file runs itself as a
script under ``unshare -n -m``. That namespace plays the host (its /etc/resolv.conf names the
test's DNS server 10.77.0.53); a second namespace behind a veth holds the "remote" hosts:
10.77.0.2 (allowed.test), 10.77.0.3 (other.test), 10.77.0.4 (a.wild.test), fd77::2, fd77::3, a DNS
server that logs every name it is asked, and UDP servers that log every datagram. A box with a
Debian python image probes it all as root and reports; an unrestricted box in the same run
shows that every refusal is the allow-list's doing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import privnet

pytestmark = pytest.mark.slow  # run early: tests/conftest.py orders slow files first

DNS = "10.77.0.53"
NAMES = {"allowed.test": "10.77.0.2", "other.test": "10.77.0.3", "a.wild.test": "10.77.0.4", "wild.test": "10.77.0.4"}
NAMES6 = {"allowed6.test": "fd77::3"}
ALLOW = ["allowed.test:80", "*.wild.test", "[fd77::3]:80", "allowed6.test", "10.77.0.9/32"]
BANNERS = [
    ("10.77.0.2", 80, "web-allowed"),
    ("10.77.0.2", 8080, "web-8080"),
    ("10.77.0.3", 80, "web-other"),
    ("10.77.0.4", 80, "web-wild"),
    ("fd77::2", 80, "web6-other"),
    ("fd77::3", 80, "web6-allowed"),
    ("169.254.169.254", 80, "imds"),  # a cloud metadata service: no box reaches it, allow-listed or not
    ("fd00:ec2::254", 80, "imds6"),
    ("198.51.100.7", 80, "web-public"),  # outside the private ranges: what a public-only box may reach
]
METADATA = ["169.254.169.254/16", "fd00:ec2::254/64", "198.51.100.7/24"]
P_PUBLISHED = 7080
UDP_SINKS = [("10.77.0.3", 9999), ("10.77.0.2", 9999)]

# --- the remote hosts (their own network namespace) -------------------------------------------


def log_line(log: Path, line: str) -> None:
    with open(log, "a") as f:
        f.write(line + "\n")


def udp_sink(addr: str, port: int, log: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))

    def serve() -> None:
        while True:
            data, _ = sock.recvfrom(2048)
            log_line(log, f"udp {addr}:{port} {data[:64]!r}")

    threading.Thread(target=serve, daemon=True).start()


def dns_answer(query: bytes) -> tuple[str, bytes]:
    """A: NAMES (anything else: 10.77.0.3, so that a leak would resolve); AAAA: NAMES6."""
    pos, labels = 12, []
    while query[pos]:
        labels.append(query[pos + 1 : pos + 1 + query[pos]].decode(errors="replace").lower())
        pos += 1 + query[pos]
    end = pos + 5
    name, qtype = ".".join(labels), struct.unpack(">H", query[pos + 1 : pos + 3])[0]
    records = b""
    if qtype == 1 and name not in NAMES6:
        packed = socket.inet_aton(NAMES.get(name, "10.77.0.3"))
        records = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + packed
    elif qtype == 28 and name in NAMES6:
        packed = socket.inet_pton(socket.AF_INET6, NAMES6[name])
        records = b"\xc0\x0c" + struct.pack(">HHIH", 28, 1, 30, 16) + packed
    count = 1 if records else 0
    return name, query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, count, 0, 0) + query[12:end] + records


def dns_server(log: Path) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((DNS, 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((DNS, 53))
    tcp.listen(8)

    def serve_udp() -> None:
        while True:
            query, peer = udp.recvfrom(4096)
            try:
                name, answer = dns_answer(query)
            except (IndexError, struct.error):
                continue
            log_line(log, f"dns {name}")
            udp.sendto(answer, peer)

    def serve_tcp() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                conn.settimeout(5)
                try:
                    size = struct.unpack(">H", conn.recv(2))[0]
                    query = conn.recv(size)
                    name, answer = dns_answer(query)
                    log_line(log, f"dns-tcp {name}")
                    conn.sendall(struct.pack(">H", len(answer)) + answer)
                except (OSError, IndexError, struct.error):
                    pass

    threading.Thread(target=serve_udp, daemon=True).start()
    threading.Thread(target=serve_tcp, daemon=True).start()


def remote_main(log: str) -> None:
    def start() -> None:
        for addr, port, text in BANNERS:
            privnet.banner_server(addr, port, text.encode() + b"\n")
        for addr, port in UDP_SINKS:
            udp_sink(addr, port, Path(log))
        dns_server(Path(log))

    privnet.when_addresses_exist(start)
    time.sleep(900)


# --- the host's side of the scenario -------------------------------------------------------------


PROBE = r"""
import json, socket, struct, subprocess, time
r = {}
def tcp(host, port):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.settimeout(5)
        data = s.recv(100).decode().strip()
        s.close()
        return data or "empty"
    except socket.gaierror:
        return "gaierror"
    except OSError as e:
        return type(e).__name__
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})
    except socket.gaierror:
        return "gaierror"
def query(name):
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    return q
def dns_direct(server, name, tcp=False):
    for _ in range(3):  # as resolvers do: a busy proxy may drop a datagram
        result = dns_direct_once(server, name, tcp)
        if result != "TimeoutError":
            break
    return result
def dns_direct_once(server, name, tcp=False):
    try:
        if tcp:
            s = socket.create_connection((server, 53), timeout=5)
            s.settimeout(5)
            q = query(name)
            s.sendall(struct.pack(">H", len(q)) + q)
            resp = s.recv(4096)[2:]
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(query(name), (server, 53))
            resp = s.recv(4096)
        return "rcode=%d answers=%d" % (resp[3] & 15, struct.unpack(">H", resp[6:8])[0])
    except OSError as e:
        return type(e).__name__
def udp(host, port, tag):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3):
        s.sendto(tag, (host, port))
        time.sleep(0.1)
def raw_udp(host, port, tag):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        for _ in range(3):
            s.sendto(struct.pack(">HHHH", 40000, port, 8 + len(tag), 0) + tag, (host, 0))
            time.sleep(0.1)
        return "sent"
    except OSError as e:
        return type(e).__name__
def abuse_proxy():
    # Garbage, oversized and hostile messages to the DNS proxy (every address:53 leads to it),
    # a flood of allowed queries, and stalled TCP connections: it must keep answering.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    loop = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
    dotted = struct.pack(">HHHHHH", 8, 0x0100, 1, 0, 0, 0) + b"\x0callowed.test\x00\x00\x01\x00\x01"
    for payload in (b"", b"\0" * 11, b"\xff" * 4000, loop, dotted, query("allowed.test") * 200):
        u.sendto(payload, ("10.77.0.53", 53))
    u.settimeout(2)
    answers = []
    try:
        while True:
            answers.append(u.recv(65536))
    except OSError:
        pass
    for i in range(300):
        u.sendto(query("allowed.test"), ("10.77.0.53", 53))
    stalled = [socket.create_connection(("10.77.0.53", 53), timeout=5) for _ in range(20)]
    r["after_abuse_udp"] = dns_direct("10.77.0.53", "allowed.test")
    time.sleep(11)  # the proxy's TCP deadline frees the stalled connections' slots
    r["after_abuse_tcp"] = dns_direct("10.77.0.53", "allowed.test", tcp=True)
    r["abuse_answers"] = sorted({"rcode=%d" % (a[3] & 15) for a in answers if len(a) >= 4})
    for c in stalled:
        c.close()
r["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
r["allowed"] = tcp("allowed.test", 80)
r["allowed_other_port"] = tcp("allowed.test", 8080)
r["other_name"] = resolve("other.test")
r["raw_ip"] = tcp("10.77.0.3", 80)
r["wild"] = tcp("a.wild.test", 80)
r["wild_apex"] = resolve("wild.test")
r["v6_allowed"] = tcp("fd77::3", 80)
r["v6_other"] = tcp("fd77::2", 80)
r["v6_by_name"] = resolve("allowed6.test")
r["tunnel"] = resolve("6578666974.evil.test")
udp("10.77.0.3", 9999, b"udp-other")
udp("10.77.0.2", 9999, b"udp-allowed-host-other-port")
r["raw_udp"] = raw_udp("10.77.0.3", 9999, b"raw-udp-other")
r["direct_dns_udp"] = dns_direct("10.77.0.53", "direct1.evil.test")
r["direct_dns_tcp"] = dns_direct("10.77.0.53", "direct2.evil.test", tcp=True)
r["direct_dns_allowed"] = dns_direct("10.77.0.53", "allowed.test")
# root rewrites its resolv.conf to the test's DNS server (unmounting the read-only bind first)
subprocess.run(["umount", "/etc/resolv.conf"], capture_output=True)
try:
    open("/etc/resolv.conf", "w").write("nameserver 10.77.0.53\n")
    r["resolv_rewritten"] = open("/etc/resolv.conf").read().strip()
except OSError as e:
    r["resolv_rewritten"] = type(e).__name__
r["tunnel_after_rewrite"] = resolve("direct3.evil.test")
r["raw_ip_after_rewrite"] = tcp("10.77.0.3", 80)
abuse_proxy()
print("PROBE " + json.dumps(r))
"""

TCP_BANNER = r"""
import json, socket, time
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            return s.recv(100).decode().strip() or "empty"
    except OSError as e:
        return type(e).__name__
"""
"""The probes' TCP check: the first line a server sends, or the error's name."""

CONTROL = (
    TCP_BANNER
    + r"""
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    u.sendto(b"udp-control", ("10.77.0.3", 9999))
    time.sleep(0.1)
print("CONTROL " + json.dumps({"raw_ip": tcp("10.77.0.3", 80), "imds": tcp("169.254.169.254", 80),
                               "imds6": tcp("fd00:ec2::254", 80)}))
"""
)

PUBLIC_ONLY = (
    TCP_BANNER
    + r"""
print("PUBLIC " + json.dumps({"public": tcp("198.51.100.7", 80), "private": tcp("10.77.0.3", 80),
                              "private6": tcp("fd77::2", 80), "dns": socket.gethostbyname("public-only.test")}))
"""
)


def read_banner(addr: str, port: int) -> str:
    try:
        with socket.create_connection((addr, port), timeout=3) as s:
            return s.recv(100).decode().strip()
    except OSError as e:
        return type(e).__name__


async def probe(engine: str, rootfs: str, home: str) -> dict[str, Any]:
    import boxlite

    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    try:
        spec = boxlite.NetworkSpec(allow_net=ALLOW)
        published = [(P_PUBLISHED, 8080)]
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec, ports=published) as box:
            r = await box.exec("python3", "-c", PROBE, timeout=240)
            lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
            assert lines, r.stdout + r.stderr
            report: dict[str, Any] = json.loads(lines[-1][len("PROBE ") :])
            server = await box.box.exec("sh", ["-c", "echo hello-from-box | nc -l -p 8080"], stdin=False)
            report["published"] = ""
            for _ in range(100):  # published ports still work: their replies are not new flows
                report["published"] = await asyncio.to_thread(read_banner, "127.0.0.1", P_PUBLISHED)
                if report["published"].startswith("hello"):
                    break
                await asyncio.sleep(0.1)
            await server.wait()
            report["info_allow_net"] = box.box.info().network.allow_net
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled") as box:
            out = (await box.exec("python3", "-c", CONTROL, timeout=60)).stdout
            control = json.loads(next(x for x in out.splitlines() if x.startswith("CONTROL "))[len("CONTROL ") :])
            report["control_raw_ip"], report["control_imds"] = control["raw_ip"], control["imds"]
            report["control_imds6"] = control["imds6"]
        public = boxlite.NetworkSpec(public_only=True)
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=public) as box:
            out = (await box.exec("python3", "-c", PUBLIC_ONLY, timeout=60)).stdout
            report["public_only"] = json.loads(next(x for x in out.splitlines() if x.startswith("PUBLIC "))[7:])
            report["public_only_info"] = box.box.info().network.public_only
        # the host itself reaches the metadata service: a box's refusal is the host guard's
        report["host_imds"] = await asyncio.to_thread(read_banner, "169.254.169.254", 80)
        listing = subprocess.run(["nft", "list", "table", "inet", "boxlite_allow"], capture_output=True, text=True)
        report["rules_after_stop"] = listing.stdout
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    privnet.bind_file("/etc/resolv.conf", f"nameserver {DNS}\n", Path(home))
    log = Path(home) / "remote.log"
    log.touch()
    remote = privnet.build_internet(
        [sys.executable, __file__, "remote", str(log)],
        remote=[f"{a}/24" for a in ("10.77.0.2", "10.77.0.3", "10.77.0.4", DNS)]
        + ["fd77::2/64", "fd77::3/64", *METADATA],
        host=["10.77.0.1/24", "fd77::1/64"],
    )
    try:
        report = asyncio.run(probe(engine, rootfs, home))
        time.sleep(0.5)  # late datagrams
        report["remote_log"] = log.read_text()
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    if sys.argv[1] == "remote":
        remote_main(sys.argv[2])
    else:
        scenario_main(*sys.argv[2:5])
    sys.exit(0)


# --- the tests -----------------------------------------------------------------------------------


def test_allow_net_allows_only_the_list(engine: str, python_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", engine, str(python_rootfs), str(tmp_path)], timeout=900)
    log = r["remote_log"]
    # Listed: the name on its port, names under a wildcard, a listed IPv6 address.
    assert r["allowed"] == "web-allowed", r
    assert r["wild"] == "web-wild", r
    assert r["direct_dns_allowed"] == "rcode=0 answers=1", r
    # Not listed: another port of a listed name, other names, raw IPs, the wildcard's apex.
    assert r["allowed_other_port"] in ("ConnectionRefusedError", "ConnectionResetError", "TimeoutError"), r
    assert r["other_name"] == "gaierror" and r["wild_apex"] == "gaierror", r
    assert r["raw_ip"] in ("ConnectionRefusedError", "ConnectionResetError", "TimeoutError"), r
    assert r["v6_other"] not in ("web6-other",), r
    # DNS for names not on the list never leaves the host: not even asked directly, over UDP
    # or TCP, nor after root pointed its resolv.conf at the test's DNS server.
    asked = {line.split()[1] for line in log.splitlines() if line.startswith("dns")}
    assert "allowed.test" in asked and "a.wild.test" in asked, log  # the proxy asked upstream
    assert not asked & {"other.test", "wild.test", "6578666974.evil.test"}, log
    assert not {n for n in asked if n.startswith("direct")}, log
    assert r["tunnel"] == "gaierror" and r["tunnel_after_rewrite"] == "gaierror", r
    assert r["direct_dns_udp"] == "rcode=3 answers=0" and r["direct_dns_tcp"] == "rcode=3 answers=0", r
    assert r["raw_ip_after_rewrite"] == r["raw_ip"], r
    # UDP to unlisted destinations (also crafted by root with a raw socket) never arrives.
    assert "udp-control" in log, log  # the unrestricted box's datagrams do arrive
    for tag in ("udp-other", "udp-allowed-host-other-port", "raw-udp-other"):
        assert tag not in log, (tag, log)
    assert int(r["cap_eff"], 16) & (1 << 13), r  # box root had CAP_NET_RAW and still got nowhere
    # The same network lets an unrestricted box through: the refusals are the allow-list's.
    assert r["control_raw_ip"] == "web-other", r
    # No box reaches the cloud metadata service (link-local), which the host itself reaches.
    assert r["host_imds"] == "imds", r
    assert r["control_imds"] in ("ConnectionRefusedError", "ConnectionResetError", "TimeoutError"), r
    assert r["control_imds6"] not in ("imds6",), r
    # A public-only box reaches public addresses, not the host's private networks (DNS still works).
    pub = r["public_only"]
    assert r["public_only_info"] is True and pub["public"] == "web-public" and pub["dns"] == "10.77.0.3", r
    assert pub["private"] in ("ConnectionRefusedError", "ConnectionResetError", "TimeoutError"), r
    assert pub["private6"] not in ("web6-other",), r
    # The proxy survives garbage, floods and stalled connections (malformed queries: REFUSED).
    assert r["after_abuse_udp"] == "rcode=0 answers=1" and r["after_abuse_tcp"] == "rcode=0 answers=1", r
    assert r["abuse_answers"] == ["rcode=5"], r
    assert r["info_allow_net"] == ["allowed.test:80", "*.wild.test", "[fd77::3]:80", "allowed6.test", "10.77.0.9"], r
    assert r["published"] == "hello-from-box", r
    # A stopped box leaves no rules behind.
    assert "chain b" not in r["rules_after_stop"], r["rules_after_stop"]
    if engine == "namespace":  # slirp (the VM engine's network) has no IPv6 at all
        assert r["v6_allowed"] == "web6-allowed", r
        assert r["v6_by_name"] == ["fd77::3"], r


def test_allow_net_entries_are_validated() -> None:
    import boxlite
    from boxlite.engines.net import allowlist

    entries = allowlist.parse(["API.example.com", "*.example.org:443", "10.0.0.0/8", "[fd00::1]:80", "1.2.3.4:53"])
    assert [e.spec() for e in entries] == [
        "api.example.com",
        "*.example.org:443",
        "10.0.0.0/8",
        "[fd00::1]:80",
        "1.2.3.4:53",
    ]
    for bad in ("", "*", "a..b", "10.0.0.1/8", "host:0", "host:70000", "ex ample.com", "*.*.x", "[::1", "a/b",
                "169.254.169.254", "169.254.0.0/16", "fe80::1", "[fd00:ec2::254]:80"):  # fmt: skip
        with pytest.raises(boxlite.ConfigError):
            allowlist.parse([bad])
    with pytest.raises(boxlite.ConfigError):
        allowlist.parse([f"h{i}.test" for i in range(allowlist.MAX_ENTRIES + 1)])
    opts = boxlite.BoxOptions(network=boxlite.NetworkSpec(mode="disabled", allow_net=["a.test"]))
    with pytest.raises(boxlite.ConfigError):
        opts.to_config()
    assert [e.spec() for e in allowlist.parse(["0.0.0.0/0", "::/0"])] == ["0.0.0.0/0", "::/0"]  # wider: fine
    config = boxlite.BoxOptions(network=boxlite.NetworkSpec(allow_net=["A.test"])).to_config()
    assert config.allow_net == ("a.test",)
    assert type(config).from_json(config.to_json()).allow_net == ("a.test",)  # kept across restarts


def test_dns_proxy_parser_rejects_hostile_messages() -> None:
    """What the proxy reads (the box's queries, upstream's answers) is checked before use."""
    from boxlite.engines.net import dnsproxy as d

    def q(name: bytes, qid: int = 1) -> bytes:
        return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + b"\0\0\1\0\1"

    good = q(b"\x07allowed\x04test")
    assert d.question(good)[:2] == ("allowed.test", 1)
    for bad in (q(b"\x0callowed.test"), q(b"\xc0\x0c"), q(b"\x3fa"), good[:14], b"\0" * 12):
        with pytest.raises(d.BadMessage):
            d.question(bad)
    answer = good[:2] + b"\x81\x80\0\1\0\1\0\0\0\0" + good[12:] + b"\xc0\x0c\0\1\0\1\0\0\0\x1e\0\4\x0a\x4d\0\2"
    assert d.addresses(good, answer) == [(4, socket.inet_aton("10.77.0.2"), 30)]
    with pytest.raises(d.BadMessage):  # an answer to another id
        d.addresses(q(b"\x07allowed\x04test", 2), answer)
    with pytest.raises(d.BadMessage):  # an answer to another question
        d.addresses(q(b"\x05other\x04test"), answer[:2] + answer[2:])
    with pytest.raises(d.BadMessage):  # a record running past the end
        d.addresses(good, answer[:-2])
    assert d.reply(q(b"\x05other\x04test"), d.NXDOMAIN)[3] & 15 == d.NXDOMAIN


CLAIMS = """
import json, subprocess, tempfile
from pathlib import Path
from boxlite.engines.net import allowlist
from boxlite.errors import NetworkError
allowlist.GID_SLOTS = 2  # two slots: the third box must not share one
dirs = [Path(tempfile.mkdtemp()) for _ in range(3)]
gids = [allowlist.claim_gid(d) for d in dirs[:2]]
try:
    allowlist.claim_gid(dirs[2])
    third = "claimed"
except NetworkError as e:
    third = str(e)
again = allowlist.claim_gid(dirs[0])  # a restart frees its own old slot first
allowlist.release(dirs[1])
fourth = allowlist.claim_gid(dirs[2])
listing = subprocess.run(["nft", "list", "map", "inet", "boxlite_allow", "boxes"], capture_output=True, text=True)
print(json.dumps({"gids": gids, "third": third, "again": again, "fourth": fourth, "map": listing.stdout}))
"""


def test_helper_groups_are_claimed_once() -> None:
    """Concurrent allow-listed boxes never share a helper group (and so never each other's rules)."""
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", CLAIMS], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert len(set(r["gids"])) == 2, r
    assert "no free helper group" in r["third"], r
    assert r["again"] == r["gids"][0] and r["fourth"] == r["gids"][1], r
    assert r["map"].count("jump b") == 2, r
