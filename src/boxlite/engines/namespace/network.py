"""Outbound network and published ports for namespace boxes, through ``pasta`` (passt).

pasta is a userspace network stack: it gives the box's network namespace an ``eth0`` with the
host's addresses and routes, NATs its traffic through ordinary host sockets (no bridge, no
iptables), forwards published host ports into the box and relays DNS from a fixed address to
the host's resolver.

The box must not reach the host itself: pasta runs with ``--no-map-gw`` (the gateway address is
the real gateway, not the host's 127.0.0.1), without ``-T``/``-U`` (no box loopback port leads to
the host's), and in the helper group of :mod:`..net.hostguard`, whose nftables rule rejects its
new flows to any of the host's own addresses (DNS to the host's resolvers excepted).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
from pathlib import Path

from ...errors import NetworkError
from ..net import hostguard, proxystats
from ..net.allowlist import BOX_EPHEMERAL_PORTS

DNS_ADDRESS = "169.254.1.53"
"""Nameserver address inside boxes; pasta maps it to the host's first resolver."""
NETNS_SYSCTLS = {
    "net/ipv4/tcp_rmem": "4096 131072 1048576",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv4/ip_local_port_range": " ".join(map(str, BOX_EPHEMERAL_PORTS)),
}
"""Written into each box's network namespace by its keeper before pasta starts (per-namespace
sysctls: the host's own are untouched; pasta's interface, made after, takes ``default``'s).

``tcp_rmem``: this pasta re-reads, with ``MSG_PEEK``, every byte it sent the box but the box has
not acknowledged yet, once per frame it sends; the box's receive window bounds those bytes, and
they pile up to it while pasta waits for a core. Against the kernel's default (up to 6 MiB),
1 MiB cut pasta's CPU per GiB by 15-35% on a loaded machine and ~10% on a quiet one
(bench/bench_net.py, CPU section; docs/network.md, "Cost"). The window only spans the tap
(microseconds): the one the far end sees is pasta's own host socket's.

``accept_dad``: no duplicate address detection on the box's interface (its one peer is pasta:
nothing can hold the same address). Debian 12's pasta takes the source of every IPv6 frame from
the box as the box's address, ``::`` included, and sends its IPv6 TCP segments there: the
detection's neighbour solicitation (source ``::``, up to ~1 s after the box started) redirected
the segments of any IPv6 connection open at that moment, which the box then never received
(fixed in later pasta: "tap: Don't update ip6.addr_seen to ::").

``ip_local_port_range``: the kernel's default, pinned: the DNS proxy of an allow-listed box asks
upstream from ports above it (..net.allowlist.upstream_ports), which keeps the box's own DNS
flows (pasta keeps their source ports) clear of the proxy's lingering conntrack entries."""

FASTPATH_ENV = "BOXLITE_SECRET_FASTPATH"
"""``0``: boxes started from now on keep their secret proxy's flows on the host path (through
pasta), for comparison (bench/bench_net.py); anything else, or unset: the fast path."""


def secret_fastpath() -> bool:
    """Whether a namespace box's secret proxy also listens inside the box's network namespace
    (..net.secretproxy, "Fast path"): the box's port-80/443 flows then bypass pasta."""
    return os.environ.get(FASTPATH_ENV, "1").strip() != "0"


def add_fastpath_counters(out: dict[str, float], box_dir: Path) -> dict[str, float]:
    """``out`` (the box netns's interface counters) plus what its secret proxy's fast path moved
    over the box's loopback, which those counters do not see (payload bytes, TCP segments)."""
    stats = proxystats.read_stats(str(box_dir / proxystats.STATS_NAME))
    if stats is None or "net_bytes_sent" not in out:
        return out
    sent, received, segs_in, segs_out = stats
    out = dict(out)
    out["net_bytes_sent"] += sent
    out["net_bytes_received"] += received
    out["net_packets_sent"] = out.get("net_packets_sent", 0.0) + segs_in
    out["net_packets_received"] = out.get("net_packets_received", 0.0) + segs_out
    return out


def resolv_conf(path: Path) -> Path:
    """Write the box's /etc/resolv.conf at ``path`` (bind-mounted read-only by the box's init)."""
    path.write_text(f"nameserver {DNS_ADDRESS}\n")
    os.chmod(path, 0o644)
    return path


