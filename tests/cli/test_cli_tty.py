"""``run -it`` in a real pseudo-terminal: raw mode, echo, Ctrl-C, resize, exit code, restore."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time

from support.cli import Cli, assert_one_line_error


class Terminal:
    """The host side of a pty whose slave is the controlling terminal of a child process."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 30, cols: int = 100) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.saved = termios.tcgetattr(self.slave)
        self.pid = os.fork()
        if self.pid == 0:  # child: new session with the pty as controlling terminal
            try:
                os.setsid()
                fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(self.slave, fd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.seen = b""
        self.pos = 0

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def expect(self, token: bytes, timeout: float = 20.0) -> None:
        """Read until ``token`` appears after everything matched so far."""
        deadline = time.monotonic() + timeout
        while token not in self.seen[self.pos :]:
            left = deadline - time.monotonic()
            assert left > 0, f"{token!r} not seen; output so far: {self.seen.decode(errors='replace')!r}"
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    time.sleep(0.05)
        self.pos = self.seen.index(token, self.pos) + len(token)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"boxlite did not exit; output: {self.seen!r}")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def test_run_it_is_a_real_terminal(cli: Cli) -> None:
    env = cli.env() | {"TERM": "xterm-256color"}
    term = Terminal(cli.argv("run", "-it", "--rm", "--rootfs", str(cli.rootfs), "sh"), env)
    try:
        term.expect(b"# ")
        term.type(b"echo typed-$((6*7)); stty size; echo $TERM; tty\r")
        term.expect(b"echo typed-$((6*7))")  # the box's terminal echoes what we type
        term.expect(b"typed-42\r\n30 100\r\nxterm-256color\r\n/dev/pts/")
        term.resize(40, 120)  # the kernel sends SIGWINCH to boxlite, which resizes the box's pty
        for attempt in range(20):  # the resize travels asynchronously: ask until it has arrived
            term.type(b"stty size\r")
            try:
                term.expect(b"40 120", timeout=1.0)
                break
            except AssertionError:
                assert attempt < 19, term.seen
        term.type(b"sleep 30; echo not-interrupted\r")
        time.sleep(0.5)
        term.type(b"\x03")  # Ctrl-C goes to the box's foreground process, not to boxlite
        term.expect(b"^C")
        term.expect(b"# ")
        term.type(b"exit 7\r")
        assert term.wait() == 7
        assert b"\nnot-interrupted" not in term.seen
        assert termios.tcgetattr(term.slave) == term.saved  # raw mode was undone
    finally:
        term.close()
    assert cli.ok("ls", "-a", "-q") == ""


def test_it_without_a_terminal_is_refused(cli: Cli) -> None:
    assert_one_line_error(cli("run", "-it", "--rm", "--rootfs", str(cli.rootfs), "sh"), 125, "not a TTY")
