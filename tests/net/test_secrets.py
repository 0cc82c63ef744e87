"""Issue 12: secret placeholders. A box's HTTP(S) to the hosts a secret lists reaches them with the
real value in place of the placeholder; to other hosts the placeholder passes unchanged; hostile
clients do not hurt the proxy.

A private "internet" (tests never send traffic anywhere else): this file runs itself as a script
under ``unshare -n -m``. That namespace plays the host (its /etc/hosts names listed.test 10.77.0.2
and other.test 10.77.0.3); a second namespace behind a veth holds both, each with an HTTP (80) and
an HTTPS (443, certificate of a test CA) server that logs every request it gets and answers
``seen <n> bytes``. The "box" side here is a client process in the box's helper group, as the
box's pasta/QEMU is: the same nftables redirect sends its flows to the secret proxy.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from support import privnet

HOSTS = {"listed.test": "10.77.0.2", "other.test": "10.77.0.3"}
VALUE = "sk-real-7f3a9c1e5b"
PLACEHOLDER = "<BOXLITE_SECRET:api>"


# --- the remote hosts ----------------------------------------------------------------------------


def make_test_ca(home: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test internet CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "listed.test")]))
        .issuer_name(name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (home / "upstream-ca.pem").write_bytes(ca.public_bytes(pem))
    (home / "upstream.pem").write_bytes(
        leaf.public_bytes(pem)
        + leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def echo_server(addr: str, port: int, log: Path, tls: ssl.SSLContext | None) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    lock = threading.Lock()

    def one(conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n")[0]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(data) - len(head) - 4 < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            with lock, open(log, "a") as f:
                f.write(json.dumps({"server": f"{addr}:{port}", "request": data.decode(errors="replace")}) + "\n")
            body = b"seen %d bytes" % len(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def remote_main(home: str) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(Path(home) / "upstream.pem"))

    def start() -> None:
        for addr in HOSTS.values():
            echo_server(addr, 80, Path(home) / "remote.log", None)
            echo_server(addr, 443, Path(home) / "remote.log", tls)

    privnet.when_addresses_exist(start)
    time.sleep(900)


def build_internet(home: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "remote", str(home)]
    return privnet.build_internet(argv, remote=[f"{a}/24" for a in HOSTS.values()])


# --- the "box" side: a client in the box's helper group ------------------------------------------

CLIENT = r"""
import json, socket, ssl, sys, time
PH = sys.argv[1]
box_ca, upstream_ca = sys.argv[2], sys.argv[3]
r = {}
def request(host, port, tls_ca=None, extra=b"", body=None):
    body = ("token=" + PH).encode() if body is None else body
    head = (f"POST /x?k={PH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PH}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n").encode() + extra + b"\r\n"
    try:
        s = socket.create_connection((host, port), timeout=15)
        s.settimeout(15)
        if tls_ca:
            s = ssl.create_default_context(cafile=tls_ca).wrap_socket(s, server_hostname=host)
        s.sendall(head + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").split("\r\n")[0]
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__ + ": " + str(e)[:100]
r["http_listed"] = request("listed.test", 80)
r["https_listed"] = request("listed.test", 443, box_ca)
r["http_other"] = request("other.test", 80)
r["https_other"] = request("other.test", 443, upstream_ca)
# The box's CA is good for the listed names only: other.test is not intercepted, so a client
# trusting only the box CA fails there (its certificate is the real server's).
r["https_other_box_ca"] = request("other.test", 443, box_ca)
# A listed SNI with another Host is refused; a body over the cap passes unchanged.
s = socket.create_connection(("listed.test", 443), timeout=15)
s = ssl.create_default_context(cafile=box_ca).wrap_socket(s, server_hostname="listed.test")
s.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
r["sni_host_mismatch"] = s.recv(200).decode().split("\r\n")[0]
s = socket.create_connection(("listed.test", 80), timeout=15)
b = ("token=" + PH).encode()
s.sendall(b"POST /expect HTTP/1.1\r\nHost: listed.test\r\nExpect: 100-continue\r\n"
          + f"Content-Length: {len(b)}\r\n\r\n".encode())
s.settimeout(5)
first = s.recv(100).split(b"\r\n")[0]
s.sendall(b)
data = b""
while chunk := s.recv(65536):
    data += chunk
r["expect"] = (first + b"|" + data.split(b"\r\n")[0]).decode()
big = ("A" * (2 * 1024 * 1024) + PH).encode()
r["big_body"] = request("listed.test", 80, body=big)
# Hostile: an oversized head, stalled connections beyond the proxy's slots, a slow dribble.
r["huge_head"] = request("listed.test", 80, extra=b"X-Pad: " + b"p" * 100000 + b"\r\n")
stalled = [socket.create_connection(("listed.test", 80), timeout=15) for _ in range(80)]
time.sleep(12)  # the proxy's first-bytes deadline frees the stalled connections' slots
r["after_stall"] = request("listed.test", 80)
for s in stalled:
    s.close()
print("CLIENT " + json.dumps(r))
"""


def local_port(pid: int) -> int:
    """The TCP port process ``pid`` listens on (its only listening socket)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:
            return int(f[1].split(":")[1], 16)
    raise AssertionError("the proxy listens nowhere")


def scenario_main(home_s: str) -> None:
    from boxlite.engines.net import allowlist

    home = Path(home_s)
    privnet.bind_file("/etc/hosts", "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in HOSTS.items()), home)
    make_test_ca(home)
    (home / "remote.log").touch()
    remote = build_internet(home)
    box_dir = home / "box"
    box_dir.mkdir()
    proxy = None
    try:
        gid = allowlist.claim_gid(box_dir)
        secrets: list[dict[str, Any]] = [
            {"name": "api", "value": VALUE, "hosts": ["listed.test"], "placeholder": PLACEHOLDER},
            {"name": "unused", "value": "never-sent", "hosts": ["nowhere.test"], "placeholder": "<BOXLITE_SECRET:u>"},
        ]
        argv, _ = allowlist.secret_proxy_command(box_dir, gid, secrets, allow_listed=False)
        conf = json.loads(allowlist.secret_conf(box_dir).read_text())
        conf["upstream_cafile"] = str(home / "upstream-ca.pem")  # the test internet's CA
        allowlist.secret_conf(box_dir).write_text(json.dumps(conf))

        def in_group() -> None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)

        proxy = subprocess.Popen(argv, stdout=subprocess.PIPE, preexec_fn=in_group)
        assert proxy.stdout is not None and proxy.stdout.readline().startswith(b"ready ")
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in box_dir.iterdir()}
        port = local_port(proxy.pid)
        local = "nothing"
        try:  # a host process (not redirected from the box) talking to the proxy directly
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /local HTTP/1.1\r\nHost: listed.test\r\n\r\n")
                s.settimeout(15)
                local = s.recv(100).decode(errors="replace") or "closed"
        except OSError as e:
            local = type(e).__name__
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, PLACEHOLDER, str(box_dir / "secrets-ca.pem"), str(home / "upstream-ca.pem")],
            capture_output=True,
            text=True,
            timeout=240,
            preexec_fn=in_group,
        )
        lines = [x for x in client.stdout.splitlines() if x.startswith("CLIENT ")]
        assert lines, client.stdout + client.stderr
        report = json.loads(lines[-1][len("CLIENT ") :])
        report["modes"] = modes
        report["local"] = local
        report["proxy_alive"] = proxy.poll() is None
        report["proxy_ids"] = [
            line.split()[1:]
            for line in Path(f"/proc/{proxy.pid}/status").read_text().splitlines()
            if line[:4] in ("Uid:", "Gid:")
        ]
        report["gid"] = gid
        allowlist.release(box_dir)
        listing = subprocess.run(["nft", "list", "table", "inet", "boxlite_allow"], capture_output=True, text=True)
        report["rules_after_release"] = listing.stdout
        report["remote_log"] = [json.loads(x) for x in (home / "remote.log").read_text().splitlines()]
    finally:
        if proxy is not None:
            proxy.kill()
        remote.kill()
    privnet.print_report(report)


