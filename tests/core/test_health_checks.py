"""Health checks (``AdvancedBoxOptions.health_check``): the states a user polls for in
``BoxInfo.health_status``, how failures count, and who sees the status (any runtime on the home)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

import boxlite

PROBE_TIMEOUT = 10.0  # generous: a probe's exec takes a while on the VM engine under TCG


def health_check(**check: object) -> boxlite.AdvancedBoxOptions:
    """``advanced`` with a health check; ``interval`` 0.2 s and no start period unless given."""
    opts = {"interval": 0.2, "timeout": PROBE_TIMEOUT, "start_period": 0, **check}
    return boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions(**opts))  # type: ignore[arg-type]


def checked(rootfs: Path, runtime: boxlite.Boxlite, **check: object) -> boxlite.SimpleBox:
    return boxlite.SimpleBox(rootfs_path=str(rootfs), runtime=runtime, advanced=health_check(**check))


async def wait_health(rt: boxlite.Boxlite, box_id: str, state: str, timeout: float = 60.0) -> boxlite.HealthStatus:
    deadline = time.monotonic() + timeout
    while True:
        info = await rt.get_info(box_id)
        assert info is not None
        if str(info.health_status.state) == state:
            return info.health_status
        assert time.monotonic() < deadline, f"health still {info.health_status} after {timeout}s"
        await asyncio.sleep(0.1)


async def test_unconfigured_box_has_no_health(box: boxlite.SimpleBox, runtime: boxlite.Boxlite) -> None:
    info = await runtime.get_info(box.id)
    assert info is not None
    assert info.health_status.state.is_none() and not info.health_status.checking
    assert info.health_status.log == [] and info.health_status.failures == 0


async def test_starting_until_the_probe_passes_then_healthy(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime, retries=1000, command=["test", "-f", "/tmp/ready"]) as box:
        info = await runtime.get_info(box.id)
        assert info is not None and info.health_status.state.is_starting()
        deadline = time.monotonic() + 60
        while len((status := (await runtime.get_info(box.id)).health_status).log) < 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert status.state.is_starting() and status.failures >= 2 and status.checking
        assert all(r.exit_code == 1 and not r.timed_out for r in status.log)
        await box.exec("touch", "/tmp/ready")
        status = await wait_health(runtime, box.id, "healthy")
        assert status.failures == 0 and status.log[-1].exit_code == 0 and status.last_check == status.log[-1].end
        assert len(status.log) <= 5


async def test_unhealthy_after_retries_failures_and_healthy_again(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    async with checked(busybox_rootfs, runtime, retries=2, command=["sh", "-c", "test ! -f /tmp/broken"]) as box:
        await wait_health(runtime, box.id, "healthy")
        await box.exec("touch", "/tmp/broken")
        seen = []
        deadline = time.monotonic() + 60
        while not (status := (await runtime.get_info(box.id)).health_status).state.is_unhealthy():  # type: ignore[union-attr]
            seen.append((str(status.state), status.failures))
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert status.failures >= 2
        assert all(state == "healthy" and failures < 2 for state, failures in seen)  # 1 failure is not enough
        await box.exec("rm", "/tmp/broken")  # probing goes on: the box recovers
        status = await wait_health(runtime, box.id, "healthy")
        assert status.failures == 0


async def test_failures_within_start_period_do_not_count(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime, retries=1, start_period=600, command=["false"]) as box:
        deadline = time.monotonic() + 60
        while len((status := (await runtime.get_info(box.id)).health_status).log) < 3:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert status.state.is_starting() and status.failures == 0


async def test_a_paused_box_is_not_probed(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime, retries=1, timeout=0.5, command=["true"]) as box:
        await wait_health(runtime, box.id, "healthy")
        await box.box.pause()
        await asyncio.sleep(0.5)  # a probe in flight when it froze ends here (its timeout)
        before = {r.start for r in (await runtime.get_info(box.id)).health_status.log}  # type: ignore[union-attr]
        await asyncio.sleep(2.0)  # ten intervals
        status = (await runtime.get_info(box.id)).health_status  # type: ignore[union-attr]
        assert status.state.is_healthy() and {r.start for r in status.log} == before
        await box.box.resume()
        deadline = time.monotonic() + 60
        while {r.start for r in (await runtime.get_info(box.id)).health_status.log} <= before:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await runtime.get_info(box.id)).health_status.state.is_healthy()  # type: ignore[union-attr]


async def test_timeout_counts_as_failure(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime, retries=1, timeout=0.5, command=["sleep", "30"]) as box:
        t0 = time.monotonic()
        status = await wait_health(runtime, box.id, "unhealthy")
        assert status.failures >= 1 and status.log[-1].timed_out and status.log[-1].exit_code != 0
        assert time.monotonic() - t0 < 30  # the probe was cut at its timeout, not waited for


async def test_default_probe_pings_the_agent(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with checked(busybox_rootfs, runtime) as box:  # no command: BoxLite's probe
        status = await wait_health(runtime, box.id, "healthy")
        assert status.checking and status.log[-1].exit_code == 0


async def test_status_shared_with_other_runtimes_and_ends_with_the_box(
    home: Path, engine: str, busybox_rootfs: Path
) -> None:
    first = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
    second = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
    box_id = None
    try:
        opts = boxlite.BoxOptions(
            rootfs_path=str(busybox_rootfs), detach=True, auto_remove=False, advanced=health_check(command=["true"])
        )
        box = await first.create(opts)
        box_id = box.id
        await box.start()
        status = await wait_health(second, box_id, "healthy")  # the starter's checks, seen by another runtime
        assert status.checking
        await first.shutdown(timeout=2)  # the detached box runs on; nobody checks it any more
        info = await second.get_info(box_id)
        assert info is not None and info.state.running
        assert info.health_status.state.is_healthy() and not info.health_status.checking
        listed = [b for b in await second.list_info() if b.id == box_id]
        assert listed[0].health_status.state.is_healthy() and not listed[0].health_status.checking
        await (await second.get(box_id)).stop()  # stopped on purpose: no status, as in BoxLite
        info = await second.get_info(box_id)
        assert info is not None and info.health_status.state.is_none() and not info.health_status.checking
    finally:
        await first.shutdown(timeout=2)
        if box_id is not None:
            with contextlib.suppress(boxlite.BoxliteError):
                await second.remove(box_id, force=True)
        await second.shutdown(timeout=2)


async def test_a_box_that_ends_by_itself_is_unhealthy(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(
        rootfs_path=str(busybox_rootfs), cmd=["sleep", "3"], auto_remove=False, advanced=health_check(command=["true"])
    )
    box = await runtime.create(opts)
    try:
        await box.start()
        await wait_health(runtime, box.id, "healthy")
        status = await wait_health(runtime, box.id, "unhealthy", timeout=90)  # its main process ended
        assert not status.checking
        info = await runtime.get_info(box.id)
        assert info is not None and not info.state.running
    finally:
        await runtime.remove(box.id, force=True)


def test_invalid_checks_are_config_errors() -> None:
    for bad in (
        {"interval": 0},
        {"timeout": -1},
        {"retries": -1},
        {"start_period": float("nan")},
        {"command": "test -f /x"},
        {"command": []},
        {"command": ["a\0b"]},
        {"interval": True},
    ):
        advanced = boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions(**bad))  # type: ignore[arg-type]
        with pytest.raises(boxlite.ConfigError):
            boxlite.BoxOptions(image="alpine", advanced=advanced).to_config()
    check = boxlite.HealthCheckOptions()
    assert (check.interval, check.timeout, check.retries, check.start_period) == (30, 10, 3, 60)  # BoxLite's


async def test_unconfigured_start_does_no_health_work(box: boxlite.SimpleBox, runtime: boxlite.Boxlite) -> None:
    core = runtime._backend.core  # type: ignore[attr-defined]
    assert core.health.tasks == {} and core.db.get_health(box.id) is None


def test_a_corrupted_status_row_is_not_trusted() -> None:
    from boxlite.api.results import HealthStatus
    from boxlite.runtime.config import BoxConfig
    from boxlite.runtime.health import OUTPUT_MAX, HealthCheckConfig, status_view
    from boxlite.runtime.state import BoxRecord

    config = BoxConfig(health_check=HealthCheckConfig())
    rec = BoxRecord(id="x", name=None, state="running", engine="namespace", created_at=0.0, config=config)
    row = {
        "state": "exploded", "failures": "many", "last_check": 5, "run": "r", "checker": ["1", None], "beat": "x",
        "log": [{"start": "a"}, "junk", {"start": "s", "end": "e", "exit_code": True, "output": ""},
                {"start": "s", "end": "e", "exit_code": 1, "output": "x" * 100_000, "extra": 1}],
    }  # fmt: skip
    view = status_view(rec, row)
    assert view["state"] == "none" and view["failures"] == 0 and view["last_check"] is None and not view["checking"]
    assert len(view["log"]) == 1 and len(view["log"][0]["output"]) == OUTPUT_MAX
    assert HealthStatus(**view).log[0].exit_code == 1
