"""``BoxRuntime`` and ``ManagedBox``: boxes that run host-registered handlers and message each other.

Each managed box runs one Python process (``boxlite_runtime``, stdlib only) whose stdin/stdout
carry JSON lines; the host relays messages between boxes. Every box is assumed hostile: the host
names the sender itself, matches replies only against requests it sent to that very box (random
ids), refuses lines over ``max_message_bytes`` (skipped without buffering them), bounds each box's
requests in flight, and puts a deadline on every delivery and reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, Self

from ..aio import within
from ..api.execution import ExecStdin, Execution
from ..api.runtime import Boxlite
from ..api.simplebox import SimpleBox
from ..errors import AlreadyExistsError, BoxliteError, ConfigError, InvalidStateError, NotFoundError, TimeoutError
from .codec import encode_payload

logger = logging.getLogger("boxlite.orchestration")

MAX_MESSAGE_BYTES = 1 << 20
"""Longest JSON line a box may send (or be sent); longer ones are refused and skipped."""
DELIVERY_TIMEOUT = 30.0
"""Seconds a message's receiver has to reply (BoxLite: 30 s) and a write to a box may block."""
MAX_IN_FLIGHT = 16
"""Requests of one box being delivered at once; more wait (the box's output is not read meanwhile)."""
GUEST_DIR = "/tmp/.boxlite-runtime"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KINDS = {"send", "publish", "response"}


