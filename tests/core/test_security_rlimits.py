"""``SecurityOptions`` rlimits reach every box process, on both engines (issue 10, "Missing API").

``max_open_files`` -> RLIMIT_NOFILE, ``max_file_size`` (bytes) -> RLIMIT_FSIZE, ``max_cpu_time``
(seconds) -> RLIMIT_CPU, soft = hard, which box root cannot raise again. The presets differ
where it shows: ``maximum()`` limits open files, file size and processes; ``development()`` asks
for less confinement and gets the usual (seccomp and no_new_privs stay on).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import boxlite

SIGXCPU, SIGXFSZ, SIGKILL = 24, 25, 9


def security(**fields: object) -> boxlite.AdvancedBoxOptions:
    return boxlite.AdvancedBoxOptions(security=boxlite.SecurityOptions(**fields))  # type: ignore[arg-type]


def limits(text: str) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits as {"Max open files": (soft, hard), ...}."""
    out = {}
    for line in text.splitlines()[1:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        out[name] = (soft, hard)
    return out


async def test_rlimits_reach_box_processes_and_root_cannot_raise_them(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    advanced = security(max_open_files=77, max_file_size=1 << 20, max_cpu_time=30)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, advanced=advanced) as box:
        for user in (None, "1000"):  # box root (the spawner's fast path) and another user (its fork path)
            got = limits((await box.exec("cat", "/proc/self/limits", user=user)).stdout)
            assert got["Max open files"] == ("77", "77"), (user, got)
            assert got["Max file size"] == (str(1 << 20), str(1 << 20)), (user, got)
            assert got["Max cpu time"] == ("30", "30"), (user, got)
        result = await box.exec("sh", "-c", "ulimit -n; ulimit -t; ulimit -Hn")
        assert result.stdout.split() == ["77", "30", "77"]
        # Box root cannot raise a hard limit (no CAP_SYS_RESOURCE over the host's limits).
        raised = await box.exec("sh", "-c", "ulimit -Hn 4096 && ulimit -n 4096; ulimit -Hn")
        assert raised.stdout.split()[-1] == "77", raised
        # A descriptor number at or above the limit cannot be opened; below it can.
        assert (await box.exec("sh", "-c", "exec 70</dev/null && echo ok")).stdout == "ok\n"
        over = await box.exec("sh", "-c", "exec 80</dev/null; echo reached")
        assert over.exit_code != 0 and "reached" not in over.stdout, over


async def test_main_process_gets_the_rlimits_too(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(
        boxlite.BoxOptions(
            rootfs_path=str(busybox_rootfs),
            cmd=["sh", "-c", "ulimit -n > /main-limit; exec sleep 300"],
            advanced=security(max_open_files=99),
            auto_remove=False,
        )
    )
    try:
        await box.start()
        for _ in range(100):
            execution = await box.exec("cat", ["/main-limit"])
            out = "".join([chunk async for chunk in execution.stdout()])
            if (await execution.wait()).exit_code == 0 and out:
                break
            await asyncio.sleep(0.1)
        assert out == "99\n"
    finally:
        await runtime.remove(box.id, force=True)


async def test_writing_past_max_file_size_is_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    advanced = security(max_file_size=1 << 20)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, advanced=advanced) as box:
        result = await box.exec("dd", "if=/dev/zero", "of=/big", "bs=4096", "count=1024")  # 4 MiB
        assert result.exit_code == 128 + SIGXFSZ, result  # SIGXFSZ's default action; EFBIG if ignored
        trapped = await box.exec("sh", "-c", "trap '' XFSZ; dd if=/dev/zero of=/big2 bs=4096 count=1024 2>&1")
        assert trapped.exit_code != 0 and "File too large" in trapped.stdout, trapped
        assert (await box.exec("sh", "-c", "wc -c < /big; wc -c < /big2")).stdout.split() == [str(1 << 20)] * 2


async def test_cpu_burner_dies_at_max_cpu_time(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    advanced = security(max_cpu_time=1)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, advanced=advanced) as box:
        result = await asyncio.wait_for(box.exec("sh", "-c", "while :; do :; done"), 120)
        assert result.exit_code in (128 + SIGXCPU, 128 + SIGKILL), result
        assert not result.timed_out
        assert (await box.exec("echo", "alive")).stdout == "alive\n"  # only the burner died


async def test_presets_differ_and_none_removes_confinement(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    seen = {}
    for name in ("development", "standard", "maximum"):
        preset = getattr(boxlite.SecurityOptions, name)()
        advanced = boxlite.AdvancedBoxOptions(security=preset)
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, advanced=advanced) as box:
            got = limits((await box.exec("cat", "/proc/self/limits")).stdout)
            status = (await box.exec("cat", "/proc/self/status")).stdout
            # asking for less (development: no jailer, no seccomp) still gets the usual confinement
            assert "\nSeccomp:\t2" in status and "\nNoNewPrivs:\t1" in status, (name, status)
            seen[name] = (got["Max open files"][1], got["Max file size"][1])
    assert seen["maximum"] == ("1024", str(1 << 30))
    assert seen["development"] == seen["standard"] != seen["maximum"]
    assert seen["standard"][1] == "unlimited"


@pytest.mark.parametrize(
    "fields",
    [
        {"max_open_files": 0},
        {"max_open_files": -1},
        {"max_open_files": "many"},
        {"max_open_files": True},
        {"max_open_files": 1.5},
        {"max_open_files": 1 << 21},
        {"max_file_size": 0},
        {"max_file_size": 1 << 63},
        {"max_cpu_time": -5},
        {"max_cpu_time": 1 << 40},
    ],
)
def test_bad_rlimits_are_config_errors(fields: dict[str, object]) -> None:
    with pytest.raises(boxlite.ConfigError):
        boxlite.BoxOptions(advanced=security(**fields)).validate()


def test_rest_schema_carries_rlimits() -> None:
    from boxlite.backends.rest.convert import options_json
    from boxlite.server.schemas import BoxOptionsModel

    options = boxlite.BoxOptions(rootfs_path="/", advanced=security(max_open_files=5, max_cpu_time=9))
    sent = options_json(options)
    assert sent["rlimits"] == {"cpu": 9, "nofile": 5}
    assert BoxOptionsModel(**sent).to_options().to_config().rlimits == (("cpu", 9), ("nofile", 5))
    with pytest.raises(boxlite.ConfigError):
        BoxOptionsModel(rootfs_path="/", rlimits={"core": 1}).to_options()
    with pytest.raises(boxlite.ConfigError):
        BoxOptionsModel(rootfs_path="/", rlimits={"nofile": 0}).to_options().to_config()
