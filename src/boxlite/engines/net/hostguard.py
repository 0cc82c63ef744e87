"""Keep boxes away from the host itself: its loopback (127.0.0.0/8, ::1), its own addresses and
the link-local networks where a cloud host's metadata service answers (169.254.0.0/16, fe80::/10,
AWS's fd00:ec2::254): it gives whoever asks the instance's credentials.

A box's traffic leaves through a userspace helper on the host (pasta for namespace boxes, QEMU's
slirp for VM boxes) that opens ordinary host sockets. Whatever those sockets connect to, the box
reaches, so the box must not be able to make the helper connect to the host itself. Options:

- helper options alone (Debian 12's 2023-03 pasta): ``--no-map-gw`` stops mapping the gateway
  address to the host's 127.0.0.1, but the helper still connects from the host's network
  namespace, so the host's other addresses stay reachable (and a box with CAP_NET_RAW can put
  127.0.0.1 in a raw frame on its tap: the helper connects to it). slirp has no such option at
  all (10.0.2.2 is the host's loopback). Needed where it exists, not enough.
- nftables rules inside each box's network namespace: useless for VM boxes (the guest kernel
  is the box's), bypassable by raw frames, and they need the host's addresses, which change.
- **A host rule keyed on the helper** (chosen): every helper runs with a dedicated group id
  (:func:`helper_gid`; the uid stays 0: pasta must open the root-only ``/dev/net/tun`` and drops
  its capabilities itself, QEMU opens the box's root-owned files; a dedicated uid would need
  both), and one nftables table in the host's network namespace rejects *new* flows from
  sockets of that group to any address the host's routing calls local, broadcast, multicast or
  anycast (and to anything routed through ``lo``). Evaluated per packet, so addresses added
  later are covered. Replies on flows the host opened (published ports) pass: for TCP only a
  SYN is refused, for UDP only flows connection tracking calls new (the rule turns tracking on
  in the host's namespace if nothing had; a host that ``notrack``s loopback traffic loses UDP
  published ports to local clients: the guard fails closed).
  cgroup matching was the alternative: hosts with cgroup v1 (this one) have no ``socket
  cgroupv2``, and ``net_cls`` is gone on v2-only hosts.

DNS is the one allowed exception: the helpers forward the box's queries to the host's first
resolver, which often is a loopback one (127.0.0.53). Only port 53 of the resolvers named in
``/etc/resolv.conf`` is allowed. The table is ours alone (``inet boxlite``): it only ever
rejects the helpers' packets, so the host's own firewall and other software are untouched.
It is (re)installed atomically before every networked box starts (idempotent, concurrent
engines converge) and stays afterwards, harmless without helpers. A ``nft flush ruleset`` on
the host removes it until the next networked box starts. Running ``nft`` costs ~20 ms, so a
start skips it when the ruleset is provably as we left it: the kernel's nftables generation
(:mod:`.nftgen`) counts every change to any table, and an install whose own transaction was the
only one in between (generation + 1) is recorded with the resulting generation, the rules' hash,
the boot and the network namespace (in memory, and in ``/run/boxlite`` for later processes of
the same boot). Any other change since, by anyone, means the next start runs ``nft`` again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from ...errors import NetworkError
from . import nftgen

DEFAULT_HELPER_GID = 165535
"""Group id (and passt's user id) of the network helpers: the default home's box id 65535
(uid_base 100000 + 65535), an id BoxLite already owns and images practically never use."""
TABLE = "boxlite"
ALLOW_GID_BASE = 0x70000000
"""First helper group id of allow-listed boxes (..net.allowlist): above systemd's container
range, below 2^31; no box or host process uses these."""
ALLOW_GID_SLOTS = 65536
METADATA6 = "fd00:ec2::254"
"""The IPv6 address of AWS's instance metadata service (IPv4: 169.254.169.254, inside the refused
link-local network)."""
PRIVATE4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15")
PRIVATE6 = ("fc00::/7", "fec0::/10")
"""Networks a public-only box never reaches (besides what every box never reaches): private,
shared (CGNAT), benchmarking and unique-local ranges, where a host's LAN and its services live."""
RESOLV_CONF = Path("/etc/resolv.conf")
MAX_RESOLVERS = 8
RECORD = Path("/run/boxlite/hostguard")
"""The last install known intact: ``<rules hash> <boot id> <netns> <generation>`` (root only)."""
_recorded: str | None = None


