"""The main command of a detached box (``run -d IMAGE CMD``).

Executions die with the connection that started them, so ``run -d`` hands the command to a
small keeper process (``python -m boxlite.cli.background``) in its own session. The keeper
records the output in ``<box>/cli/console.log`` (read by ``boxlite logs``), the status in
``<box>/cli/exit.json``, and stops the box when the command ends (docker semantics; with
``--rm`` the box is then removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from ..api.box import Box
from ..api.options import Options
from ..api.runtime import Boxlite
from ..errors import BoxliteError
from .errors import EXIT_RUNTIME, describe

CLI_DIR = "cli"
READY_TIMEOUT = 60.0


def console_log(box_dir: Path) -> Path:
    return box_dir / CLI_DIR / "console.log"


def exit_file(box_dir: Path) -> Path:
    return box_dir / CLI_DIR / "exit.json"


def keeper_pid_file(box_dir: Path) -> Path:
    return box_dir / CLI_DIR / "keeper.pid"


def keeper_alive(box_dir: Path) -> bool:
    try:
        pid = int(keeper_pid_file(box_dir).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return not exit_file(box_dir).exists()


def save_main(box_dir: Path, argv: list[str], tty: bool = False) -> None:
    """Remember the box's main command (run by the keeper each time the box is started)."""
    cli = box_dir / CLI_DIR
    cli.mkdir(exist_ok=True)
    (cli / "main.json").write_text(json.dumps({"argv": argv, "tty": tty}))


def has_main(box_dir: Path) -> bool:
    return (box_dir / CLI_DIR / "main.json").is_file()


def launch(home: Path, box_dir: Path, box_id: str) -> None:
    """Start the keeper for the saved main command; return once it runs.

    Raises :class:`KeeperError` (message, exit code) when the command cannot be started."""
    cli = box_dir / CLI_DIR
    exit_file(box_dir).unlink(missing_ok=True)
    r, w = os.pipe()
    with open(cli / "keeper.err", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "boxlite.cli.background", str(home), box_id, str(w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            pass_fds=(w,), start_new_session=True, close_fds=True,
        )  # fmt: skip
    os.close(w)
    try:
        line = _read_line(r, READY_TIMEOUT)
    finally:
        os.close(r)
    if line.startswith("OK"):
        return
    if not line:
        status = proc.poll()
        raise KeeperError(f"the background runner exited early (status {status}); see {cli / 'keeper.err'}", 125)
    _, code, message = line.split(" ", 2)
    raise KeeperError(message.strip(), int(code))


class KeeperError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


async def keep(home: str, box_id: str, ready_fd: int) -> int:
    rt = Boxlite(Options(home_dir=home))
    try:
        box = await rt.get(box_id)
        if box is None:
            os.write(ready_fd, f"ERR {EXIT_RUNTIME} no such box: {box_id}\n".encode())
            return EXIT_RUNTIME
        box_dir = rt.home.box_dir(box.id)
        keeper_pid_file(box_dir).write_text(str(os.getpid()))
        spec = json.loads((box_dir / CLI_DIR / "main.json").read_text())
        argv: list[str] = spec["argv"]
        try:
            execution = await box.exec(argv[0], argv[1:], tty=bool(spec.get("tty")), stdin=False)
        except BoxliteError as e:
            message, code = describe(e)
            os.write(ready_fd, f"ERR {code} {message}\n".encode())
            await _stop(box)
            return code
        os.write(ready_fd, b"OK\n")
        os.close(ready_fd)
        with open(console_log(box_dir), "ab") as log:
            await asyncio.gather(_copy(execution.stdout().bytes(), log), _copy(execution.stderr().bytes(), log))
            log.flush()
        status = await execution.wait()
        with contextlib.suppress(OSError):  # the box may have been removed meanwhile
            result = {"exit_code": status.exit_code, "signal": status.signal, "error": status.error_message,
                      "finished_at": time.time()}  # fmt: skip
            exit_file(box_dir).write_text(json.dumps(result))
        await _stop(box)
        return 0
    finally:
        await rt.shutdown()


async def _copy(chunks: AsyncIterator[bytes], log: BinaryIO) -> None:
    async for chunk in chunks:
        with contextlib.suppress(OSError):
            log.write(chunk)
            log.flush()


async def _stop(box: Box) -> None:
    with contextlib.suppress(BoxliteError):
        await box.stop()


def main() -> None:
    home, box_id, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from .common import configure_logging

    configure_logging(bool(os.environ.get("BOXLITE_DEBUG")))
    sys.exit(asyncio.run(keep(home, box_id, fd)))


if __name__ == "__main__":
    main()
