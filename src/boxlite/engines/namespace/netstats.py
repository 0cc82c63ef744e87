"""Network counters of a namespace box, read from the host through /proc/<pid>/net of a box
process (BoxLite's ``BoxMetrics.network_*``). The kernel writes these files, so the box cannot
forge them; reads are capped anyway."""

from __future__ import annotations

import os

MAX_READ = 64 * 1024


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return os.read(fd, MAX_READ).decode("ascii", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def box_netns_pid(pids: list[int]) -> int | None:
    """A pid of ``pids`` in a network namespace other than ours (the box's, never the host's)."""
    try:
        host = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != host:
                return pid
        except OSError:
            continue
    return None


def dev_counters(text: str) -> tuple[int, int, int, int]:
    """(bytes sent, bytes received, packets sent, packets received) over every interface but
    loopback, from a /proc/net/dev text."""
    sent = received = psent = preceived = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 10:
            continue
        try:
            received, preceived = received + int(fields[0]), preceived + int(fields[1])
            sent, psent = sent + int(fields[8]), psent + int(fields[9])
        except ValueError:
            continue
    return sent, received, psent, preceived


def parse_dev(text: str) -> tuple[int, int]:
    """(bytes sent, bytes received) over every interface but loopback."""
    return dev_counters(text)[:2]


def parse_snmp_tcp(text: str) -> tuple[int, int] | None:
    """(established connections, connection errors) from the two "Tcp:" lines of net/snmp."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) != 2 or len(rows[0]) != len(rows[1]):
        return None
    try:
        tcp = dict(zip(rows[0], (int(v) for v in rows[1]), strict=True))
    except ValueError:
        return None
    errors = tcp.get("AttemptFails", 0) + tcp.get("EstabResets", 0) + tcp.get("InErrs", 0)
    return tcp.get("CurrEstab", 0), errors


def read_counters(pids: list[int]) -> dict[str, float]:
    """``net_bytes_*``/``net_packets_*``/``net_tcp_connections``/``net_tcp_errors`` of the
    box whose processes are ``pids`` (empty when none of them is in a box network namespace)."""
    pid = box_netns_pid(pids)
    if pid is None:
        return {}
    out: dict[str, float] = {}
    dev = _read(f"/proc/{pid}/net/dev")
    if dev:
        sent, received, psent, preceived = dev_counters(dev)
        out.update(net_bytes_sent=float(sent), net_bytes_received=float(received))
        out.update(net_packets_sent=float(psent), net_packets_received=float(preceived))
    tcp = parse_snmp_tcp(_read(f"/proc/{pid}/net/snmp"))
    if tcp is not None:
        out.update(net_tcp_connections=float(tcp[0]), net_tcp_errors=float(tcp[1]))
    return out


__all__ = ["box_netns_pid", "dev_counters", "parse_dev", "parse_snmp_tcp", "read_counters"]
