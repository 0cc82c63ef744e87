"""Health checks of running boxes (BoxLite's ``HealthCheckOptions``), without a daemon.

The process that starts a box with a health check runs one asyncio task for it: every
``interval`` it probes the box (the check's ``command`` through the normal exec path, or a ping
of the box's agent when no command is given, as BoxLite does) with ``timeout`` as the probe's
deadline, and writes the outcome to the box's row of the ``health`` table of ``state.db`` (0600),
where every process on the home reads it (``list_info``, ``boxlite ls``/``inspect``, the REST
server). The task ends with the box (stop, removal, the runtime's shutdown).

States (Docker's, as BoxLite names them): "none" (no check configured, or the box was stopped),
"starting" (no probe has passed yet), "healthy" (the last probe passed), "unhealthy" (``retries``
probes in a row failed after ``start_period``, or the box ended without being stopped). A probe
failing within ``start_period`` is logged but not counted; one passing ends the start period.
Probing continues while unhealthy: a box whose probe passes again is healthy again.

Who checks: only the process that started the box, while it lives and its event loop runs. A
box whose starter is gone (a CLI ``run -d`` that returned, a crashed owner, a closed runtime)
keeps its last status with ``checking`` False; nothing adopts its checks (as in BoxLite).

The probe is box-controlled: its output is read through a small window and kept up to
``OUTPUT_MAX`` bytes per result, ``HISTORY`` results are kept, and the agent kills the probe's
process group at ``timeout`` (the host gives up ``KILL_GRACE`` later even if the agent does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..aio import within
from ..errors import BoxliteError, ConfigError
from ..procfs import process_start_time

if TYPE_CHECKING:
    from .lifecycle import BoxRuntime
    from .state import BoxRecord

log = logging.getLogger("boxlite.health")

MIN_INTERVAL = 0.1
"""Seconds: the shortest interval between probes (a shorter one is a ConfigError)."""
MIN_TIMEOUT = 0.05
MAX_SECONDS = 30 * 86400.0
"""Longest interval, timeout or start period (seconds)."""
MAX_RETRIES = 10_000
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
HISTORY = 5
"""Probe results kept per box (newest last)."""
OUTPUT_MAX = 4096
"""Bytes of a probe's output (stdout then stderr as they arrive) kept per result, as UTF-8 text."""
PROBE_WINDOW = 64 * 1024
"""Output credit of a probe: what the agent may have in flight to the host per stream."""
KILL_GRACE = 2.0
"""Seconds past ``timeout`` after which the host stops waiting for a probe (and kills it)."""
STALE_GRACE = 5.0
"""A status not refreshed for ``interval + timeout + KILL_GRACE + STALE_GRACE`` is not being checked."""
STATES = ("none", "starting", "healthy", "unhealthy")


