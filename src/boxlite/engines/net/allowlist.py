"""Egress allow-lists (``NetworkSpec(allow_net=[...])``): parsing, per-box helper groups, nft rules.

Enforcement is in the host's network namespace, on the sockets of the box's network helper
(pasta or QEMU's slirp), which a box cannot reach: see docs/network.md. Each allow-listed box's
helper runs in a group of its own (:func:`claim_gid`, a range no box or host uses); one table,
``inet boxlite_allow``, sends that group's packets to the box's chain (a verdict map keyed by
group id) and redirects its DNS, to any address, to the box's DNS proxy
(:mod:`.dnsproxy`, a host process), which answers only allowed names and adds their addresses
to the box's sets before the answer reaches the box. The box's chain accepts replies, the
proxy, the sets and the literal networks, and rejects everything else (TCP, UDP, ICMP; IPv4
and IPv6). The host guard (:mod:`.hostguard`) still applies on top: no entry reaches the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, NetworkError
from . import hostguard

TABLE = "boxlite_allow"
MAX_ENTRIES = 64
"""Entries per box (each literal network becomes a rule)."""
GID_BASE = hostguard.ALLOW_GID_BASE
GID_SLOTS = hostguard.ALLOW_GID_SLOTS
MAX_CLAIM_TRIES = 512
MAX_SET = 16384
"""Addresses a box's DNS lookups may have open at once, per set (full: lookups get SERVFAIL)."""
UDP_FLOW_IDLE = 180
"""Seconds a UDP flow a box's chain let through stays known without a datagram (conntrack
forgets a UDP flow after 120 s at most)."""
SECRET_UID = 0x6FFFFFFF
"""User id the secret proxies (:mod:`.secretproxy`) drop to once set up (no host process or box
uses it): the redirect skips their own connections by it; every other rule of the box's group
still applies to them."""
BOX_EPHEMERAL_PORTS = (32768, 60999)
"""The source ports a box's sockets get unless they bind one (its network namespace's
``ip_local_port_range``, the kernel's default, pinned by the namespace engine). pasta keeps a
box's UDP source port on the host; slirp (VM boxes) takes ports of the host's own range."""
DNS_FLOW_IDLE = 6
"""Seconds the conntrack entry of an allow-list helper's UDP DNS flow outlives its last packet
(the kernel's default: 30, up to 120). The entry holds the flow's redirect to the box's proxy: a
host socket later given the same port, asking the same resolver, continued it into that proxy
(slirp closes a DNS socket 10 s after its query, a stopped box's pasta all of its sockets). Above
the proxy's upstream deadline (4 s), so a slow answer still finds its way back."""
_dns_flow_idle = True
"""False once nft refused the timeout policy (a kernel without ``nfnetlink_cttimeout``)."""
MIN_UPSTREAM_PORTS = 1024
"""The fewest ports :func:`upstream_ports` settles for (with the query id: > 26 bits a forged
answer must guess)."""
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True)
class Entry:
    """One allow-list entry: ``kind`` "name" (exact host), "wildcard" (``*.suffix``: any name
    below suffix, not suffix itself) or "net" (an IP address or CIDR); ``port`` None = any."""

    kind: str
    value: str
    port: int | None = None

    def spec(self) -> str:
        host = f"*.{self.value}" if self.kind == "wildcard" else self.value
        if self.port is None:
            return host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse(entries: object) -> tuple[Entry, ...]:
    """Parse and normalise ``allow_net``; raises :class:`ConfigError` for anything else."""
    if isinstance(entries, str):
        entries = [e for e in entries.split(",") if e.strip()]
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"allow_net must be a list of strings, got {type(entries).__name__}")
    if len(entries) > MAX_ENTRIES:
        raise ConfigError(f"allow_net takes at most {MAX_ENTRIES} entries, got {len(entries)}")
    out: list[Entry] = []
    for raw in entries:
        entry = parse_entry(raw)
        if entry not in out:
            out.append(entry)
    return tuple(out)