def pasta_command(ports: list[tuple[str, int, int, str]], gid: int | None = None) -> tuple[list[str], int]:
    """(pasta's command line for one box, the helpers' group id), with the host guard installed.
    ``ports``: the box's published ports (``BoxSpec.ports``: host ip, host port, box port, protocol).

    The box's keeper (:mod:`boxlite.agent.keeper`) runs it as its own child, in the foreground
    (``-f``, so that ``PR_SET_PDEATHSIG`` ties it to the keeper; a daemonized pasta would be
    nobody's child), in the group ``gid`` from before exec; it adds ``--pid`` (a FIFO: pasta
    writes its pid once it configured the namespace) and ``--netns``. In the foreground pasta
    does not move itself into a detached PID namespace; it still pivots into an empty root and
    runs under its seccomp filter. pasta runs as uid 0 without capabilities (it must open the
    root-only ``/dev/net/tun``). ``gid``: an allow-listed box's own group (:mod:`..net.allowlist`,
    which installed the guard already)."""
    pasta = shutil.which("pasta")
    if pasta is None:
        raise NetworkError("networking for namespace boxes needs pasta: apt-get install passt")
    gid = hostguard.install() if gid is None else gid
    # One option per port: pasta rejects a comma list of specs that carry an address.
    tcp = [a for ip, hp, bp, proto in ports if proto == "tcp" for a in ("-t", f"{ip}/{hp}:{bp}")] or ["-t", "none"]
    # UDP keeps its port number through pasta (see udp_port_redirects): the box's side moves it.
    udp = [a for ip, hp, _, proto in ports if proto == "udp" for a in ("-u", f"{ip}/{hp}:{hp}")] or ["-u", "none"]
    argv = [
        pasta, "--foreground", "--config-net", "--quiet", "--runas", f"0:{gid}", "--no-map-gw",
        *tcp, *udp, "-T", "none", "-U", "none", "--dns-forward", DNS_ADDRESS,
    ]  # fmt: skip
    return argv, gid


PORTS_TABLE = "boxlite_ports"


def udp_port_redirects(ports: list[tuple[str, int, int, str]]) -> str | None:
    """nft rules for the box's own network namespace that move each published UDP port whose
    box port differs from its host port (``-p 5300:53/udp``) to the box port; None if none does.

    Debian 12's pasta forwards a datagram to another port but loses the answer (measured: the
    box's server gets ``ping``, the host's client never gets a reply; equal ports work), so pasta
    forwards UDP to the same port number and these rules, in the box's namespace where only the
    box's traffic passes, redirect it; connection tracking turns the answers' source port back.
    Only datagrams pasta delivers match: to loopback (pasta's splice socket, from host loopback
    clients) or arriving on the box's interface; the box's own traffic to other addresses (its DNS
    to port 53, say) is untouched. (The keeper loads them: ``agent/keeper.py``.)"""
    moved = sorted({(hp, bp) for _, hp, bp, proto in ports if proto == "udp" and hp != bp})
    if not moved:
        return None
    t = f"inet {PORTS_TABLE}"
    lines = [
        f"add table {t}",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}",
    ]
    for hp, bp in moved:
        lines += [
            f"add rule {t} output ip daddr 127.0.0.1 udp dport {hp} redirect to :{bp}",
            f"add rule {t} output ip6 daddr ::1 udp dport {hp} redirect to :{bp}",
            f'add rule {t} prerouting iifname != "lo" udp dport {hp} redirect to :{bp}',
        ]
    return "\n".join(lines) + "\n"


def stop_pasta(pid_file: Path) -> None:
    """Kill the box's pasta (pid in ``pid_file``), if it still runs (it does not notice the
    namespace going away). Its keeper does that already; this is for a keeper that was killed."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
        if f.read().strip() in ("pasta", "passt", "pasta.avx2", "passt.avx2"):
            _kill_and_wait(pid)
    pid_file.unlink(missing_ok=True)


def _kill_and_wait(pid: int, timeout: float = 2.0) -> None:
    """SIGTERM, and return once it is gone (its published ports are free again), else SIGKILL."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], timeout)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], timeout)
    except OSError:
        pass
    finally:
        os.close(pidfd)