BOX_PROBE = r"""
import json, os, socket, ssl, sys, time
PH = os.environ["BOXLITE_SECRET_API"]
TAG = sys.argv[1]
with open("/etc/hosts", "a") as f:
    f.write("10.77.0.2 listed.test\n10.77.0.3 other.test\n")
r = {"env_placeholder": PH, "ssl_cert_file": os.environ.get("SSL_CERT_FILE")}
def request(host, port, tls=None):
    body = ("token=" + PH).encode()
    head = (f"POST /x?tag={TAG}&k={PH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PH}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        s = socket.create_connection((host, port), timeout=20)
        s.settimeout(20)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=host)
        s.sendall(head + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").split("\r\n")[0]
    except (OSError, ssl.SSLError) as e:
        return type(e).__name__ + ": " + str(e)[:100]
MARKER = "boxlite-secret-probe-7"
r["http_listed"] = request("listed.test", 80)
r["https_listed"] = request("listed.test", 443, ssl.create_default_context())  # the box's trust store
r["http_other"] = request("other.test", 80)
r["https_other"] = request("other.test", 443, ssl._create_unverified_context())
with open("/tmp/probe-done", "w") as f:
    json.dump(r, f)
deadline = time.time() + (240 if TAG == MARKER else 0)
while not os.path.exists("/tmp/probe-release") and time.time() < deadline:
    time.sleep(0.2)
print("PROBE " + json.dumps(r))
"""
MARKER = "boxlite-secret-probe-7"