@dataclass(frozen=True)
class HealthCheckConfig:
    """A box's health check, as stored with its config (seconds; validated on construction)."""

    interval: float = 30.0
    timeout: float = 10.0
    retries: int = 3
    start_period: float = 60.0
    command: tuple[str, ...] | None = None
    """argv of the probe, run in the box like ``exec`` (exit 0: healthy); None: ping the agent."""

    def __post_init__(self) -> None:
        for name, low in (("interval", MIN_INTERVAL), ("timeout", MIN_TIMEOUT), ("start_period", 0.0)):
            value = getattr(self, name)
            if not (low <= value <= MAX_SECONDS):
                raise ConfigError(f"health_check.{name} must be between {low} and {MAX_SECONDS:.0f} s, got {value!r}")
        if not (0 <= self.retries <= MAX_RETRIES):
            raise ConfigError(f"health_check.retries must be between 0 and {MAX_RETRIES}, got {self.retries!r}")
        if self.command is not None:
            if not self.command or len(self.command) > MAX_COMMAND_ARGS:
                raise ConfigError(f"health_check.command must have 1 to {MAX_COMMAND_ARGS} arguments")
            if sum(len(a.encode("utf-8", "surrogatepass")) for a in self.command) > MAX_COMMAND_BYTES:
                raise ConfigError(f"health_check.command is longer than {MAX_COMMAND_BYTES} bytes")
            if any("\0" in a for a in self.command):
                raise ConfigError("health_check.command cannot contain NUL bytes")

    @classmethod
    def from_options(cls, opts: Any) -> HealthCheckConfig:
        """From a ``HealthCheckOptions`` (or a mapping with its fields: REST bodies)."""
        get = opts.get if isinstance(opts, Mapping) else lambda k, d=None: getattr(opts, k, d)
        command = get("command", None)
        if isinstance(command, str):
            raise ConfigError("health_check.command must be a list of strings (argv), not a string")
        if command is not None:
            if not isinstance(command, (list, tuple)) or not all(isinstance(a, str) for a in command):
                raise ConfigError(f"health_check.command must be a list of strings, got {command!r}")
            command = tuple(command)
        defaults = cls()
        return cls(
            interval=_seconds(get("interval", defaults.interval), "interval"),
            timeout=_seconds(get("timeout", defaults.timeout), "timeout"),
            retries=_count(get("retries", defaults.retries)),
            start_period=_seconds(get("start_period", defaults.start_period), "start_period"),
            command=command,
        )

    @classmethod
    def from_json(cls, data: Any) -> HealthCheckConfig | None:
        """A stored check (None: none), re-validated: a state row is not trusted."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError(f"box config: health_check must be an object, got {data!r}")
        return cls.from_options(data)

    def to_json(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "start_period": self.start_period,
            "command": None if self.command is None else list(self.command),
        }


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"health_check.{name} must be a number of seconds, got {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"health_check.retries must be an integer, got {value!r}")
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


NOT_CONFIGURED: dict[str, Any] = {"state": "none", "failures": 0, "last_check": None, "checking": False, "log": []}


def status_view(rec: BoxRecord, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """What ``BoxInfo.health_status`` shows for ``rec`` given its stored health row.

    A running box shows the stored status; ``checking`` says whether a live process is still
    probing it (its checker is alive and wrote recently). A box no longer running shows "none"
    after a stop, "unhealthy" if it ended any other way while checked (main process ended,
    crash, kill), as BoxLite does."""
    if rec.config.health_check is None or not row:
        return dict(NOT_CONFIGURED)
    state = str(row.get("state", "none"))
    if state not in STATES:
        state = "none"
    log = row.get("log")
    last_check = row.get("last_check")
    out = {
        "state": state,
        "failures": _number(row.get("failures"), int),
        "last_check": last_check if isinstance(last_check, str) else None,
        "checking": False,
        "log": [r for r in map(_result, log[-HISTORY:] if isinstance(log, list) else []) if r is not None],
    }
    running = rec.state in ("running", "stopping", "paused")
    if not running:
        if row.get("run") is not None and state != "none":
            out["state"] = "unhealthy"  # ended without a stop while checked
        return out
    checker = row.get("checker")
    if row.get("run") is not None and isinstance(checker, list) and len(checker) == 2:
        cfg = rec.config.health_check
        fresh = time.time() - _number(row.get("beat"), float) <= cfg.interval + cfg.timeout + KILL_GRACE + STALE_GRACE
        pid = _number(checker[0], int)
        out["checking"] = fresh and pid > 0 and process_start_time(pid) == checker[1]
    return out


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    """A stored number, or 0 (a row is re-checked when read, like a box's config)."""
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else kind(0)


def _result(data: Any) -> dict[str, Any] | None:
    """A stored probe result with exactly its fields (None: malformed)."""
    if not isinstance(data, Mapping) or not all(isinstance(data.get(k), str) for k in ("start", "end", "output")):
        return None
    code = data.get("exit_code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    return {"start": data["start"], "end": data["end"], "exit_code": code,
            "timed_out": bool(data.get("timed_out")), "output": data["output"][:OUTPUT_MAX]}  # fmt: skip


class HealthMonitor:
    """The health-check tasks of the boxes one ``BoxRuntime`` started."""

    def __init__(self, core: BoxRuntime) -> None:
        self.core = core
        self.tasks: dict[str, tuple[asyncio.Task[None], str]] = {}
        self._me = [os.getpid(), process_start_time(os.getpid())]

    def view(self, rec: BoxRecord) -> dict[str, Any] | None:
        """``rec``'s health status (None: no check configured; no database read then)."""
        if rec.config.health_check is None:
            return None
        return status_view(rec, self.core.db.get_health(rec.id))

    def begin(self, rec: BoxRecord) -> None:
        """``rec`` was just started by this process: start checking it (no-op without a check)."""
        cfg = rec.config.health_check
        if cfg is None:
            return
        self._cancel(rec.id)
        run = secrets.token_hex(8)
        now = time.time()
        row: dict[str, Any] = {
            "run": run, "checker": self._me, "state": "starting", "failures": 0,
            "last_check": None, "beat": now, "log": [],
        }  # fmt: skip
        self.core.db.put_health(rec.id, row)
        task = asyncio.get_running_loop().create_task(self._loop(rec.id, cfg, run, row), name=f"health {rec.id}")
        self.tasks[rec.id] = (task, run)

    async def end(self, rec: BoxRecord) -> None:
        """``rec`` is being stopped on purpose: stop checking it; its status becomes "none"."""
        if rec.config.health_check is None:
            return
        await self._stop_task(rec.id)
        row = self.core.db.get_health(rec.id) or {}
        row.update(run=None, checker=None, state="none", failures=0, last_check=None)
        self.core.db.put_health(rec.id, row)

    async def close(self) -> None:
        """The runtime shuts down: stop every task; those boxes keep their status, unchecked."""
        for box_id, (_, run) in list(self.tasks.items()):
            await self._stop_task(box_id)
            self._unclaim(box_id, run)

    def _unclaim(self, box_id: str, run: str) -> None:
        with contextlib.suppress(BoxliteError):
            row = self.core.db.get_health(box_id)
            if row is not None and row.get("run") == run:
                row["checker"] = None
                self.core.db.put_health(box_id, row, run=run)

    def _cancel(self, box_id: str) -> None:
        entry = self.tasks.pop(box_id, None)
        if entry is not None:
            entry[0].cancel()

    async def _stop_task(self, box_id: str) -> None:
        entry = self.tasks.pop(box_id, None)
        if entry is None:
            return
        task = entry[0]
        task.cancel()
        if task is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await task

    async def _loop(self, box_id: str, cfg: HealthCheckConfig, run: str, row: dict[str, Any]) -> None:
        db = self.core.db
        started = time.monotonic()
        try:
            while True:
                await asyncio.sleep(cfg.interval)
                rec = db.get(box_id)
                if rec is not None and rec.state == "paused":  # frozen: not probed (Docker's rule too)
                    continue
                if rec is None or rec.state != "running" or not self.core._alive(rec):
                    if rec is not None:  # ended by itself (a stop would have ended this task first)
                        row.update(state="unhealthy", checker=None, beat=time.time())
                        db.put_health(box_id, row, run=run)
                    return
                result = await self.probe(rec, cfg)
                passed = result["exit_code"] == 0
                if not passed and (now := db.get(box_id)) is not None and now.state == "paused":
                    continue  # paused while probed: not the box's failure
                if passed:
                    row.update(state="healthy", failures=0)
                elif time.monotonic() - started >= cfg.start_period or row["state"] != "starting":
                    row["failures"] += 1
                    if row["failures"] >= max(cfg.retries, 1):
                        row["state"] = "unhealthy"
                row["last_check"] = result["end"]
                row["beat"] = time.time()
                row["log"] = [*row["log"], result][-HISTORY:]
                if not db.put_health(box_id, row, run=run):
                    return  # superseded: stopped or started again by another process
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let one box's checks take the runtime's loop down
            log.warning("health checks of box %s stopped: %s", box_id, e)
            self._unclaim(box_id, run)
        finally:
            entry = self.tasks.get(box_id)
            if entry is not None and entry[1] == run and entry[0] is asyncio.current_task():
                self.tasks.pop(box_id, None)

    async def probe(self, rec: BoxRecord, cfg: HealthCheckConfig) -> dict[str, Any]:
        """Run one probe; a result ``{start, end, exit_code, timed_out, output}`` (exit_code
        -1: the probe could not run, e.g. the agent did not answer)."""
        t0 = time.time()
        out = bytearray()
        holder: dict[str, Any] = {}
        timed_out = False
        try:
            code, timed_out = await within(self._probe(rec, cfg, out, holder), cfg.timeout + KILL_GRACE)
        except asyncio.TimeoutError:
            code, timed_out = -1, True
            out += b"health check exceeded its timeout"
        except (BoxliteError, OSError, ValueError, TypeError, AttributeError) as e:  # incl. a broken agent's answers
            code, timed_out = -1, False
            out[:] = (str(e) or type(e).__name__).encode()[:OUTPUT_MAX]
        finally:
            channel = holder.get("channel")
            if channel is not None and not channel.exit.done():
                with contextlib.suppress(Exception):  # bounded: an agent that stops reading cannot hold us
                    await within(channel.control({"op": "kill"}), KILL_GRACE)
        if timed_out and code == 0:
            code = -1
        # Decoded, then cut again to OUTPUT_MAX bytes of UTF-8 (a replacement character takes 3).
        text = bytes(out[:OUTPUT_MAX]).decode("utf-8", "replace").encode()[:OUTPUT_MAX].decode("utf-8", "ignore")
        return {"start": _iso(t0), "end": _iso(time.time()), "exit_code": code, "timed_out": timed_out, "output": text}

    async def _probe(
        self, rec: BoxRecord, cfg: HealthCheckConfig, out: bytearray, holder: dict[str, Any]
    ) -> tuple[int, bool]:
        client = await self.core._connect(rec.id)
        if cfg.command is None:
            await client.request("ping", timeout=cfg.timeout)
            return 0, False
        argv = list(cfg.command)
        body = self.core.exec_body(rec, argv, stdin=False, timeout=cfg.timeout, window=PROBE_WINDOW)
        channel = await client.exec(body, "health check " + argv[0], timeout=cfg.timeout + KILL_GRACE)
        holder["channel"] = channel

        async def drain(stream: Any) -> None:
            while (chunk := await stream.read()) is not None:  # beyond the cap: read and dropped
                if len(out) < OUTPUT_MAX:
                    out.extend(chunk[: OUTPUT_MAX - len(out)])

        await asyncio.gather(drain(channel.stdout), drain(channel.stderr))
        body = await channel.exit
        code = body.get("exit_code") if isinstance(body, dict) else None
        if not isinstance(code, int) or isinstance(code, bool) or not -1 <= code <= 0xFFFF:
            code = -1
        return code, isinstance(body, dict) and body.get("timed_out") is True


__all__ = ["HISTORY", "OUTPUT_MAX", "HealthCheckConfig", "HealthMonitor", "status_view"]
