"""Reading ``/proc/<pid>``: process identity and resource use, shared by the runtime and both engines.

Every helper answers for a process that vanished (or never existed) with a neutral value instead
of raising: callers poll processes that may exit at any moment.
"""

from __future__ import annotations

import os
import time


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and parens):
    index 0 is the state (field 3 of proc(5))."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    return data[end + 2 :].split() if end >= 0 else None


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``, or None if it does not exist / is a zombie.
    (pid, start time) names a process across pid reuse."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def started_at(pid: int) -> int | None:
    """Start time of ``pid`` even while it is a zombie (its main thread exited, other threads may
    run on and hold its files), or None if it does not exist."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] == b"X":
        return None
    return int(fields[19])


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``, all its threads (0.0 if it is gone). Read from the process's CPU
    clock (nanoseconds): ``/proc/<pid>/stat`` counts whole scheduler ticks (10 ms), so a process
    that woke for 50 µs as a tick fell would be charged 10 ms."""
    try:
        return time.clock_gettime(_process_cpu_clock(pid))
    except (OSError, OverflowError):
        pass  # gone, or a kernel without process CPU clocks: the ticks
    fields = _stat_fields(pid)
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0
    except (ValueError, IndexError):
        return 0.0


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (shared pages split between their users; 0 if unknown)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def argv0(pid: int) -> bytes | None:
    """The first word of ``pid``'s command line, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]
    except OSError:
        return None


def _process_cpu_clock(pid: int) -> int:
    """The clock id ``clock_getcpuclockid(pid)`` returns (Linux: process-wide scheduler clock)."""
    return ((~pid) << 3) | 2
