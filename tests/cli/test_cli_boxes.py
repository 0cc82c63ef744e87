"""Detached boxes: ``run -d``, ``create/start/stop/restart``, ``ls/ps``, ``exec``, ``cp``,
``inspect``, ``stats``, ``logs``, ``rm``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from support.cli import Cli, assert_one_line_error


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_detached_box_lifecycle(cli: Cli, tmp_path: Path) -> None:
    box_id = cli.ok(
        "run", "-d", "--name", "web", "--rootfs", str(cli.rootfs), "-e", "MODE=box",
        "sh", "-c", "echo started; echo oops >&2; sleep 600",
    ).strip()  # fmt: skip
    assert len(box_id) == 12
    # ls/ps: table and json agree
    table = cli.ok("ps").splitlines()
    assert table[0].split() == ["ID", "NAME", "IMAGE", "COMMAND", "STATE", "PORTS", "CREATED"]
    row = table[1].split()
    assert (row[0], row[1], row[3]) == (box_id[-12:], "web", "sh")
    assert " running " in table[1]
    assert str(cli.rootfs).endswith(row[2].lstrip("…"))  # long paths are shortened from the left
    [info] = cli.json("--json", "ls")  # type: ignore[misc]
    assert (info["id"], info["name"], info["state"]["status"], info["detach"]) == (box_id, "web", "running", True)

    # exec by short id and id prefix; env from run plus -e/-w/-u; exit codes
    out = cli("exec", "-e", "X=1", "-w", "/home/user", "-u", "user", box_id[-12:], "--", "sh", "-c",
              "echo $MODE $X; pwd; id -un; exit 9")  # fmt: skip
    assert (out.returncode, out.stdout.split()) == (9, ["box", "1", "/home/user", "user"])
    assert cli("exec", box_id[:20].lower(), "false").returncode == 1
    assert_one_line_error(cli("exec", "web", "nope"), 127, "nope")

    # cp in both directions (file and directory)
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("payload\n")
    cli.ok("cp", str(src), "web:/root")
    assert cli.ok("exec", "web", "cat", "/root/data/sub/f.txt") == "payload\n"
    cli.ok("cp", "web:/root/data/sub/f.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "payload\n"
    cli.ok("cp", "web:/root/data", str(tmp_path / "back"))
    assert (tmp_path / "back" / "sub" / "f.txt").read_text() == "payload\n"
    assert_one_line_error(cli("cp", "web:/nope", str(tmp_path)), 125, "/nope")
    assert_one_line_error(cli("cp", str(src), str(tmp_path / "x")), 125, "BOX:PATH")

    # inspect, stats, logs
    [insp] = cli.json("inspect", "web")  # type: ignore[misc]
    assert (insp["type"], insp["id"], insp["image"], insp["state"]["running"]) == ("box", box_id, str(cli.rootfs), True)
    [stat] = cli.json("--json", "stats", "web")  # type: ignore[misc]
    assert stat["id"] == box_id and stat["pids"] >= 2 and stat["memory_bytes"] > 0
    assert cli.ok("stats").splitlines()[0].split()[:3] == ["ID", "NAME", "CPU"]
    _wait_for(lambda: sorted(cli.ok("logs", "web").split()) == ["oops", "started"])

    # rm refuses a running box; stop/start/restart keep it and its files; rm -f removes it
    assert_one_line_error(cli("rm", "web"), 125, "running")
    assert cli.ok("stop", "-t", "1", "web") == "web\n"
    assert cli.ok("ps", "-q") == ""
    cli.ok("start", "web")
    cli.ok("restart", "-t", "1", "web")
    assert cli.ok("exec", "web", "cat", "/root/data/sub/f.txt") == "payload\n"  # the writable layer persisted
    cli.ok("rm", "-f", "web")
    assert cli.ok("ls", "-a", "-q") == ""


def test_main_process_output_is_followed_until_the_box_stops(cli: Cli) -> None:
    import subprocess

    cli.ok("run", "-d", "--name", "job", "--rootfs", str(cli.rootfs), "sh", "-c", "echo first; sleep 600")
    follow = subprocess.Popen(cli.argv("logs", "-f", "job"), stdout=subprocess.PIPE, text=True, env=cli.env())
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "first\n"
        cli.ok("stop", "-t", "1", "job")
        assert follow.wait(timeout=30) == 0  # -f ends when the box stops
    finally:
        follow.kill()
    assert_one_line_error(cli("exec", "job", "true"), 125, "not running")
    assert_one_line_error(cli("run", "-d", "--rm", "--rootfs", str(cli.rootfs), "missing-cmd"), 127, "missing-cmd")
    assert cli.ok("ls", "-a", "-q").split() == [cli.json("inspect", "job")[0]["short_id"]]  # type: ignore[index]


def test_create_then_start(cli: Cli) -> None:
    box_id = cli.ok("create", "--name", "idle", "--rootfs", str(cli.rootfs), "-w", "/tmp").strip()
    cli.ok("create", "--name", "withcmd", "--rootfs", str(cli.rootfs), "sh", "-c", "echo main-ran; sleep 600")
    [_, info] = cli.json("ls", "-a", "--format", "json")  # type: ignore[misc]  # newest first
    assert (info["id"], info["state"]["status"]) == (box_id, "configured")
    cli.ok("start", "idle", "withcmd")
    _wait_for(lambda: cli.ok("logs", "withcmd") == "main-ran\n")
    assert cli.ok("exec", "idle", "pwd") == "/tmp\n"
    assert "no logs" in cli("logs", "idle").stderr
    cli.ok("rm", "-f", "idle", "withcmd")
    assert cli.ok("ls", "-a", "-q") == ""


def test_published_port(cli: Cli) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.ok("run", "-d", "-p", f"{port}:8080", "--rootfs", str(cli.rootfs), "sh", "-c",
           "echo hello-from-box | nc -l -p 8080; sleep 600")  # fmt: skip
    reply = b""

    def answered() -> bool:
        nonlocal reply
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                reply = conn.recv(100)
        except OSError:
            return False
        return bool(reply)

    _wait_for(answered, timeout=20)
    assert reply == b"hello-from-box\n"
