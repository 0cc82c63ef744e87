"""The README's CLI examples, as printed: ``run -d ... httpd -f -p 80`` serves on the published
port; a main process that exits shows as exited with its status; ``run -d`` of a command that
fails at once says so; exec failures and OOM kills have the documented statuses and messages."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

from boxlite.cli.run import _last_line
from support.cli import Cli, assert_one_line_error
from support.hostprocs import free_port


def _http_status(port: int, timeout: float = 60.0) -> int:
    """The status of ``GET /`` on 127.0.0.1:port, retried until the server answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/")
                return conn.getresponse().status
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            assert time.monotonic() < deadline, f"nothing answered on port {port}"
            time.sleep(0.2)


def test_readme_httpd_example_serves_on_the_published_port(cli: Cli) -> None:
    port = free_port()
    cli.ok("run", "-d", "--name", "web", "-p", f"{port}:80", "--rootfs", str(cli.rootfs), "httpd", "-f", "-p", "80")
    assert _http_status(port) == 404  # busybox httpd answers (there is no index.html in /)
    assert cli.json("ls", "--format", "json")[0]["state"]["status"] == "running"  # type: ignore[index]
    assert "Permission denied" not in cli.ok("logs", "web")
    cli.ok("rm", "-f", "web")


def test_exited_main_process_shows_in_ls_and_inspect(cli: Cli) -> None:
    box_id = cli.ok("run", "-d", "--name", "job", "--rootfs", str(cli.rootfs), "sh", "-c", "sleep 1; exit 5").strip()
    deadline = time.monotonic() + 60
    while cli.ok("ls", "-q") != "":
        assert time.monotonic() < deadline, "the box did not end with its main process"
        time.sleep(0.2)
    row = cli.ok("ls", "-a").splitlines()[1]
    assert row.split()[:2] == [box_id[-12:], "job"] and "exited (5)" in row
    [insp] = cli.json("inspect", "job")  # type: ignore[misc]
    assert (insp["state"]["status"], insp["state"]["exit_code"], insp["state"]["running"]) == ("exited", 5, False)
    assert_one_line_error(cli("exec", "job", "true"), 125, "not running")
    cli.ok("start", "job")  # it can run again
    cli.ok("rm", "-f", "job")
    assert cli.ok("ls", "-a", "-q") == ""


def test_run_d_of_a_command_failing_at_once_says_so(cli: Cli) -> None:
    proc = cli("run", "-d", "--name", "bad", "--rootfs", str(cli.rootfs), "sh", "-c", "echo 'cannot go on' >&2; exit 3")
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == "boxlite: error: the main process exited at once with status 3: cannot go on"
    assert len(proc.stdout.strip()) == 12  # the id, to look at the box
    assert cli.json("inspect", "bad")[0]["state"]["exit_code"] == 3  # type: ignore[index]
    gone = cli("run", "-d", "--rm", "--rootfs", str(cli.rootfs), "sh", "-c", "exit 4")
    assert gone.returncode == 4 and "status 4" in gone.stderr
    assert cli.ok("ls", "-a", "-q").split() == [cli.json("inspect", "bad")[0]["short_id"]]  # type: ignore[index]
    assert_one_line_error(cli("run", "-d", "--rm", "--rootfs", str(cli.rootfs), "missing-cmd"), 127, "missing-cmd")


def test_bad_working_directory_is_126(cli: Cli) -> None:
    proc = cli("run", "--rm", "-w", "/no/such/dir", "--rootfs", str(cli.rootfs), "true")
    assert_one_line_error(proc, 126, "working directory", "/no/such/dir")


def test_oom_kill_is_said_on_the_cli(cli: Cli) -> None:
    # tail keeps its current line in memory and /dev/zero has none: it reaches the limit at the
    # speed of read() (a shell building a string took minutes under TCG)
    proc = cli("run", "--rm", "-m", "48m", "--rootfs", str(cli.rootfs), "tail", "/dev/zero", timeout=100)
    assert_one_line_error(proc, 137, "killed: out of memory (limit 48 MiB)")


def test_last_line_of_a_hostile_log_is_bounded(tmp_path: Path) -> None:
    """``run -d`` quotes the main log's last line: the box wrote that file, so only a regular
    file is read, and only its tail."""
    log = tmp_path / "main.log"
    log.write_bytes(b"x" * (8 << 20) + b"\nlast words\n\n")
    assert _last_line(log) == "last words"
    log.write_bytes(b"y" * 10000)  # one endless line: cut
    assert _last_line(log) == "y" * 200
    log.unlink()
    log.symlink_to("/etc/hostname")
    assert _last_line(log) == ""
    log.unlink()
    os.mkfifo(log)  # never blocks
    assert _last_line(log) == ""
