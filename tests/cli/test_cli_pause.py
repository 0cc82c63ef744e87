"""``boxlite pause`` / ``boxlite resume``: a detached box's processes stop and go on where they
were; ``ls`` shows it paused (from another process), ``exec`` on it is one clear error."""

from __future__ import annotations

import time

from support.cli import Cli, assert_one_line_error

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"


def _count(cli: Cli) -> int:
    return int(cli.ok("exec", "ctr", "cat", "/tmp/count"))


def test_pause_and_resume(cli: Cli) -> None:
    cli.ok("run", "-d", "--name", "ctr", "--rootfs", str(cli.rootfs), "sh", "-c", COUNTER)
    deadline = time.monotonic() + 60
    while cli("exec", "ctr", "cat", "/tmp/count").returncode != 0 or _count(cli) < 3:
        assert time.monotonic() < deadline, "the counter never started"
        time.sleep(0.2)
    assert cli.ok("pause", "ctr") == "ctr\n"
    listed = cli.json("--json", "ls")
    assert isinstance(listed, list) and [i["state"]["status"] for i in listed] == ["paused"]
    assert "paused" in cli.ok("ls").splitlines()[1].split()
    assert_one_line_error(cli("exec", "ctr", "true"), 125, "paused")
    assert_one_line_error(cli("rm", "ctr"), 125, "paused")
    time.sleep(1.0)  # ~20 counts if it were running
    assert cli.ok("resume", "ctr") == "ctr\n"
    first = _count(cli)
    time.sleep(0.5)
    assert _count(cli) > first
    assert cli.ok("--json", "inspect", "ctr").count('"running"') >= 1
    assert_one_line_error(cli("resume", "nope"), 125, "nope")
    cli.ok("pause", "ctr")
    assert cli.ok("stop", "-t", "2", "ctr") == "ctr\n"  # a paused box stops
    listed = cli.json("--json", "ls", "-a")
    assert isinstance(listed, list) and listed[0]["state"]["status"] in ("stopped", "exited")
    cli.ok("rm", "ctr")


def test_fork(cli: Cli) -> None:
    cli.ok("run", "-d", "--name", "src", "--rootfs", str(cli.rootfs), "sleep", "600")
    assert cli("fork", "-n", "0", "src").returncode != 0
    if cli.engine == "namespace":
        assert_one_line_error(cli("fork", "src"), 125, "criu")
    else:
        kid = cli.ok("fork", "src").strip()
        assert len(kid) == 12 and kid != "src"
        assert cli.ok("exec", kid, "echo", "copy") == "copy\n"
        cli.ok("rm", "-f", kid)
    assert cli.ok("exec", "src", "echo", "on") == "on\n"
    cli.ok("rm", "-f", "src")