def _never_reachable(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether the host guard refuses every address of ``net`` (a wider network that merely
    contains them, e.g. ``0.0.0.0/0``, is accepted: its other addresses are reachable)."""
    refused = (
        [ipaddress.IPv4Network("169.254.0.0/16")]
        if net.version == 4
        else [ipaddress.IPv6Network("fe80::/10"), ipaddress.IPv6Network(f"{hostguard.METADATA6}/128")]
    )
    return any(net.subnet_of(r) for r in refused)  # type: ignore[arg-type]


def parse_entry(raw: object) -> Entry:
    """``host``, ``*.domain``, ``IP``, ``CIDR``, each optionally with ``:port`` (IPv6 in brackets)."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 300:
        raise ConfigError(f"allow_net entry must be a non-empty string, got {raw!r}")
    text = raw.strip().lower()
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :] if close > 0 else "?"
        if close < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"allow_net entry {raw!r}: expected [IPv6]:port")
        host, port = text[1:close], _port(rest[1:], raw) if rest else None
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, raw)
    try:
        net = ipaddress.ip_network(host, strict=True)
    except ValueError as e:
        if "/" in host or ":" in host or host.replace(".", "").isdigit():
            raise ConfigError(f"allow_net entry {raw!r} is not a valid address or network: {e}") from None
    else:
        if _never_reachable(net):
            raise ConfigError(
                f"allow_net entry {raw!r}: link-local addresses and the cloud metadata service's are never "
                "reachable from a box (docs/network.md)"
            )
        single = net.prefixlen == net.max_prefixlen
        return Entry("net", str(net.network_address) if single else str(net), port)
    kind = "name"
    if host.startswith("*."):
        kind, host = "wildcard", host[2:]
    host = host.rstrip(".") if host.endswith(".") and not host.endswith("..") else host
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"allow_net entry {raw!r} is not a hostname, *.domain, IP address or CIDR")
    return Entry(kind, host, port)


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"allow_net entry {raw!r}: port must be 1-65535")
    return int(text)


def matching_ports(entries: tuple[Entry, ...] | list[Entry], name: str) -> tuple[bool, set[int]] | None:
    """For a queried ``name``: None if no entry allows it, else (any port?, the listed ports)."""
    name = name.lower().rstrip(".")
    hit, any_port, ports = False, False, set()
    for e in entries:
        if (e.kind == "name" and name == e.value) or (e.kind == "wildcard" and name.endswith("." + e.value)):
            hit = True
            if e.port is None:
                any_port = True
            else:
                ports.add(e.port)
    return (any_port, ports) if hit else None


# --- nftables ----------------------------------------------------------------------------------


def chain_name(gid: int) -> str:
    return f"b{gid}"


