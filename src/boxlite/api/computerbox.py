"""``ComputerBox``: a desktop in a box, driven from outside (the "computer use" tool of AI agents).

The box runs Xvfb + openbox + x11vnc + websockify/noVNC (image built offline from Debian
packages, see ``images/recipes/desktop.py``). Every action is one ``exec`` of a fixed program with
the caller's values as separate argv entries (never a shell string), with a deadline and a cap
on what the box may send back: the box and its programs are assumed hostile.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import contextlib
import secrets
import string
import time
from pathlib import Path
from typing import Any

from ..errors import BoxliteError, ConfigError, ParseError, ResourceExhaustedError, TimeoutError
from ..images.recipes import ensure_recipe
from ..images.recipes.desktop import SESSION_PATH
from .execution import Execution
from .runtime import Boxlite
from .screenshot import xwd_to_png
from .simplebox import SimpleBox

__all__ = [
    "ComputerBox",
    "DesktopError",
    "DesktopNotReadyError",
    "ScreenshotTooLargeError",
]

COMPUTERBOX_CPUS = 2
COMPUTERBOX_MEMORY_MIB = 2048
DISPLAY = ":1"
DISPLAY_WIDTH = 1024
DISPLAY_HEIGHT = 768
NOVNC_GUEST_PORT = 6080
VNC_GUEST_PORT = 5900
DESKTOP_READY_TIMEOUT = 60.0
READY_RETRY_DELAY = 0.5
ACTION_TIMEOUT = 30.0
"""Seconds one action (xdotool, xwd) may take before it is killed and TimeoutError raised."""
MAX_SCREENSHOT_BYTES = 64 * 1024 * 1024
"""Raw (XWD) screenshot bytes read from the box at most (3 MiB at 1024x768)."""
MAX_OUTPUT_BYTES = 64 * 1024
"""Output of any other action read at most (xdotool prints a few bytes)."""
MAX_TYPE_CHARS = 64 * 1024
MAX_COORDINATE = 32767
LOG_TAIL_BYTES = 8 * 1024
SCROLL_BUTTONS = {"up": "4", "down": "5", "left": "6", "right": "7"}


class DesktopError(BoxliteError):
    """The desktop session in the box exited or an action on it failed (message: its log tail)."""


class DesktopNotReadyError(DesktopError, TimeoutError):
    """The desktop did not become ready within the timeout (message: its log tail)."""


class ScreenshotTooLargeError(DesktopError, ResourceExhaustedError):
    """The box sent more screenshot bytes than ``max_screenshot_bytes``."""


class ComputerBox(SimpleBox):
    """A desktop (``DISPLAY=:1``, 1024x768 by default) with mouse, keyboard and screenshots.

    Without ``image``/``rootfs_path`` the desktop image is built from Debian packages on first
    use (cached under the runtime's home). A person can watch and take over through
    :meth:`novnc_url` (published on host loopback only, VNC password in the URL).
    """

    def __init__(
        self,
        cpu: int = COMPUTERBOX_CPUS,
        memory: int = COMPUTERBOX_MEMORY_MIB,
        gui_http_port: int | None = None,
        gui_https_port: int | None = None,
        runtime: Boxlite | None = None,
        *,
        width: int = DISPLAY_WIDTH,
        height: int = DISPLAY_HEIGHT,
        max_screenshot_bytes: int = MAX_SCREENSHOT_BYTES,
        action_timeout: float = ACTION_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if gui_https_port is not None:
            raise ConfigError("gui_https_port: this ComputerBox serves noVNC over HTTP on host loopback only")
        self._width = _dimension(width, "width")
        self._height = _dimension(height, "height")
        self._max_shot = int(_positive(max_screenshot_bytes, "max_screenshot_bytes"))
        self._action_timeout = float(_positive(action_timeout, "action_timeout"))
        if gui_http_port is not None:
            _coordinate(gui_http_port, "gui_http_port")
        env = dict(kwargs.pop("env", None) or {})
        env.setdefault("DISPLAY", DISPLAY)
        ports = list(kwargs.pop("ports", None) or [])
        ports.insert(0, {"guest_port": NOVNC_GUEST_PORT, "host_port": gui_http_port, "host_ip": "127.0.0.1"})
        super().__init__(memory_mib=memory, cpus=cpu, runtime=runtime, env=env, ports=ports, **kwargs)
        # VNC allows 8 password characters; they keep other local users of the host out.
        self._vnc_password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))
        self._session: Execution | None = None
        self._session_task: asyncio.Task[int | None] | None = None
        self._session_log: collections.deque[bytes] = collections.deque()
        self._session_log_size = 0

    # --- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> ComputerBox:
        if self._options.image is None and self._options.rootfs_path is None:
            runtime = self._runtime or Boxlite.default()
            images = Path(runtime.home.root) / "images"
            self._options.rootfs_path = str(await asyncio.to_thread(ensure_recipe, "desktop", images))
        await super().__aenter__()
        if self._session is None:
            try:
                await self._start_session()
            except BaseException:
                await self.stop()
                raise
        return self

    async def start(self) -> ComputerBox:
        return await self.__aenter__()

    async def stop(self) -> None:
        task, self._session_task, self._session = self._session_task, None, None
        await super().stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _start_session(self) -> None:
        argv = [str(self._width), str(self._height), str(VNC_GUEST_PORT), str(NOVNC_GUEST_PORT)]
        env = {"BOXLITE_VNC_PASSWORD": self._vnc_password, "DISPLAY": DISPLAY}
        self._session = await self.box.exec(SESSION_PATH, argv, env=env, stdin=False)
        self._session_task = asyncio.create_task(self._watch_session(self._session))

    async def _watch_session(self, execution: Execution) -> int | None:
        """Keep the last LOG_TAIL_BYTES of the session's output; return its exit code."""

        async def drain(chunks: Any) -> None:
            async for chunk in chunks:
                self._session_log.append(chunk)
                self._session_log_size += len(chunk)
                while self._session_log_size > LOG_TAIL_BYTES and len(self._session_log) > 1:
                    self._session_log_size -= len(self._session_log.popleft())

        await asyncio.gather(drain(execution.stdout().bytes()), drain(execution.stderr().bytes()))
        status = await execution.wait()
        return status.exit_code

    def _log_tail(self) -> str:
        return b"".join(self._session_log)[-LOG_TAIL_BYTES:].decode("utf-8", "replace")

    async def _program_logs(self) -> str:
        """The tail of each desktop program's log in the box (best effort, capped)."""
        with contextlib.suppress(BoxliteError):
            logs = (f"/tmp/boxlite-desktop/{n}.log" for n in ("xvfb", "openbox", "x11vnc", "websockify"))
            out = await self._run("tail", "-n", "15", *logs, timeout=10.0, limit=LOG_TAIL_BYTES * 4, check=False)
            return out.decode("utf-8", "replace")[-LOG_TAIL_BYTES:]
        return ""

    async def _session_failure(self) -> DesktopError | None:
        task = self._session_task
        if task is None or not task.done():
            return None
        code = None if task.cancelled() or task.exception() else task.result()
        return DesktopError(f"the desktop session exited (status {code}):\n{self._log_tail()}")

    async def wait_until_ready(self, timeout: float = DESKTOP_READY_TIMEOUT) -> None:
        """Return once the display answers and the window manager runs.

        Raises DesktopError at once if the session exits, DesktopNotReadyError after ``timeout``
        seconds; both carry the log tail."""
        deadline = time.monotonic() + float(timeout)
        while True:
            failure = await self._session_failure()
            if failure is not None:
                raise failure
            left = deadline - time.monotonic()
            if left <= 0:
                logs = await self._program_logs()
                raise DesktopNotReadyError(
                    f"desktop not ready within {timeout:g} s; session output:\n{self._log_tail()}\nlogs:\n{logs}"
                )
            try:
                step = max(1.0, min(left, self._action_timeout))
                if b"session up" in b"".join(self._session_log):
                    await self._run("xprop", "-root", "_NET_SUPPORTING_WM_CHECK", timeout=step)
                    await self._run("xdotool", "getdisplaygeometry", timeout=step)
                    return
            except DesktopError:
                pass
            await asyncio.sleep(min(READY_RETRY_DELAY, max(0.0, deadline - time.monotonic())))

    # --- one action -------------------------------------------------------------------------
    async def _run(
        self, *argv: str, timeout: float | None = None, limit: int = MAX_OUTPUT_BYTES, check: bool = True,
        too_large: type[DesktopError] = DesktopError,
    ) -> bytes:  # fmt: skip
        """Run ``argv`` on the display; stdout (at most ``limit`` bytes) within ``timeout``."""
        timeout = self._action_timeout if timeout is None else timeout
        execution = await self.box.exec(argv[0], list(argv[1:]), env={"DISPLAY": DISPLAY}, stdin=False)
        out = bytearray()
        err = bytearray()

        async def read() -> None:
            async for chunk in execution.stdout().bytes():
                out.extend(chunk)
                if len(out) > limit:
                    raise too_large(f"{argv[0]} sent more than {limit} bytes")

        async def read_err() -> None:
            async for chunk in execution.stderr().bytes():
                if len(err) < LOG_TAIL_BYTES:
                    err.extend(chunk[: LOG_TAIL_BYTES - len(err)])

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(read(), read_err())
                status = await execution.wait()
        except BaseException as e:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(execution.kill(), 5)
            if isinstance(e, (builtins.TimeoutError, asyncio.TimeoutError)) and not isinstance(e, BoxliteError):
                raise DesktopError(f"{argv[0]} did not finish within {timeout:g} s") from None
            raise
        if check and status.exit_code != 0:
            what, stderr = " ".join(argv[:2]), err.decode("utf-8", "replace").strip()
            raise DesktopError(f"{what} exited with status {status.exit_code}: {stderr}")
        return bytes(out)

    # --- screen ------------------------------------------------------------------------------
    async def screenshot(self) -> dict[str, Any]:
        """The screen as PNG: ``{"data": base64 PNG, "width", "height", "format": "png"}`` (as BoxLite)."""
        png, width, height = await self.screenshot_png()
        return {"data": base64.b64encode(png).decode("ascii"), "width": width, "height": height, "format": "png"}

    async def screenshot_png(self) -> tuple[bytes, int, int]:
        """The screen as (PNG bytes, width, height); the box sends at most ``max_screenshot_bytes``."""
        raw = await self._run("xwd", "-root", "-silent", limit=self._max_shot, too_large=ScreenshotTooLargeError)
        return await asyncio.to_thread(xwd_to_png, raw)

    async def get_screen_size(self) -> tuple[int, int]:
        out = await self._run("xdotool", "getdisplaygeometry")
        parts = out.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ParseError(f"unexpected xdotool getdisplaygeometry output {out[:80]!r}")
        return int(parts[0]), int(parts[1])

    async def cursor_position(self) -> tuple[int, int]:
        out = await self._run("xdotool", "getmouselocation", "--shell")
        values = dict(line.split("=", 1) for line in out.decode("ascii", "replace").splitlines() if "=" in line)
        try:
            return int(values["X"]), int(values["Y"])
        except (KeyError, ValueError):
            raise ParseError(f"unexpected xdotool getmouselocation output {out[:80]!r}") from None

    # --- mouse -------------------------------------------------------------------------------
    async def mouse_move(self, x: int, y: int) -> None:
        await self._run("xdotool", "mousemove", "--sync", _coordinate(x, "x"), _coordinate(y, "y"))

    async def left_click(self) -> None:
        await self._run("xdotool", "click", "1")

    async def right_click(self) -> None:
        await self._run("xdotool", "click", "3")

    async def middle_click(self) -> None:
        await self._run("xdotool", "click", "2")

    async def double_click(self) -> None:
        await self._run("xdotool", "click", "--repeat", "2", "--delay", "100", "1")

    async def triple_click(self) -> None:
        await self._run("xdotool", "click", "--repeat", "3", "--delay", "100", "1")

    async def left_click_drag(self, start_x: int, start_y: int, end_x: int, end_y: int) -> None:
        sx, sy = _coordinate(start_x, "start_x"), _coordinate(start_y, "start_y")
        ex, ey = _coordinate(end_x, "end_x"), _coordinate(end_y, "end_y")
        await self._run(
            "xdotool", "mousemove", "--sync", sx, sy, "mousedown", "1", "sleep", "0.1",
            "mousemove", "--sync", ex, ey, "sleep", "0.1", "mouseup", "1",
        )  # fmt: skip

    async def scroll(self, x: int, y: int, direction: str, amount: int = 3) -> None:
        """Scroll ``amount`` steps ``direction`` ('up', 'down', 'left', 'right') at (x, y)."""
        button = SCROLL_BUTTONS.get(direction.lower()) if isinstance(direction, str) else None
        if button is None:
            raise ConfigError(f"scroll direction must be one of {', '.join(SCROLL_BUTTONS)}, got {direction!r}")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= 100:
            raise ConfigError(f"scroll amount must be an integer from 1 to 100, got {amount!r}")
        await self._run(
            "xdotool", "mousemove", "--sync", _coordinate(x, "x"), _coordinate(y, "y"),
            "click", "--repeat", str(amount), button,
        )  # fmt: skip

    # --- keyboard ----------------------------------------------------------------------------
    async def type(self, text: str) -> None:
        """Type ``text`` as keystrokes (it is one argv entry: never interpreted by a shell)."""
        if not isinstance(text, str):
            raise ConfigError(f"type() takes a str, got {type(text).__name__}")
        if len(text) > MAX_TYPE_CHARS:
            raise ConfigError(f"type() takes at most {MAX_TYPE_CHARS} characters, got {len(text)}")
        if "\x00" in text:
            raise ConfigError("type() text must not contain NUL")
        if text:
            timeout = self._action_timeout + len(text) * 0.05
            await self._run("xdotool", "type", "--delay", "12", "--", text, timeout=timeout)

    async def key(self, text: str) -> None:
        """Press keys, e.g. ``"Return"``, ``"ctrl+a"``, ``"ctrl+a BackSpace"`` (xdotool key names)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"key() takes a non-empty str of xdotool key names, got {text!r}")
        keys = text.split()
        if len(keys) > 256 or any(len(k) > 64 or k.startswith("-") for k in keys):
            raise ConfigError(f"key() takes up to 256 key names of at most 64 characters, got {text[:80]!r}")
        await self._run("xdotool", "key", "--", *keys)

    # --- extras ------------------------------------------------------------------------------
    async def launch(self, program: str, *args: str) -> Execution:
        """Start a GUI program on the display and return without waiting for it (it runs until
        it exits or the box stops)."""
        if not isinstance(program, str) or not all(isinstance(a, str) for a in args):
            raise ConfigError("launch() takes a program and str arguments")
        return await self.box.exec(program, list(args), env={"DISPLAY": DISPLAY}, stdin=False)

    def novnc_url(self) -> str:
        """URL of the noVNC page (host loopback) that connects to this desktop, password included."""
        network = self.info().network
        for port in (network.published_ports if network else None) or []:
            if port.guest_port == NOVNC_GUEST_PORT and port.protocol == "tcp":
                host = f"[{port.host_ip}]" if ":" in port.host_ip else port.host_ip
                return f"http://{host}:{port.host_port}/vnc.html?autoconnect=1&password={self._vnc_password}"
        raise DesktopError("the noVNC port is not published")


def _coordinate(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COORDINATE:
        raise ConfigError(f"{name} must be an integer from 0 to {MAX_COORDINATE}, got {value!r}")
    return str(value)


def _dimension(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 64 <= value <= 8192:
        raise ConfigError(f"{name} must be an integer from 64 to 8192, got {value!r}")
    return value


def _positive(value: Any, name: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return value
