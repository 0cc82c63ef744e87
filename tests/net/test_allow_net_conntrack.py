"""An allow-listed box's helper cannot ride another socket's conntrack entry to an unlisted DNS server.

The DNS proxy asks upstream from a new socket per query; when one closes, its conntrack entry
(un-redirected, established) lingers ~30 s. A helper socket that gets the same source port (the
kernel's ephemeral choice, or a hostile box spraying new flows) and sends to the same resolver
matches that entry: NAT is not consulted again, so the redirect to the proxy is skipped, and the
box chain's "established" rule let it through. The box chain now refuses any helper packet still
bound for port 53 after NAT. Runs as root in a network namespace of its own (``unshare -n``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from boxlite.engines.net import allowlist

SETUP = r"""
import json, os, socket, subprocess, sys, time
from boxlite.engines.net import allowlist

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
GID, SERVER, PORT = allowlist.GID_BASE + 7, ("127.0.0.53", 53), 40053
proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
proxy.bind(("127.0.0.1", 0))
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(SERVER)
for s in (proxy, server):
    s.settimeout(1)
script = "\n".join([
    allowlist.base_script(),
    *allowlist.box_objects(GID),
    f"add element inet {allowlist.TABLE} boxes {{ {GID} : jump {allowlist.chain_name(GID)} }}",
]) + "\n" + allowlist.box_rules(GID, [], proxy.getsockname()[1])
subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

def send(tag, gid, port):
    pid = os.fork()
    if pid == 0:
        try:
            if gid:
                os.setgroups([]); os.setresgid(gid, gid, gid)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            s.sendto(tag, SERVER)
            s.settimeout(1)
            try:
                s.recv(100)
            except OSError:
                pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

def heard(sock):
    got = []
    try:
        while True:
            data, peer = sock.recvfrom(100)
            got.append(data.decode())
            sock.sendto(b"reply", peer)
    except OSError:
        return got

"""
"""A helper group's chain as a box's DNS proxy installs it, a stand-in proxy and resolver, and
``send(tag, gid, port)``: one datagram to the resolver from ``port`` in group ``gid`` (0: a host
process), waiting 1 s for a reply; ``heard(sock)``: what reached ``sock``, each answered."""

SCENARIO = (
    SETUP
    + r"""
r = {}
send(b"host", 0, PORT)  # a host socket (the proxy's upstream query): un-redirected, answered, closed
r["server_host"] = heard(server)
send(b"leak", GID, PORT)  # the box's helper, same port, same server: must not get there
r["server_helper"] = heard(server)
send(b"fresh", GID, PORT + 1)  # a fresh flow of the helper: redirected to its proxy
r["proxy"] = heard(proxy)
print(json.dumps(r))
"""
)


@pytest.mark.namespace_only
def test_a_helper_reusing_a_lingering_dns_flow_is_refused(engine: str) -> None:
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["server_host"] == ["host"], r  # the setup: the host's own flow is untouched
    assert r["proxy"] == ["fresh"], r  # the redirect works for a new flow
    assert r["server_helper"] == [], r  # the lingering entry is no way out


LEFTOVER = (
    SETUP
    + r"""
r = {}
send(b"box", GID, PORT)  # the box's lookup through its helper: redirected to its proxy, answered
r["proxy_box"] = heard(proxy)
time.sleep(float(sys.argv[1]))  # the helper closed that socket (slirp: 10 s after a DNS query)
send(b"host", 0, PORT)  # a host process given the same port asks the same resolver
r["server_host"], r["proxy_host"] = heard(server), heard(proxy)
print(json.dumps(r))
"""
)


@pytest.mark.namespace_only
def test_a_boxs_finished_dns_flow_does_not_catch_a_host_lookup(engine: str) -> None:
    """The redirect of a box's DNS flow to its proxy is NAT, kept in the flow's conntrack entry for
    as long as the entry lives (30 s by default for UDP). A host process that got the same source
    port after the box's helper closed it (slirp closes a DNS socket 10 s after its query; a stopped
    box's pasta closes them all), asking the same resolver, continued that entry: its lookups went
    to the box's proxy, which answers by the box's allow-list (a hostile box spraying DNS from many
    ports could make the host's own lookups fail). The entries of redirected DNS now expire a few
    seconds after their last packet (``allowlist.DNS_FLOW_IDLE``)."""
    wait = allowlist.DNS_FLOW_IDLE + 1
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", LEFTOVER, str(wait)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["proxy_box"] == ["box"], r
    assert r["server_host"] == ["host"] and r["proxy_host"] == [], r