def base_script(dns_flow_idle: bool = True) -> str:
    """The shared table: created if missing, never flushed (other boxes' state lives in it).
    ``dns_flow_idle``: with the conntrack timeout of :data:`DNS_FLOW_IDLE` (a kernel without
    ``nfnetlink_cttimeout`` refuses it)."""
    t = f"inet {TABLE}"
    helpers = f"{GID_BASE}-{GID_BASE + GID_SLOTS - 1}"
    timeouts = [
        *(
            f"add ct timeout {t} dnsflow{v} {{ protocol udp; l3proto {family}; "
            f"policy = {{ unreplied : {DNS_FLOW_IDLE}, replied : {DNS_FLOW_IDLE} }}; }}"
            for v, family in (("4", "ip"), ("6", "ip6"))
        ),
        # After conntrack made the flow's entry (-200), before it is confirmed: only then may a
        # timeout policy be attached. Every allow-list helper's DNS: their entries carry the redirect.
        f"add chain {t} dnsflows {{ type filter hook output priority -150; policy accept; }}",
        f"flush chain {t} dnsflows",
        *(
            f'add rule {t} dnsflows meta skgid {helpers} meta nfproto {proto} udp dport 53 ct timeout set "dnsflow{v}"'
            for v, proto in (("4", "ipv4"), ("6", "ipv6"))
        ),
    ]
    return "\n".join(
        [
            f"add table {t}",
            f"add map {t} boxes {{ type gid : verdict; }}",
            f"add map {t} dnsports {{ type gid : inet_service; }}",
            f"add map {t} secretports {{ type gid : inet_service; }}",
            f"add chain {t} output {{ type filter hook output priority 10; policy accept; }}",
            f"add chain {t} dnsnat {{ type nat hook output priority -100; policy accept; }}",
            f"flush chain {t} output",
            f"flush chain {t} dnsnat",
            f"add rule {t} output meta skgid vmap @boxes",
            # Every DNS flow of an allow-listed helper, to whatever address, goes to its proxy.
            f"add rule {t} dnsnat meta l4proto {{ tcp, udp }} th dport 53 redirect to : meta skgid map @dnsports",
            # HTTP(S) of a box with secrets goes to its secret proxy (a group not in the map: no match).
            f"add rule {t} dnsnat meta l4proto tcp th dport {{ 80, 443 }} meta skuid != {SECRET_UID} "
            "redirect to : meta skgid map @secretports",
            *(timeouts if dns_flow_idle else []),
        ]
    )


def box_objects(gid: int, accept_all: bool = False) -> list[str]:
    """Create the box's chain (rejecting everything until its proxy fills it in; ``accept_all``:
    a public-only box without allow-list or secrets, which has no proxy) and sets."""
    t, c = f"inet {TABLE}", chain_name(gid)
    lines = [f"add chain {t} {c}", f"flush chain {t} {c}"]
    for suffix, kind in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
        lines.append(f"add set {t} {c}_{suffix} {{ type {kind}; flags timeout; size {MAX_SET}; }}")
        lines.append(f"add set {t} {c}_{suffix}p {{ type {kind} . inet_service; flags timeout; size {MAX_SET}; }}")
        flow = f"{kind} . inet_service . inet_service"
        lines.append(f"add set {t} {c}_f{suffix} {{ type {flow}; flags dynamic, timeout; size {MAX_SET}; }}")
    # What the box's chain lets through goes here: a UDP flow is remembered (destination, ports)
    # and its later datagrams pass while it is in use; a full set only costs the box that flow.
    ok = f"{c}_ok"
    lines += [
        f"add chain {t} {ok}",
        f"flush chain {t} {ok}",
        *(
            f"add rule {t} {ok} meta l4proto udp update @{c}_f{v} {{ {family} daddr . udp dport . udp sport "
            f"timeout {UDP_FLOW_IDLE}s }}"
            for v, family in (("4", "ip"), ("6", "ip6"))
        ),
        f"add rule {t} {ok} accept",
    ]
    lines.append(
        f"add rule {t} {c} accept"
        if accept_all
        else f"add rule {t} {c} counter reject with icmpx type admin-prohibited"
    )
    return lines


PORT_MARK = "@PORT@"
"""Stands for the proxy's port in :func:`box_rules` until the proxy has bound it."""


