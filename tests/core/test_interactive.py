"""InteractiveBox drives a shell in the box from a (pseudo) terminal."""

from __future__ import annotations

import os
import pty
import sys
import time
from pathlib import Path

SCRIPT = """
import asyncio, sys, boxlite
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1], engine="namespace"))
    async with boxlite.InteractiveBox(rootfs_path=sys.argv[2], runtime=rt) as box:
        status = await box.wait()
    await rt.shutdown()
    print("EXIT", status.exit_code)
asyncio.run(main())
"""


def test_interactive_box_in_a_real_terminal(home: Path, busybox_rootfs: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        os.execve(sys.executable, [sys.executable, "-c", SCRIPT, str(home), str(busybox_rootfs)], env)
    seen = b""

    def read_until(marker: bytes, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
        assert marker in seen, seen.decode(errors="replace")

    read_until(b"# ")  # the box's shell prompt, in raw mode
    os.write(fd, b"echo $((6*7)); tty\r")
    read_until(b"/dev/pts/")
    assert b"42" in seen
    os.write(fd, b"exit 3\r")
    read_until(b"EXIT 3")
    os.waitpid(pid, 0)
