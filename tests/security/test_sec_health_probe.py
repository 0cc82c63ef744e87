"""A health-check probe runs box-controlled code whose result the host stores: it gets a deadline
(its process group killed at ``timeout``), its output is capped per result (4 KiB) and few results
are kept, and its bytes are stored as text, not trusted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import boxlite
from boxlite.runtime.health import HISTORY, OUTPUT_MAX


def checked(rootfs: Path, runtime: boxlite.Boxlite, **check: object) -> boxlite.SimpleBox:
    opts = {"interval": 0.2, "timeout": 10.0, "start_period": 0, "retries": 1, **check}
    advanced = boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions(**opts))  # type: ignore[arg-type]
    return boxlite.SimpleBox(rootfs_path=str(rootfs), runtime=runtime, advanced=advanced)


async def results(rt: boxlite.Boxlite, box_id: str, count: int, timeout: float = 90.0) -> boxlite.HealthStatus:
    """The box's health status once ``count`` probes have run since it started."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        info = await rt.get_info(box_id)
        assert info is not None
        seen.update(r.start for r in info.health_status.log)
        if len(seen) >= count:
            return info.health_status
        assert time.monotonic() < deadline, f"only {len(seen)} probes after {timeout}s: {info.health_status}"
        await asyncio.sleep(0.1)


def stored_row(rt: boxlite.Boxlite, box_id: str) -> str:
    core = rt._backend.core  # type: ignore[attr-defined]
    return json.dumps(core.db.get_health(box_id))


async def test_flooding_probe_output_is_capped(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    flood = "yes AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA | head -c 2000000; exit 0"
    async with checked(busybox_rootfs, runtime, command=["sh", "-c", flood]) as box:
        status = await results(runtime, box.id, HISTORY + 1)
        assert status.state.is_healthy()  # its 2 MB were read (and dropped): it ran to its exit
        assert all(r.exit_code == 0 and len(r.output.encode()) <= OUTPUT_MAX for r in status.log)
        assert len(status.log) == HISTORY
        assert len(stored_row(runtime, box.id)) < (OUTPUT_MAX + 1024) * HISTORY


async def test_endless_output_is_cut_at_the_timeout(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime, timeout=0.5, command=["yes"]) as box:
        t0 = time.monotonic()
        status = await results(runtime, box.id, 2)
        assert time.monotonic() - t0 < 60
        assert status.state.is_unhealthy()
        assert all(r.timed_out and len(r.output.encode()) <= OUTPUT_MAX for r in status.log)


async def test_never_exiting_forking_probe_is_killed_with_its_children(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    probe = ["sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"]
    async with checked(busybox_rootfs, runtime, timeout=0.3, command=probe) as box:
        status = await results(runtime, box.id, 4)
        assert status.state.is_unhealthy() and all(r.timed_out for r in status.log)
        listing = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        procs = (await box.exec("sh", "-c", listing)).stdout.splitlines()
        sleeping = [p for p in procs if p.strip() == "sleep 1000"]
        assert len(sleeping) <= 3, f"{len(sleeping)} probe processes outlived their timeout"  # the probe in flight


async def test_probe_bytes_are_stored_as_text(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    probe = ["sh", "-c", "printf '\\377\\033[2J\\000\\r\\n\\342\\202'; exit 3"]
    async with checked(busybox_rootfs, runtime, retries=1000, command=probe) as box:
        status = await results(runtime, box.id, 1)
        out = status.log[-1].output
        assert status.log[-1].exit_code == 3 and "\ufffd" in out and "\x1b[2J" in out
        info = await runtime.get_info(box.id)
        assert info is not None and "\x1b" not in str(info)  # the JSON form escapes it


# --- a hostile agent (the VM guest's agent is the box's to replace): the host's own limits ------


class _Channel:
    """An execution whose agent floods output and never reports an exit (or reports ``exit``)."""

    def __init__(self, exit: object = None) -> None:
        from boxlite.client.streams import ChunkStream

        self.stdout, self.stderr = ChunkStream(), ChunkStream()
        self.exit: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.killed = False
        self.flood = asyncio.ensure_future(self._flood(exit))

    async def _flood(self, exit: object) -> None:
        for _ in range(200):
            self.stdout._feed(b"\xff" * 65536)
            await asyncio.sleep(0)
        if exit is not None:
            self.stdout._feed(b"")
            self.stderr._feed(b"")
            self.exit.set_result(exit)

    async def control(self, body: dict) -> None:
        self.killed = body == {"op": "kill"}
        await asyncio.sleep(3600)  # and it stops reading: the host must not wait for it


class _Client:
    def __init__(self, channel: _Channel | None) -> None:
        self.channel = channel

    async def request(self, op: str, timeout: float | None = None, **body: object) -> dict:
        await asyncio.sleep(3600)  # never answers; the caller's own timeout is not relied on
        return {}

    async def exec(self, body: dict, command: str, timeout: float | None = None) -> _Channel:
        assert body["timeout"] and body["window"] <= 65536  # the agent is told the deadline and a small window
        if self.channel is None:
            await asyncio.sleep(3600)
        assert self.channel is not None
        return self.channel


class _Core:
    def __init__(self, client: _Client) -> None:
        self.client = client

    async def _connect(self, box_id: str) -> _Client:
        return self.client

    @staticmethod
    def exec_body(rec: object, argv: list[str], **extra: object) -> dict:
        return {"argv": argv, **extra}


async def _probe(client: _Client, command: list[str] | None) -> tuple[dict, float]:
    from boxlite.runtime.health import HealthCheckConfig, HealthMonitor

    monitor = HealthMonitor(_Core(client))  # type: ignore[arg-type]
    check = HealthCheckConfig(timeout=0.2, command=None if command is None else tuple(command))
    t0 = time.monotonic()
    result = await monitor.probe(SimpleNamespace(id="box"), check)  # type: ignore[arg-type]
    return result, time.monotonic() - t0


async def test_host_deadline_when_the_agent_never_answers() -> None:
    from boxlite.runtime.health import KILL_GRACE

    for command in (None, ["true"]):
        result, took = await _probe(_Client(None), command)  # no answer to the ping / to the exec
        assert result["exit_code"] == -1 and result["timed_out"]
        assert took < 0.2 + KILL_GRACE + 1


async def test_host_deadline_and_cap_when_the_agent_floods_and_never_exits() -> None:
    from boxlite.runtime.health import KILL_GRACE

    channel = _Channel()
    result, took = await _probe(_Client(channel), ["true"])
    assert result["exit_code"] == -1 and result["timed_out"] and len(result["output"].encode()) <= OUTPUT_MAX
    assert channel.killed and took < 0.2 + 2 * KILL_GRACE + 1  # killed, without waiting on a deaf agent
    channel.flood.cancel()


async def test_malformed_exit_reports_are_failures() -> None:
    for exit in ({"exit_code": "0"}, {"exit_code": True}, {"exit_code": 10**30}, ["not", "a", "dict"], {}):
        result, _ = await _probe(_Client(_Channel(exit)), ["true"])
        assert result["exit_code"] == -1, exit
        assert len(result["output"].encode()) <= OUTPUT_MAX