def box_rules(
    gid: int,
    entries: tuple[Entry, ...] | list[Entry],
    proxy_port: int | str,
    upstream: tuple[int, int] | None = None,
) -> str:
    """The box's chain, installed by its DNS proxy once it knows its port; ``upstream``: the
    proxies' upstream source ports (:func:`upstream_ports`), which the box's DNS may not use."""
    t, c = f"inet {TABLE}", chain_name(gid)
    ok = f"{c}_ok"
    lines = [
        f"flush chain {t} {c}",
        # DNS still bound for port 53 after NAT was not redirected to the proxy: its packet matched
        # a conntrack entry of another socket (a closed upstream query of the proxy lingers ~30 s,
        # established, with the same addresses and source port): never "established" for the box.
        f"add rule {t} {c} ct direction original meta l4proto {{ tcp, udp }} th dport 53 "
        "counter reject with icmpx type admin-prohibited",
    ]
    if upstream is not None:
        # Nor may its DNS come from the proxies' ports: the entry it leaves could catch a proxy's
        # next upstream query from that port and send it to this box's proxy.
        lines.append(
            f"add rule {t} {c} ct direction original meta l4proto udp udp sport {upstream[0]}-{upstream[1]} "
            "ct original proto-dst 53 counter reject with icmpx type admin-prohibited"
        )
    lines += [
        # Replies (published ports), and the box's TCP connections this chain let through (only a
        # SYN, checked below, opens one).
        f"add rule {t} {c} ct direction reply accept",
        f"add rule {t} {c} meta l4proto tcp ct state established accept",
        # UDP flows this chain let through. Not conntrack's "established": that is also a host
        # process's flow with the same addresses and ports, which box root can pick (pasta keeps
        # the box's source port); anything else is checked as a new flow.
        f"add rule {t} {c} meta l4proto udp ip daddr . udp dport . udp sport @{c}_f4 goto {ok}",
        f"add rule {t} {c} meta l4proto udp ip6 daddr . udp dport . udp sport @{c}_f6 goto {ok}",
        f"add rule {t} {c} meta l4proto {{ tcp, udp }} ct status dnat ip daddr 127.0.0.1 th dport {proxy_port} accept",
        f"add rule {t} {c} meta l4proto {{ tcp, udp }} ct status dnat ip6 daddr ::1 th dport {proxy_port} accept",
        f"add rule {t} {c} ip daddr @{c}_4 goto {ok}",
        f"add rule {t} {c} ip6 daddr @{c}_6 goto {ok}",
        f"add rule {t} {c} meta l4proto {{ tcp, udp }} ip daddr . th dport @{c}_4p goto {ok}",
        f"add rule {t} {c} meta l4proto {{ tcp, udp }} ip6 daddr . th dport @{c}_6p goto {ok}",
    ]
    for e in entries:
        if e.kind != "net":
            continue
        family = "ip" if ipaddress.ip_network(e.value).version == 4 else "ip6"
        port = "" if e.port is None else f" meta l4proto {{ tcp, udp }} th dport {e.port}"
        lines.append(f"add rule {t} {c} {family} daddr {e.value}{port} goto {ok}")
    # Counted: the box's refused flows (BoxMetrics.network_connections_refused, engines/net/netcounters.py).
    lines.append(f"add rule {t} {c} meta l4proto tcp counter reject with tcp reset")
    lines.append(f"add rule {t} {c} counter reject with icmpx type admin-prohibited")
    lines.append(f"add element {t} dnsports {{ {gid} : {proxy_port} }}")
    return "\n".join(lines) + "\n"


