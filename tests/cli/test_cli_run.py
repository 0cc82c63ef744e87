"""``run`` and ``exec``: exit codes, streams, options and error reporting."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from support.cli import Cli, assert_one_line_error


def test_run_propagates_exit_code_and_streams(cli: Cli) -> None:
    proc = cli("run", "--rm", "--rootfs", str(cli.rootfs), "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    assert cli.ok("ls", "-a", "-q") == ""  # --rm removed the box


def test_run_signal_exit_code_is_128_plus_n(cli: Cli) -> None:
    proc = cli("run", "--rm", "--rootfs", str(cli.rootfs), "sh", "-c", "kill -TERM $$")
    assert proc.returncode == 128 + signal.SIGTERM


def test_run_env_workdir_user_and_stdin(cli: Cli) -> None:
    out = cli.ok(
        "run", "--rm", "-i", "--rootfs", str(cli.rootfs), "-e", "GREETING=hi there", "-e", "EMPTY=", "-w", "/tmp",
        "-u", "user", "sh", "-c", 'echo "$GREETING|$EMPTY"; pwd; id -u; cat',
        input="from stdin\n",
    )  # fmt: skip
    assert out.splitlines() == ["hi there|", "/tmp", "1000", "from stdin"]


def test_run_without_rm_leaves_a_stopped_box(cli: Cli) -> None:
    cli.ok("run", "--name", "kept", "--rootfs", str(cli.rootfs), "sh", "-c", "echo kept-output")
    [box] = cli.json("ls", "-a", "--format", "json")  # type: ignore[misc]
    assert (box["name"], box["state"]["status"]) == ("kept", "stopped")
    assert cli.ok("logs", "kept") == "kept-output\n"
    cli.ok("start", "kept")  # a box made by a foreground run can be started in the background later
    assert cli.ok("exec", "kept", "echo", "still-up") == "still-up\n"


def test_what_a_foreground_command_leaves_running_ends_with_it(cli: Cli) -> None:
    """As a docker container ends with its PID 1: a process the command left running is killed
    when the command ends, not asked to stop (its TERM trap never runs); the box's files stay."""
    script = (  # done once the background process wrote /bg (so its trap is set): no race with a slow start
        "(trap 'echo asked > /asked' TERM; echo bg > /bg; while true; do sleep 0.1; done) & "
        "while [ ! -s /bg ]; do sleep 0.05; done; echo done"
    )
    assert cli.ok("run", "--name", "left", "--rootfs", str(cli.rootfs), "sh", "-c", script) == "done\n"
    cli.ok("start", "left")
    assert cli.ok("exec", "left", "sh", "-c", "cat /bg; cat /asked 2>/dev/null || echo none") == "bg\nnone\n"


def test_exec_detach_leaves_the_command_running(cli: Cli) -> None:
    """``exec -d``: boxlite returns at once with nothing printed; the command goes on in the box
    after boxlite exited; a command that cannot start is reported as without -d."""
    cli.ok("run", "-d", "--name", "bg", "--rootfs", str(cli.rootfs), "sleep", "600")
    proc = cli("exec", "-d", "-e", "WHO=bg", "-w", "/tmp", "bg", "sh", "-c", "sleep 3; echo $WHO in $(pwd) > /mark")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert cli.ok("exec", "bg", "sh", "-c", "cat /mark 2>/dev/null || echo none") == "none\n"  # not waited for (3 s)
    deadline = time.monotonic() + 30
    while cli.ok("exec", "bg", "sh", "-c", "cat /mark 2>/dev/null || echo none") != "bg in /tmp\n":
        assert time.monotonic() < deadline, "the detached command never ran to its end"
        time.sleep(0.2)
    assert_one_line_error(cli("exec", "-d", "bg", "no-such-cmd"), 127, "no-such-cmd")
    assert_one_line_error(cli("exec", "-d", "-t", "bg", "true"), 125, "-d")


def test_exec_failures_map_to_126_and_127(cli: Cli) -> None:
    assert_one_line_error(cli("run", "--rm", "--rootfs", str(cli.rootfs), "no-such-cmd"), 127, "no-such-cmd")
    assert_one_line_error(cli("run", "--rm", "--rootfs", str(cli.rootfs), "/etc/passwd"), 126, "/etc/passwd")
    assert_one_line_error(cli("run", "--rm", "--rootfs", str(cli.rootfs), "-u", "ghost", "true"), 126, "ghost")