def helper_gid() -> int:
    """The helpers' group id: ``BOXLITE_NET_GID`` if set (for hosts where 165535 is taken)."""
    raw = os.environ.get("BOXLITE_NET_GID", "").strip()
    if not raw:
        return DEFAULT_HELPER_GID
    try:
        gid = int(raw)
    except ValueError:
        raise NetworkError(f"BOXLITE_NET_GID must be a number, got {raw!r}") from None
    if not 0 < gid < 2**32 - 2:
        raise NetworkError(f"BOXLITE_NET_GID out of range: {gid}")
    return gid


def nft_binary() -> str:
    path = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)
    if path is None:
        raise NetworkError(
            "box networking needs nftables to keep boxes off the host's own addresses: apt-get install nftables"
        )
    return path


def resolvers(path: Path = RESOLV_CONF) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 nameservers of the host (what the helpers forward the boxes' DNS to)."""
    v4: list[str] = []
    v6: list[str] = []
    try:
        text = path.read_text(errors="replace")[:65536]
    except OSError:
        return v4, v6
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "nameserver":
            continue
        try:
            addr = ipaddress.ip_address(parts[1].split("%")[0])
        except ValueError:
            continue
        (v4 if addr.version == 4 else v6).append(str(addr))
    return v4[:MAX_RESOLVERS], v6[:MAX_RESOLVERS]


def refused_counter(gid: int) -> str:
    """The counter of what the guard refused a box's helper group (created by its claim)."""
    return f"refused_{gid}"


def ruleset(gid: int, dns4: list[str], dns6: list[str]) -> str:
    """One nft transaction: create what is missing, then replace our chains' rules."""
    t = f"inet {TABLE}"
    lines = [
        f"add table {t}",
        f"add set {t} helpers {{ type gid; }}",
        f"add set {t} public_only {{ type gid; }}",
        # A box with a policy of its own has a counter here (..net.allowlist.claim_gid): what the
        # guard refuses it counts in its BoxMetrics.network_connections_refused too.
        f"add map {t} refused {{ type gid : counter; }}",
        f"add set {t} dns4 {{ type ipv4_addr; }}",
        f"add set {t} dns6 {{ type ipv6_addr; }}",
        f"add chain {t} output {{ type filter hook output priority 0; policy accept; }}",
        f"add chain {t} helper",
        f"add chain {t} refuse",
        f"flush chain {t} output",
        f"flush chain {t} helper",
        f"flush chain {t} refuse",
        # Counting is a rule of its own: a group without a counter (no element) skips it alone,
        # never the reject after it.
        f"add rule {t} refuse counter name meta skgid map @refused",
        f"add rule {t} refuse reject",
        f"add rule {t} output meta skgid @helpers jump helper",
        # TCP needs no connection tracking: only a SYN opens a flow (replies are SYN+ACK).
        f"add rule {t} helper meta l4proto tcp tcp flags & (syn | ack) != syn return",
        # Replies (published ports) pass; a box's own flows are checked packet by packet: conntrack
        # calls a helper's UDP datagram "established" when a host process used the same addresses
        # and ports within ~2 min, and box root chooses its source port (pasta keeps it).
        f"add rule {t} helper ct direction reply return",
        f"add rule {t} helper meta l4proto {{ tcp, udp }} th dport 53 ip daddr @dns4 return",
        f"add rule {t} helper meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr @dns6 return",
        # DNS of allow-listed boxes, redirected by ..net.allowlist to their proxies on loopback
        # (their own chains there accept only their proxy's port).
        f"add rule {t} helper meta skgid {ALLOW_GID_BASE}-{ALLOW_GID_BASE + ALLOW_GID_SLOTS - 1} ct status dnat return",
        # Link-local destinations: the cloud metadata service (169.254.169.254, AWS's IPv6
        # fd00:ec2::254) hands out the host's credentials; nothing else a box needs lives there.
        f"add rule {t} helper ip daddr 169.254.0.0/16 goto refuse",
        f"add rule {t} helper ip6 daddr {{ fe80::/10, {METADATA6} }} goto refuse",
        # Boxes limited to public destinations (NetworkSpec(public_only=True); a REST server's TCP
        # clients' boxes): no private, shared (CGNAT) or unique-local network either.
        f"add rule {t} helper meta skgid @public_only ip daddr {{ {', '.join(PRIVATE4)} }} goto refuse",
        f"add rule {t} helper meta skgid @public_only ip6 daddr {{ {', '.join(PRIVATE6)} }} goto refuse",
        f"add rule {t} helper oif lo goto refuse",
        f"add rule {t} helper fib daddr type {{ local, broadcast, multicast, anycast }} goto refuse",
        f"add element {t} helpers {{ {gid} }}",
        f"flush set {t} dns4",
        f"flush set {t} dns6",
    ]
    if dns4:
        lines.append(f"add element {t} dns4 {{ {', '.join(dns4)} }}")
    if dns6:
        lines.append(f"add element {t} dns6 {{ {', '.join(dns6)} }}")
    return "\n".join(lines) + "\n"


def install(gid: int | None = None) -> int:
    """Install (or refresh) the guard for helpers running with group ``gid``; returns the gid.
    Raises :class:`NetworkError` when nftables is missing or refuses the rules: a box never
    gets network without the guard."""
    gid = helper_gid() if gid is None else gid
    script = ruleset(gid, *resolvers())
    binary = nft_binary()
    before, identity = nftgen.generation(), _identity(script)
    if before is not None and identity is not None and _last_intact() == f"{identity} {before}":
        return gid  # no change to any table since our own install: the guard is as we wrote it
    try:
        proc = subprocess.run(
            [binary, "-f", "-"], input=script, capture_output=True, text=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        raise NetworkError("nft did not install the host guard within 10s") from None
    except OSError as e:
        raise NetworkError(f"could not run nft: {e}") from None
    if proc.returncode != 0:
        raise NetworkError(f"nft refused the host guard rules: {proc.stderr.strip()[:500]}")
    after = nftgen.generation()
    if before is not None and identity is not None and after == before + 1:  # ours: the only transaction
        _record(f"{identity} {after}")
    return gid


def _identity(script: str) -> str | None:
    """The rules' hash, this boot and this network namespace (a record is valid for these alone);
    None when the boot or namespace cannot be told: then nothing is skipped or recorded."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        netns = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    digest = hashlib.sha256(script.encode()).hexdigest()
    return f"{digest} {boot} {netns.st_dev}:{netns.st_ino}"


def _last_intact() -> str | None:
    if _recorded is not None or os.geteuid() != 0:
        return _recorded
    try:
        st = os.lstat(RECORD)
        if st.st_uid != 0 or st.st_mode & 0o022 or not RECORD.is_file():
            return None
        return RECORD.read_text()[:512]
    except OSError:
        return None


def _record(state: str) -> None:
    global _recorded
    _recorded = state
    if os.geteuid() != 0:
        return
    try:  # best effort: later processes of this boot then skip nft too
        RECORD.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = RECORD.with_name(f".hostguard.{os.getpid()}")
        tmp.write_text(state)
        os.chmod(tmp, 0o600)
        os.replace(tmp, RECORD)
    except OSError:
        pass


def enter_helper_group(gid: int) -> None:
    """``preexec_fn`` of a helper: the guard's group as real, effective and saved gid, no
    supplementary groups. Set before the helper starts, so that even the sockets it opens
    before dropping privileges (published ports) carry the group."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