def nft(script: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [hostguard.nft_binary(), "-f", "-"], input=script, capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        raise NetworkError("nft did not answer within 10s") from None
    except OSError as e:
        raise NetworkError(f"could not run nft: {e}") from None


def claim_gid(box_dir: Path, public_only: bool = False, accept_all: bool = False) -> int:
    """Install the host guard and the shared table, then claim a helper group for this box:
    ``create element`` fails if another box holds the slot, so concurrent engines never share
    one. The box's chain rejects everything until its proxy installs the real rules. The gid
    is remembered in the box dir so that a restart frees the old slot first. The shared table
    is (re)made in the claim's own transaction: one nft run (~15 ms) per start, not two."""
    global _dns_flow_idle
    hostguard.install()
    release(box_dir)
    start = int.from_bytes(hashlib.sha256(str(box_dir).encode()).digest()[:4], "big") % GID_SLOTS
    i = 0
    while i < MAX_CLAIM_TRIES:
        gid = GID_BASE + (start + i) % GID_SLOTS
        t = f"inet {TABLE}"
        script = [
            base_script(_dns_flow_idle),
            *box_objects(gid, accept_all),
            f"create element {t} boxes {{ {gid} : jump {chain_name(gid)} }}",
            f"add element inet {hostguard.TABLE} helpers {{ {gid} }}",
            *([f"add element inet {hostguard.TABLE} public_only {{ {gid} }}"] if public_only else []),
            f"add counter inet {hostguard.TABLE} {hostguard.refused_counter(gid)}",
            f'add element inet {hostguard.TABLE} refused {{ {gid} : "{hostguard.refused_counter(gid)}" }}',
        ]
        proc = nft("\n".join(script) + "\n")
        if proc.returncode == 0:
            gid_file(box_dir).write_text(f"{gid}{' public' if public_only else ''}\n")
            return gid
        if "exists" in proc.stderr:
            i += 1
        elif _dns_flow_idle:  # the same slot again, without the timeout policy
            _dns_flow_idle = False
        else:
            raise NetworkError(f"nft refused the box's allow-list rules: {proc.stderr.strip()[:500]}")
    raise NetworkError("no free helper group for an allow-listed box")


DNSPROXY_CONF = "dnsproxy.json"
"""The box's DNS proxy configuration in its dir (an allow-listed box's)."""


def gid_file(box_dir: Path) -> Path:
    return box_dir / "netpol.gid"


def release(box_dir: Path) -> None:
    """Remove a stopped box's rules, sets and group claim (best effort: all may be gone)."""
    try:
        words = gid_file(box_dir).read_text().split()
        gid, public_only = int(words[0]), words[1:] == ["public"]
    except (OSError, ValueError, IndexError):
        return
    if not GID_BASE <= gid < GID_BASE + GID_SLOTS:
        return
    t, c = f"inet {TABLE}", chain_name(gid)
    secrets = secret_conf(box_dir).exists()
    # Only what this box added: one transaction then succeeds (deleting an absent element fails
    # it, and the one-by-one retry below costs an nft run per step, ~0.2 s).
    steps = [
        f"delete element {t} boxes {{ {gid} }}",
        *([f"delete element {t} dnsports {{ {gid} }}"] if (box_dir / DNSPROXY_CONF).exists() else []),
        *([f"delete element {t} secretports {{ {gid} }}"] if secrets else []),
        f"delete element inet {hostguard.TABLE} helpers {{ {gid} }}",
        *([f"delete element inet {hostguard.TABLE} public_only {{ {gid} }}"] if public_only else []),
        f"delete element inet {hostguard.TABLE} refused {{ {gid} }}",
        f"delete counter inet {hostguard.TABLE} {hostguard.refused_counter(gid)}",
        f"flush chain {t} {c}",
        f"delete chain {t} {c}",
        f"flush chain {t} {c}_ok",
        f"delete chain {t} {c}_ok",
        *(f"delete set {t} {c}_{s}" for s in ("4", "6", "4p", "6p", "f4", "f6")),
    ]
    with contextlib.suppress(NetworkError):
        if nft("\n".join(steps) + "\n").returncode != 0:  # something was gone already
            for step in steps:
                with contextlib.suppress(NetworkError):
                    nft(step + "\n")
    if secrets:
        secret_conf(box_dir).unlink(missing_ok=True)
        (box_dir / "secrets-leaf.key").unlink(missing_ok=True)
    gid_file(box_dir).unlink(missing_ok=True)


# --- the proxy's configuration --------------------------------------------------------------


def upstream_resolver() -> str:
    """Where the proxies forward allowed queries: the host's first nameserver."""
    v4, v6 = hostguard.resolvers()
    if not (v4 or v6):
        raise NetworkError("an allow-listed box needs a nameserver in /etc/resolv.conf for its DNS proxy")
    return (v4 or v6)[0]


def upstream_ports(local_range: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int] | None:
    """Source ports for the proxies' upstream UDP queries, above the host's ephemeral range and
    :data:`BOX_EPHEMERAL_PORTS`; None if fewer than :data:`MIN_UPSTREAM_PORTS` are left there.

    A closed upstream query leaves its conntrack entry (un-redirected) for ~30 s. A box's DNS
    flow from the same port to the same resolver matches it, skips the redirect to the proxy and
    is refused (:func:`box_rules`): with the kernel's ports the box's own lookups collided with its
    proxy's earlier ones, one lookup in ~100 of a busy box failing after glibc's 10 s of retries."""
    try:
        with open(local_range) as f:
            host_high = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    low = max(host_high, BOX_EPHEMERAL_PORTS[1]) + 1
    return (low, 65535) if 65535 - low + 1 >= MIN_UPSTREAM_PORTS else None


def proxy_command(box_dir: Path, gid: int, entries: tuple[Entry, ...]) -> list[str]:
    """argv of the box's DNS proxy (a stdlib script, run by the box's keeper or shim), with its
    configuration written to the box dir."""
    ports = upstream_ports()
    conf = {
        "gid": gid,
        "entries": [[e.kind, e.value, e.port] for e in entries],
        "upstream": upstream_resolver(),
        "upstream_ports": ports,
        "rules": box_rules(gid, entries, PORT_MARK, ports),
        "table": TABLE,
        "nft": hostguard.nft_binary(),
    }
    path = box_dir / DNSPROXY_CONF
    path.write_text(json.dumps(conf))
    os.chmod(path, 0o600)
    script = Path(__file__).with_name("dnsproxy.py")
    return [sys.executable, "-I", "-S", str(script), str(path)]


# --- the secret proxy's configuration (secrets: engines/net/secretproxy.py) --------------------


def secret_conf(box_dir: Path) -> Path:
    return box_dir / "secretproxy.json"


def secret_rules(gid: int, allow_listed: bool) -> str:
    """Rules the box's secret proxy installs once bound (its port in place of ``@PORT@``): the
    box's HTTP(S) is redirected to it (IPv4 to 127.0.0.1, IPv6 to ::1: the proxy listens on both,
    same port), and its chain accepts that redirect. Without an allow-list the chain (created
    rejecting everything) then accepts everything else too."""
    t, c = f"inet {TABLE}", chain_name(gid)
    lines = [] if allow_listed else [f"flush chain {t} {c}", f"add rule {t} {c} accept"]
    lines += [
        f"insert rule {t} {c} meta l4proto tcp ct status dnat ip daddr 127.0.0.1 tcp dport {PORT_MARK} accept",
        f"insert rule {t} {c} meta l4proto tcp ct status dnat ip6 daddr ::1 tcp dport {PORT_MARK} accept",
        f"add element {t} secretports {{ {gid} : {PORT_MARK} }}",
    ]
    return "\n".join(lines) + "\n"


SECRET_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""Path in a box with secrets of the CA bundle (the image's, plus the box's own CA), bound read-only."""


def secret_proxy_command(
    box_dir: Path, gid: int, secrets: list[dict[str, Any]], allow_listed: bool, layers: tuple[Path, ...] = ()
) -> tuple[list[str], Path]:
    """(argv of the box's secret proxy, the box's CA bundle on the host): its configuration (with
    the real values) written 0600 to the box dir on the host, the box's CA and leaf certificate
    made (:mod:`.boxca`), and the image's CA bundle (top-most of ``layers``) plus that CA."""
    from . import boxca

    hosts = sorted({str(h) for s in secrets for h in s["hosts"]})
    ca, leaf, key = boxca.make(box_dir, hosts)
    bundle = boxca.bundle(box_dir, ca, [layer / SECRET_BUNDLE.lstrip("/") for layer in reversed(layers)])
    conf = {
        "secrets": secrets,
        "uid": SECRET_UID,
        "cert": str(leaf),
        "key": str(key),
        "rules": secret_rules(gid, allow_listed),
        "nft": hostguard.nft_binary(),
    }
    path = secret_conf(box_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(conf, f)
    script = Path(__file__).with_name("secretproxy.py")
    return [sys.executable, "-I", "-S", str(script), str(path)], bundle
