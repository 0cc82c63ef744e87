"""``boxlite logs -t --since --until`` (the timestamp index the log's writer keeps beside the main
log: ``run/main.log.idx``) and ``boxlite kill -s SIG`` for signals that do not stop the box."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from boxlite.agent import logfile
from boxlite.agent.logfile import RotatingLog
from boxlite.api.logtimes import LineTimes, Stamper
from support.cli import Cli, assert_one_line_error

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$")
LINES = "for i in 1 2 3; do echo line$i; sleep 0.4; done; sleep 600"


def _run_d(cli: Cli, name: str, script: str) -> str:
    return cli.ok("run", "-d", "--name", name, "--rootfs", str(cli.rootfs), "sh", "-c", script).strip()


def _wait_for(cli: Cli, name: str, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cli.ok("logs", name)
        if text in out:
            return out
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in the logs of {name}: {out!r}")


def _ns(stamp: str) -> int:
    when = datetime.fromisoformat(stamp[:26] + "+00:00")  # microseconds: enough to compare
    return int(when.timestamp()) * 10**9 + int(stamp[20:29])


def _stamped(out: str) -> list[tuple[str, str]]:
    lines = out.splitlines()
    matches = [STAMP.match(line) for line in lines]
    assert all(matches), out
    return [(m.group(1), m.group(2)) for m in matches if m]


def _index(cli: Cli, box_id: str) -> Path:
    return cli.home / "boxes" / box_id / "run" / "main.log.idx"


def test_logs_timestamps_since_until(cli: Cli) -> None:
    before = time.time_ns()
    _run_d(cli, "clock", LINES)
    _wait_for(cli, "clock", "line3")
    lines = _stamped(cli.ok("logs", "-t", "clock"))
    assert [text for _, text in lines] == ["line1", "line2", "line3"]
    times = [_ns(stamp) for stamp, _ in lines]
    assert before <= times[0] < times[1] < times[2] <= time.time_ns()
    assert times[2] - times[0] >= 0.5e9  # the time each line was written, not when it was read
    # --since: an RFC 3339 time (the second line's own) or a duration; --until
    assert [t for _, t in _stamped(cli.ok("logs", "-t", "--since", lines[1][0], "clock"))] == ["line2", "line3"]
    assert cli.ok("logs", "--since", lines[1][0], "clock") == "line2\nline3\n"
    assert cli.ok("logs", "--since", "1h", "clock") == "line1\nline2\nline3\n"
    assert cli.ok("logs", "--since", "1ms", "clock") == ""  # all older than a millisecond ago
    assert cli.ok("logs", "--until", lines[1][0], "clock") == "line1\nline2\n"
    assert cli.ok("logs", "--since", lines[1][0], "--until", lines[1][0], "-n", "5", "clock") == "line2\n"
    assert_one_line_error(cli("logs", "--since", "yesterday-ish", "clock"), 125, "invalid time")


def test_logs_survive_a_corrupt_index(cli: Cli) -> None:
    box_id = _run_d(cli, "garbled", LINES)
    _wait_for(cli, "garbled", "line3")
    index = _index(cli, box_id)
    good = index.read_bytes()
    assert len(good) >= 16 + 3 * 16  # header and one record per line
    # records going backwards (a hostile writer): the lines before stay stamped, the rest plain
    index.write_bytes(good[:32] + b"\xff" * 16 + good[48:])
    out = cli.ok("logs", "-t", "garbled").splitlines()
    assert STAMP.match(out[0]) and out[1:] == ["line2", "line3"], out

    # garbage from the start, a header naming another file, a huge sparse file, a symlink
    def huge() -> None:
        index.write_bytes(good)
        os.truncate(index, 8 << 30)

    def symlink() -> None:
        index.unlink()
        index.symlink_to("/dev/zero")

    for damage in (
        lambda: index.write_bytes(os.urandom(4096)),
        lambda: index.write_bytes(b"BXLIDX1\n" + (12345).to_bytes(8, "big") + good[16:]),
        huge,
        symlink,
    ):
        damage()
        started = time.monotonic()
        proc = cli("logs", "-t", "--since", "1h", "garbled")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stdout.splitlines()
        assert [STAMP.sub(r"\2", line) for line in lines] == ["line1", "line2", "line3"], proc.stdout
        assert time.monotonic() - started < 30
    index.unlink()
    assert cli.ok("logs", "-t", "garbled") == "line1\nline2\nline3\n"  # no index: no timestamps


def test_kill_sends_other_signals_to_the_main_process(cli: Cli) -> None:
    script = 'trap "echo got-usr1" USR1; trap "echo got-hup" HUP; echo ready; while :; do sleep 0.1; done'
    box_id = _run_d(cli, "trapper", script)
    _wait_for(cli, "trapper", "ready")
    assert cli.ok("kill", "-s", "USR1", "trapper").strip() == "trapper"
    _wait_for(cli, "trapper", "got-usr1", timeout=60)
    assert cli.ok("kill", "--signal", "SIGHUP", "trapper").strip() == "trapper"
    _wait_for(cli, "trapper", "got-hup", timeout=60)
    assert cli.json("inspect", box_id)[0]["state"]["running"] is True  # type: ignore[index]
    assert_one_line_error(cli("kill", "-s", "99", "trapper"), 125, "invalid signal")
    # a signal the main process does not trap ends it, and so the box (exit status 128 + SIGUSR2, 12)
    assert cli.ok("kill", "-s", "USR2", "trapper").strip() == "trapper"
    assert cli.ok("wait", "trapper").strip() == "140"
    assert_one_line_error(cli("kill", "-s", "USR1", "trapper"), 125, "not running")


def test_index_rotates_with_the_log_and_a_full_index_rotates_early(tmp_path: Path, monkeypatch: Any) -> None:
    path = str(tmp_path / "main.log")
    log = RotatingLog(path, 128 << 10)
    log.write(b"a" * (100 << 10) + b"\n")
    time.sleep(0.002)
    log.write(b"b" * (50 << 10) + b"\n")  # does not fit: main.log -> main.log.1, its index too
    for name, first in ((path + ".1", b"a"), (path, b"b")):
        with open(name, "rb") as f:
            times = LineTimes(f.fileno(), (name,))
            assert len(times.offsets) == 1 and times.at(0) is not None, name
            assert f.read(1) == first
    with open(path + ".1", "rb") as f:  # a rotated file is found under either name
        assert LineTimes(f.fileno(), (path, path + ".1")).offsets == [0]
    monkeypatch.setattr(logfile, "INDEX_MAX", 16 + 3 * 16)  # room for three records
    log = RotatingLog(str(tmp_path / "small.log"), 128 << 10)
    for i in range(5):
        time.sleep(0.002)
        log.write(b"%d\n" % i)
    with open(tmp_path / "small.log", "rb") as f, open(tmp_path / "small.log.1", "rb") as old:
        assert (old.read(), f.read()) == (b"0\n1\n2\n", b"3\n4\n")  # every line kept its time
        assert len(LineTimes(f.fileno(), (str(tmp_path / "small.log"),)).offsets) == 2
    # a line continued by a later write keeps its start's time; the next line gets its own
    log = RotatingLog(str(tmp_path / "parts.log"), 128 << 10)
    log.write(b"par")
    time.sleep(0.002)
    log.write(b"tial\nnext\n")
    with open(tmp_path / "parts.log", "rb") as f:
        stamper = Stamper(LineTimes(f.fileno(), (str(tmp_path / "parts.log"),)), True, None, None)
        one, two = stamper.render(f.read(), 0).decode().splitlines()
    assert one.endswith(" partial") and two.endswith(" next") and one[:30] < two[:30]


def test_writers_of_one_log_share_its_cap(tmp_path: Path) -> None:
    """Three detached executions appending to one ``exec.log``: one cap for the file and its
    rotated copy, and no writer keeps an unlinked copy of its own."""
    from boxlite.agent.logfile import SharedLogs

    cap = 128 << 10
    logs = SharedLogs()
    path = str(tmp_path / "exec.log")
    writers = [logs.open(path, cap) for _ in range(3)]
    for _ in range(200):
        for i, w in enumerate(writers):
            w.write(f"{i}".encode() * 1000)
    sizes = [os.stat(path).st_size, os.stat(path + ".1").st_size]
    assert all(0 < s <= cap for s in sizes), sizes
    assert sorted(os.listdir(tmp_path)) == ["exec.log", "exec.log.1", "exec.log.1.idx", "exec.log.idx"]
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor
            pass
    assert not [h for h in held if h.startswith(str(tmp_path)) and h.endswith("(deleted)")], held
    writers[0].close()
    writers[0].close()  # harmless twice
    with pytest.raises(ValueError):
        writers[0].write(b"x")
    writers[1].write(b"still open\n")
    for w in writers[1:]:
        w.close()
    again = logs.open(path, cap)  # the last writer closed the file: a new one opens it anew
    again.write(b"more\n")
    again.close()
    assert Path(path).read_bytes().endswith(b"still open\nmore\n")