def box_pids(marker_pid: int) -> list[str]:
    """Every process of a namespace box (the PID namespace of ``marker_pid``)."""
    pidns = os.readlink(f"/proc/{marker_pid}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and os.readlink(f"/proc/{entry}/ns/pid") == pidns:
                pids.append(entry)
    return pids


def box_memory_report(pids: list[str]) -> dict[str, Any]:
    """From the host: the environ and readable memory of ``pids`` (a namespace box's processes,
    or a VM box's QEMU, whose memory holds the guest's RAM), searched for the real value."""
    out: dict[str, Any] = {"procs": 0, "env_hits": [], "mem_hits": [], "env_placeholder": 0, "mem_placeholder": set()}
    for entry in pids:
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        out["procs"] += 1
        out["env_placeholder"] += PLACEHOLDER.encode() in environ
        if VALUE.encode() in environ:
            out["env_hits"].append(entry)
        with open(f"/proc/{entry}/maps") as maps, open(f"/proc/{entry}/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                if "r" not in fields[1]:
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if end - start > 1 << 30:
                    continue
                try:
                    mem.seek(start)
                    data = mem.read(end - start)
                except (OSError, ValueError, OverflowError):
                    continue
                if VALUE.encode() in data:
                    out["mem_hits"].append(f"{entry} {fields[-1]}")
                if PLACEHOLDER.encode() in data:  # the search does find what is there
                    out["mem_placeholder"].add(entry)
    out["mem_placeholder"] = len(out["mem_placeholder"])
    return out


def disk_hits(box_dir: Path) -> list[str]:
    """Files of the box dir holding the value (the proxy's own config excepted); disk images
    are read where they hold data only (they are sparse)."""
    hits = []
    for dirpath, _, files in os.walk(box_dir):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file() or name == "secretproxy.json":
                continue
            with contextlib.suppress(OSError), open(path, "rb") as f:
                end, pos = os.fstat(f.fileno()).st_size, 0
                while pos < end:
                    try:
                        pos = os.lseek(f.fileno(), pos, os.SEEK_DATA)
                        hole = os.lseek(f.fileno(), pos, os.SEEK_HOLE)
                    except OSError:  # no data after pos
                        break
                    f.seek(pos)
                    while pos < hole:  # overlapping windows: a match across a boundary is seen
                        data = f.read(min(64 << 20, hole - pos) + len(VALUE))
                        if VALUE.encode() in data:
                            hits.append(str(path))
                            pos = end
                            break
                        pos += min(64 << 20, hole - pos)
                        f.seek(pos)
    return hits


def helpers_stdout(box_dir: str) -> dict[str, str]:
    """What fd 1 of the box's DNS and secret proxies is: never free for a socket to take."""
    out = {}
    for pid in (e for e in os.listdir("/proc") if e.isdigit()):
        cmdline = _cmdline(pid).decode(errors="replace")
        for helper in ("secretproxy", "dnsproxy"):
            if helper in cmdline and box_dir in cmdline:
                try:
                    out[helper] = os.readlink(f"/proc/{pid}/fd/1")
                except OSError as e:
                    out[helper] = type(e).__name__
    return out


async def box_probe(engine: str, rootfs: str, home: Path) -> dict[str, Any]:
    import asyncio

    import boxlite
    from boxlite.layout import BoxLayout

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home / "rt"), engine=engine))
    try:
        secret = boxlite.Secret("api", VALUE, ["listed.test"])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, secrets=[secret], memory_mib=512) as box:
            task = asyncio.create_task(box.exec("python3", "-c", BOX_PROBE, MARKER, timeout=300))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not task.done():  # the probe made its requests and waits
                if (await box.exec("test", "-f", "/tmp/probe-done")).exit_code == 0:
                    break
                await asyncio.sleep(0.5)
            assert not task.done(), (await task).stdout + (await task).stderr
            box_dir = rt.home.boxes_dir / box.box.id
            if engine == "vm":
                pids = [BoxLayout(box_dir).qemu_pid.read_text().split()[0]]
            else:
                marker = [e for e in os.listdir("/proc") if e.isdigit() and MARKER.encode() in _cmdline(e)]
                pids = box_pids(int(marker[0]))
            report: dict[str, Any] = {"memory": box_memory_report(pids)}
            await box.exec("touch", "/tmp/probe-release")
            r = await task
            lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
            assert lines, r.stdout + r.stderr
            report.update(json.loads(lines[-1][len("PROBE ") :]))
            report["disk_hits"] = disk_hits(box_dir)
            report["proxy_conf_mode"] = oct((box_dir / "secretproxy.json").stat().st_mode & 0o777)
        # With an allow-list too: the listed host (its address allowed) still gets the value; the
        # pass-through to a host the list does not allow is refused like any other flow of the box.
        spec = boxlite.NetworkSpec(allow_net=["10.77.0.2"])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, secrets=[secret], network=spec) as box:
            r = await box.exec("python3", "-c", BOX_PROBE, "allowlisted", timeout=240)
            lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
            assert lines, r.stdout + r.stderr
            report["allowlisted"] = json.loads(lines[-1][len("PROBE ") :])
            report["helpers_stdout"] = helpers_stdout(str(rt.home.boxes_dir / box.box.id))
    finally:
        await rt.shutdown(timeout=2)
    return report


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def box_scenario_main(engine: str, home_s: str, rootfs: str) -> None:
    import asyncio

    home = Path(home_s)
    privnet.bind_file("/etc/hosts", "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in HOSTS.items()), home)
    privnet.bind_file("/etc/resolv.conf", "nameserver 10.77.0.254\n", home)  # pasta wants one; the box: /etc/hosts
    make_test_ca(home)
    os.environ["SSL_CERT_FILE"] = str(home / "upstream-ca.pem")  # the proxy's upstream trust: the test CA
    (home / "remote.log").touch()
    remote = build_internet(home)
    try:
        report = asyncio.run(box_probe(engine, rootfs, home))
        report["remote_log"] = [json.loads(x) for x in (home / "remote.log").read_text().splitlines()]
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    if sys.argv[1] == "remote":
        remote_main(sys.argv[2])
    elif sys.argv[1] == "box":
        box_scenario_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        scenario_main(sys.argv[2])
    sys.exit(0)


# --- the tests -----------------------------------------------------------------------------------


def test_secret_proxy_substitutes_for_listed_hosts_only(tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", str(tmp_path)])
    seen: dict[str, list[str]] = {}
    for entry in r["remote_log"]:
        seen.setdefault(entry["server"], []).append(entry["request"])
    for key in ("http_listed", "https_listed", "http_other", "https_other", "big_body", "after_stall"):
        assert r[key] == "HTTP/1.1 200 OK", (key, r)
    # Listed host, HTTP and HTTPS: the real value in the request line, a header and the body.
    for server in ("10.77.0.2:80", "10.77.0.2:443"):
        first = seen[server][0]
        assert f"k={VALUE}" in first and f"Bearer {VALUE}" in first and f"token={VALUE}" in first, first
        assert PLACEHOLDER not in first and "never-sent" not in first, first
    # Other hosts: the placeholder, unchanged, and never the value.
    for server in ("10.77.0.3:80", "10.77.0.3:443"):
        assert seen[server], r
        for req in seen[server]:
            assert VALUE not in req and f"Bearer {PLACEHOLDER}" in req, req
    assert "CERTIFICATE_VERIFY_FAILED" in r["https_other_box_ca"], r
    assert r["sni_host_mismatch"] == "HTTP/1.1 421 Misdirected Request", r
    # A body over the cap passes unchanged (placeholder kept, no value); an oversized head: 431.
    big = [req for req in seen["10.77.0.2:80"] if len(req) > 1024 * 1024]
    assert big and PLACEHOLDER in big[0][-100:] and VALUE not in big[0][-100:], r
    assert r["huge_head"] == "HTTP/1.1 431 Request Header Fields Too Large", r
    # Expect: 100-continue is answered by the proxy (the body it waits for is then substituted).
    assert r["expect"] == "HTTP/1.1 100 Continue|HTTP/1.1 200 OK", r
    expect = [q for q in seen["10.77.0.2:80"] if q.startswith("POST /expect")]
    assert expect and expect[0].endswith(f"token={VALUE}") and "Expect" not in expect[0], expect
    assert r["proxy_alive"], r
    # The proxy reads the box's bytes without root: its own uid, the box's helper group.
    uid = str(allowlist_uid())
    assert r["proxy_ids"] == [[uid] * 4, [str(r["gid"])] * 4], r
    # A host process connecting to the proxy directly gets nothing sent anywhere.
    assert r["local"] in ("closed", "ConnectionResetError"), r
    assert not [q for q in seen["10.77.0.2:80"] if "/local" in q], r
    # Keys on the host only, and only the owner can read them; the box's CA key is not kept.
    assert r["modes"]["secretproxy.json"] == "0o600" and r["modes"]["secrets-leaf.key"] == "0o600", r
    assert not [n for n in r["modes"] if n.endswith(".key") and "ca" in n], r
    assert "10.77.0.2:80" in seen and "secretports" in r["rules_after_release"]
    assert "chain b" not in r["rules_after_release"], r["rules_after_release"]


def test_secret_proxy_parsers() -> None:
    from boxlite.engines.net import secretproxy as sp

    assert sp.host_matches(["*.example.com"], "a.example.com") and not sp.host_matches(["*.example.com"], "example.com")
    assert not sp.host_matches(["api.test"], "evilapi.test")
    assert sp.host_header(b"GET / HTTP/1.1\r\nHOST: Api.Test:8080") == "api.test"
    assert sp.host_header(b"GET / HTTP/1.1\r\nHost: a b") is None
    subs = [(b"<P>", b"v")]
    head = b"POST /<P> HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX: <P>"
    out = sp.rewrite_head(head + b"\r\nExpect: 100-continue", subs, 1)
    assert out == b"POST /v HTTP/1.1\r\nHost: h\r\nX: v\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
    assert sp.expects_continue(b"P / H\r\nExpect: 100-Continue") and not sp.expects_continue(b"P / H\r\nX: y")
    for bad in (b"P / H\r\nContent-Length: 1\r\nContent-Length: 2", b"P / H\r\nContent-Length: -1"):
        with pytest.raises(ValueError):
            sp.content_length(bad)
    with pytest.raises(ValueError):
        sp.content_length(b"P / H\r\nContent-Length: 1\r\nTransfer-Encoding: chunked")
    assert sp.sni_of(b"GET /") is None
    with pytest.raises(ValueError):
        sp.sni_of(b"\x16\x03\x01\x40\x00" + b"\x01" * 10)


def test_box_sees_placeholders_only(engine: str, python_rootfs: Path, tmp_path: Path) -> None:
    """A box with a secret: the listed host gets the value over HTTP and HTTPS (the box trusts
    its CA through its bundle), other hosts the placeholder, and the value is nowhere in the box:
    not in its processes' environ or memory (read from the host: a namespace box's processes, a
    VM box's QEMU, which holds the guest's RAM), not on its disk (its dir, disk images included)."""
    r = privnet.run_scenario(__file__, ["box", engine, str(tmp_path), str(python_rootfs)], timeout=900)
    for key in ("http_listed", "https_listed", "http_other", "https_other"):
        assert r[key] == "HTTP/1.1 200 OK", (key, r)
    assert r["env_placeholder"] == PLACEHOLDER and r["ssl_cert_file"] == "/etc/ssl/certs/ca-certificates.crt", r
    seen: dict[str, list[str]] = {}
    for entry in r["remote_log"]:
        seen.setdefault(entry["server"], []).append(entry["request"])
    for server in ("10.77.0.2:80", "10.77.0.2:443"):
        assert f"Bearer {VALUE}" in seen[server][0] and f"token={VALUE}" in seen[server][0], seen
    for server in ("10.77.0.3:80", "10.77.0.3:443"):
        assert f"Bearer {PLACEHOLDER}" in seen[server][0] and VALUE not in seen[server][0], seen
    a = r["allowlisted"]
    assert a["http_listed"] == "HTTP/1.1 200 OK" and a["https_listed"] == "HTTP/1.1 200 OK", a
    assert a["http_other"] != "HTTP/1.1 200 OK" and a["https_other"] != "HTTP/1.1 200 OK", a
    tagged = [e for e in r["remote_log"] if "tag=allowlisted" in e["request"]]
    assert sorted(e["server"] for e in tagged) == ["10.77.0.2:443", "10.77.0.2:80"], r["remote_log"]
    assert all(f"Bearer {VALUE}" in e["request"] for e in tagged), tagged
    assert r["helpers_stdout"] == {"secretproxy": "/dev/null", "dnsproxy": "/dev/null"}, r["helpers_stdout"]
    mem = r["memory"]
    assert mem["mem_placeholder"] >= 1, mem  # the search does find what the box holds
    if engine == "namespace":  # the box's own processes (a VM's are inside QEMU's memory)
        assert mem["procs"] >= 2 and mem["env_placeholder"] >= 1, mem
    assert mem["env_hits"] == [] and mem["mem_hits"] == [], mem
    assert r["disk_hits"] == [] and r["proxy_conf_mode"] == "0o600", r


def allowlist_uid() -> int:
    from boxlite.engines.net import allowlist

    return allowlist.SECRET_UID