def test_errors_are_one_line_without_traceback(cli: Cli, tmp_path: object) -> None:
    rootfs = str(cli.rootfs)
    assert_one_line_error(cli("run", "--rm", "--rootfs", rootfs, "-v", "/no/such/dir:/mnt", "true"), 125, "volume")
    unsupported = cli("run", "--rm", "--engine", "vm", "--rootfs", rootfs, "-p", "::1:8080:80", "true")
    assert_one_line_error(unsupported, 125, "IPv4")
    assert_one_line_error(cli("run", "--rm", "--rootfs", "/does/not/exist", "true"), 125, "/does/not/exist")
    assert_one_line_error(cli("run", "--bogus-flag", "x"), 125, "--bogus-flag")
    assert_one_line_error(cli("run", "--rm", "--rootfs", rootfs, "--memory", "lots", "true"), 125, "--memory")
    assert_one_line_error(cli("exec", "nobox", "true"), 125, "nobox")
    assert_one_line_error(cli("rm", "nobox"), 125, "nobox")
    assert cli.ok("ls", "-a", "-q") == ""  # failed runs leave nothing behind with --rm


def test_console_script_is_installed() -> None:
    import shutil
    import subprocess

    exe = shutil.which("boxlite") or f"{sys.prefix}/bin/boxlite"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "boxlite" in proc.stdout


def test_ctrl_c_is_forwarded_to_the_command(cli: Cli) -> None:
    import subprocess
    import time

    script = "trap 'echo got-int; exit 3' INT; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen(
        cli.argv("run", "--rm", "--rootfs", str(cli.rootfs), "sh", "-c", script),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=cli.env(), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (3, "got-int\n", "")


def test_volumes_ro_and_rw(cli: Cli, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from-host\n")
    out = cli("run", "--rm", "-v", f"{shared}:/ro:ro", "-v", f"{shared}:/rw", "--rootfs", str(cli.rootfs),
              "sh", "-c", "cat /ro/in.txt; echo from-box > /rw/out.txt; touch /ro/nope")  # fmt: skip
    assert out.returncode == 1 and out.stdout == "from-host\n" and "Read-only" in out.stderr
    assert (shared / "out.txt").read_text() == "from-box\n"


def test_debug_shows_the_traceback(cli: Cli) -> None:
    proc = cli("--debug", "exec", "nobox", "true")
    assert proc.returncode == 125 and "Traceback" in proc.stderr and "boxlite: error: no such box" in proc.stderr


def test_closed_stdout_pipe_ends_the_command_with_sigpipe(cli: Cli) -> None:
    import shlex
    import subprocess

    cmd = shlex.join(cli.argv("run", "--rm", "--rootfs", str(cli.rootfs), "yes"))
    proc = subprocess.run(["bash", "-c", f'{cmd} | head -2; echo "status=${{PIPESTATUS[0]}}"'],
                          capture_output=True, text=True, timeout=60, env=cli.env())  # fmt: skip
    assert proc.stdout == "y\ny\nstatus=141\n", proc.stderr


def test_network_is_on_by_default_and_can_be_turned_off(cli: Cli) -> None:
    """As in BoxLite, a box has outbound network unless asked otherwise (`--network none`)."""
    script = "cat /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -v -e Inter -e face | sort | tr '\\n' ' '"
    on = cli.ok("run", "--rm", "--rootfs", str(cli.rootfs), "sh", "-c", script)
    off = cli.ok("run", "--rm", "--network", "none", "--rootfs", str(cli.rootfs), "sh", "-c", script)
    assert off.split() == ["lo"]
    assert "lo" in on.split() and len(on.split()) > 1, on


def test_disk_size_bounds_what_the_box_may_write(cli: Cli) -> None:
    """``--disk-size GB`` (BoxLite's flag): a full disk is ENOSPC in the box; a bad size is one line."""
    fill = "dd if=/dev/zero of=/fill bs=1M count=200 2>&1; wc -c < /fill"
    out = cli.ok("run", "--rm", "--disk-size", "0.05", "--rootfs", str(cli.rootfs), "sh", "-c", fill)
    assert "No space left on device" in out, out
    assert 0 < int(out.split()[-1]) < 0.05 * (1 << 30), out
    assert_one_line_error(cli("run", "--rm", "--disk-size", "0", "--rootfs", str(cli.rootfs), "true"), 125, "disk")
