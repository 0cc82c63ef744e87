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
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import NetworkError
from ..net import hostguard

DNS_ADDRESS = "169.254.1.53"
"""Nameserver address inside boxes; pasta maps it to the host's first resolver."""


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"

    def pasta_spec(self) -> str:
        return f"{self.host_ip}/{self.host_port}:{self.guest_port}"


def resolv_conf(run_dir: Path) -> Path:
    """Write the box's /etc/resolv.conf (bind-mounted read-only by the box's init)."""
    path = run_dir / "resolv.conf"
    path.write_text(f"nameserver {DNS_ADDRESS}\n")
    os.chmod(path, 0o644)
    return path


def start_pasta(box_pid: int, state_dir: Path, ports: list[PortMapping]) -> int:
    """Attach pasta to the network namespace of ``box_pid``; returns pasta's pid.

    ``state_dir`` (root-owned) keeps ``pasta.pid``. pasta runs as uid 0 without capabilities (it
    must open the root-only ``/dev/net/tun``) in the helper group the host guard rejects."""
    pasta = shutil.which("pasta")
    if pasta is None:
        raise NetworkError("networking for namespace boxes needs pasta: apt-get install passt")
    gid = hostguard.install()
    pid_file = state_dir / "pasta.pid"
    tcp = ",".join(p.pasta_spec() for p in ports if p.protocol == "tcp") or "none"
    udp = ",".join(p.pasta_spec() for p in ports if p.protocol == "udp") or "none"
    netns = os.open(f"/proc/{box_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    argv = [
        pasta, "--config-net", "--quiet", "--runas", f"0:{gid}", "--no-map-gw",
        "-t", tcp, "-u", udp, "-T", "none", "-U", "none",
        "--dns-forward", DNS_ADDRESS, "--pid", str(pid_file),
        "--netns", f"/proc/self/fd/{netns}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            argv,
            pass_fds=[netns],
            capture_output=True,
            text=True,
            timeout=20,
            preexec_fn=lambda: hostguard.enter_helper_group(gid),
        )
    except subprocess.TimeoutExpired:
        raise NetworkError("pasta did not configure the box network within 20s") from None
    finally:
        os.close(netns)
    if proc.returncode != 0:
        detail = " ".join(line for line in proc.stderr.splitlines() if "syslog" not in line)
        raise NetworkError(f"pasta failed to set up the box network: {detail or proc.returncode}")
    return int(pid_file.read_text().split()[0])


def stop_pasta(state_dir: Path) -> None:
    """Kill the box's pasta, if it still runs (it does not notice the namespace going away)."""
    pid_file = state_dir / "pasta.pid"
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