class ManagedBox:
    """A box whose Python process runs the task and handlers registered on the host."""

    def __init__(self, runtime: BoxRuntime, name: str, **kwargs: Any) -> None:
        self._runtime = runtime
        self._name = name
        self._kwargs = kwargs
        self._box: SimpleBox | None = None
        self._execution: Execution | None = None
        self._stdin: ExecStdin | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._write_lock = asyncio.Lock()
        self._task_func: Callable[..., Any] | None = None
        self._message_handlers: list[Callable[..., Any]] = []
        self._event_handlers: dict[str, list[Callable[..., Any]]] = {}
        self.refused = 0
        """Lines this box sent that were refused (too long, not JSON, unknown type or fields)."""
        self.stderr = ""
        """The tail (64 KiB) of the box process's stderr (handlers' prints and tracebacks)."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def box(self) -> SimpleBox:
        if self._box is None:
            raise InvalidStateError(f"managed box {self._name!r} is not started")
        return self._box

    async def start(self) -> ManagedBox:
        if self._box is not None:
            return self
        rt = self._runtime
        options = dict(self._kwargs)
        if rt._image is not None and "image" not in options and "rootfs_path" not in options:
            options["image"] = rt._image
        if rt._rootfs_path is not None and "image" not in options and "rootfs_path" not in options:
            options["rootfs_path"] = rt._rootfs_path
        box = SimpleBox(runtime=rt._boxlite, name=options.pop("box_name", None), **options)
        await box.start()
        self._box = box
        await self._inject_sdk()
        return self

    async def _inject_sdk(self) -> None:
        box = self.box
        probe = await box.exec("python3", "-c", "import sys; print(*sys.version_info[:2], sep='.')", timeout=60)
        host = "{}.{}".format(*sys.version_info[:2])
        if probe.exit_code != 0 or probe.stdout.strip() != host:
            raise ConfigError(
                f"managed box {self._name!r} needs python{host} in its image (handlers are shipped as Python "
                f"{host} code); it has: {(probe.stdout or probe.stderr).strip()[:200] or 'no python3'}"
            )
        await box.exec("mkdir", "-p", GUEST_DIR)
        guest = files("boxlite.orchestration.guest").joinpath("boxlite_runtime.py")
        tmp = self._runtime._scratch / "boxlite_runtime.py"
        tmp.write_text(guest.read_text())
        await box.copy_in(str(tmp), GUEST_DIR, include_parent=True)

    def task(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Register the function the box runs once, before it serves messages."""
        self._task_func = func
        return func

    def on_message(self, handler: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        """Register ``handler(sender, data) -> result`` (runs in the box)."""
        self._message_handlers.append(handler)
        return handler

    def on_event(self, event: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """Register ``handler(data)`` for ``event`` (runs in the box)."""

        def decorator(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
            self._event_handlers.setdefault(event, []).append(handler)
            return handler

        return decorator

    async def run(self, env: dict[str, str] | None = None) -> None:
        """Start the box's process with the registered task and handlers (returns at once)."""
        if not self._task_func and not self._message_handlers and not self._event_handlers:
            raise InvalidStateError("No task or handlers registered")
        if self._box is None:
            raise InvalidStateError("Box not started")
        if self._execution is not None:
            raise InvalidStateError("Already running")
        payload = self._runtime._scratch / f"payload-{self._name}.b64"
        payload.write_bytes(encode_payload(self._task_func, self._message_handlers, self._event_handlers))
        await self.box.copy_in(str(payload), GUEST_DIR, include_parent=True)
        script_env = dict(env or {})
        script_env.update(
            BOXLITE_BOX_NAME=self._name, PYTHONPATH=GUEST_DIR, PYTHONUNBUFFERED="1",
            BOXLITE_MAX_MESSAGE_BYTES=str(self._runtime.max_message_bytes),
            BOXLITE_REPLY_TIMEOUT=str(self._runtime.delivery_timeout * 2),
        )  # fmt: skip
        code = f"import boxlite_runtime; boxlite_runtime._main({GUEST_DIR + '/' + payload.name!r})"
        self._execution = await self.box.box.exec("python3", ["-c", code], env=script_env)
        self._stdin = self._execution.stdin()
        self._pump_task = asyncio.create_task(self._pump(self._execution))
        self._stderr_task = asyncio.create_task(self._collect_stderr(self._execution))

    async def _collect_stderr(self, execution: Execution) -> None:
        async for chunk in execution.stderr():
            self.stderr = (self.stderr + chunk)[-65536:]

    async def _pump(self, execution: Execution) -> None:
        """Read the box's JSON lines; a line over the limit is skipped as it streams by."""
        limit, buf, skipping = self._runtime.max_message_bytes, b"", False
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for chunk in execution.stdout().bytes():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        if len(buf) > limit:
                            skipping, buf = True, b""
                            self._refuse("a line over the size limit")
                        break
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if skipping:
                        skipping = False  # the end of the refused line
                        continue
                    if len(line) > limit:
                        self._refuse("a line over the size limit")
                        continue
                    await self._handle_line(line, tasks)
        finally:
            for task in tasks:
                task.cancel()

    def _refuse(self, what: str) -> None:
        self.refused += 1
        if self.refused <= 10:  # a hostile box must not flood the host's log either
            logger.warning(
                "managed box %r sent %s: refused%s", self._name, what, " (no more logged)" * (self.refused == 10)
            )

    async def _handle_line(self, line: bytes, tasks: set[asyncio.Task[None]]) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return self._refuse("a line that is not JSON")
        if not isinstance(msg, dict) or msg.get("type") not in _KINDS:
            return self._refuse("an unknown message")
        request_id = msg.get("request_id")
        if msg["type"] == "response":
            future = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
            if future is None:
                return self._refuse("a reply to no request of its own")
            if not future.done():
                if "error" in msg:
                    future.set_exception(_remote_error(str(msg["error"])[:4000]))
                else:
                    future.set_result(msg.get("result"))
            return None
        if msg["type"] == "publish":
            if not isinstance(msg.get("event"), str):
                return self._refuse("an event without a name")
            await self._runtime._publish(self, msg["event"], msg.get("data"))
            return None
        if not isinstance(request_id, str) or len(request_id) > 64 or not isinstance(msg.get("target"), str):
            return self._refuse("a send without request_id or target")
        await self._in_flight.acquire()  # backpressure: this box's output waits for a slot
        task = asyncio.create_task(self._relay(request_id, msg["target"], msg.get("data")))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _relay(self, request_id: str, target: str, data: Any) -> None:
        try:
            reply: dict[str, Any] = {"type": "reply", "request_id": request_id}
            try:
                receiver = self._runtime._boxes.get(target)
                if receiver is None:
                    raise NotFoundError(f"Box '{target}' not found")
                if receiver is self:
                    raise ConfigError("Cannot send to self")
                reply["result"] = await receiver._deliver(self._name, data)
            except BoxliteError as e:
                reply["error"] = str(e)
            with contextlib.suppress(BoxliteError, OSError):
                await self._send(reply)
        finally:
            self._in_flight.release()

    async def _send(self, msg: dict[str, Any]) -> None:
        """Write one line to the box, within the delivery deadline (a box that stops reading
        its stdin cannot stall the others)."""
        if self._stdin is None:
            raise InvalidStateError(f"Box {self._name} not running")
        line = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        if len(line) > self._runtime.max_message_bytes:
            raise ConfigError(f"message of {len(line)} bytes exceeds the limit of {self._runtime.max_message_bytes}")
        try:
            async with self._write_lock:
                await within(self._stdin.send_input(line), self._runtime.delivery_timeout)
        except asyncio.TimeoutError as e:
            raise TimeoutError(f"Box {self._name} did not read its messages in time") from e

    async def _deliver(self, sender: str, data: Any) -> Any:
        if self._execution is None:
            raise InvalidStateError(f"Box {self._name} not running")
        request_id = secrets.token_hex(16)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send({"type": "message", "sender": sender, "data": data, "request_id": request_id})
            return await within(future, self._runtime.delivery_timeout)
        except asyncio.TimeoutError as e:
            raise TimeoutError(f"Timeout waiting for {self._name}") from e
        finally:
            self._pending.pop(request_id, None)

    async def wait(self) -> int:
        """The exit code of the box's process (0 when it never ran)."""
        if self._execution is None:
            return 0
        try:
            return (await self._execution.wait()).exit_code
        finally:
            for task in (self._pump_task, self._stderr_task):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, BoxliteError):
                        await within(task, 5)

    async def stop(self) -> None:
        if self._execution is not None:
            with contextlib.suppress(BoxliteError, OSError):
                await self._send({"type": "shutdown"})
            with contextlib.suppress(BoxliteError, OSError):
                await self._execution.kill()
            for task in (self._pump_task, self._stderr_task):
                if task is not None:
                    task.cancel()
        self._execution = self._stdin = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(InvalidStateError(f"Box {self._name} stopped"))
        self._pending.clear()
        if self._box is not None:
            await self._box.stop()
        self._box = None


class RemoteHandlerError(BoxliteError):
    """The receiving box's handler raised (its type and message are in the text)."""


def _remote_error(text: str) -> RemoteHandlerError:
    return RemoteHandlerError(text)


class BoxRuntime:
    """A group of managed boxes that message each other (BoxLite's ``BoxRuntime``).

    Without ``image``/``rootfs_path`` the boxes use the runtime's default image (Debian
    python3, offline); its Python minor version must be the host's (handlers are shipped as code).
    """

    def __init__(
        self,
        runtime: Boxlite | None = None,
        *,
        image: str | None = None,
        rootfs_path: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        delivery_timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        if not 1024 <= max_message_bytes <= 64 << 20:
            raise ConfigError("max_message_bytes must be between 1 KiB and 64 MiB")
        if not 0 < delivery_timeout <= 3600:
            raise ConfigError("delivery_timeout must be in (0, 3600] seconds")
        self._boxlite = runtime
        self._image = image
        self._rootfs_path = rootfs_path
        self.max_message_bytes = max_message_bytes
        self.delivery_timeout = float(delivery_timeout)
        self._boxes: dict[str, ManagedBox] = {}
        self._scratch_dir: Path | None = None

    @property
    def _scratch(self) -> Path:
        if self._scratch_dir is None:
            import tempfile

            self._scratch_dir = Path(tempfile.mkdtemp(prefix="boxlite-orch-"))
        return self._scratch_dir

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.shutdown()

    async def create_box(self, name: str, *, auto_start: bool = True, **kwargs: Any) -> ManagedBox:
        """A managed box named ``name`` (``kwargs``: ``SimpleBox`` options)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"managed box name {name!r}: letters, digits, '_', '.', '-' (max 63)")
        if name in self._boxes:
            raise AlreadyExistsError(f"Box '{name}' exists")
        box = ManagedBox(self, name, **kwargs)
        self._boxes[name] = box
        if auto_start:
            try:
                await box.start()
            except BaseException:
                self._boxes.pop(name, None)
                with contextlib.suppress(BoxliteError):
                    await box.stop()
                raise
        return box

    def list_boxes(self) -> list[str]:
        return list(self._boxes)

    async def _publish(self, source: ManagedBox, event: str, data: Any) -> None:
        msg = {"type": "event", "sender": source.name, "event": event, "data": data}
        for box in list(self._boxes.values()):
            if box is not source and box._execution is not None:
                try:
                    await box._send(msg)
                except BoxliteError as e:
                    logger.debug("event %r not delivered to %s: %s", event, box.name, e)

    async def wait_all(self, timeout: float | None = None) -> list[int]:
        """Exit codes of every box's process (-1 for a failure); ``TimeoutError`` after ``timeout``."""
        if not self._boxes:
            return []
        gathered = asyncio.gather(*(box.wait() for box in self._boxes.values()), return_exceptions=True)
        try:
            results = await within(gathered, timeout or None)  # 0: no deadline
        except asyncio.TimeoutError as e:
            raise TimeoutError(f"managed boxes still running after {timeout:g} s") from e
        return [-1 if isinstance(r, BaseException) else int(r) for r in results]

    async def stop_all(self) -> None:
        await asyncio.gather(*(box.stop() for box in self._boxes.values()), return_exceptions=True)

    async def shutdown(self) -> None:
        await self.stop_all()
        self._boxes.clear()
        if self._scratch_dir is not None:
            import shutil

            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None


__all__ = ["BoxRuntime", "ManagedBox", "RemoteHandlerError"]
