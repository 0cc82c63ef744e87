"""A box asking for no ``cpus`` gets BoxLite's default, one CPU, on both engines (issue 10, item 5):
one vCPU on the VM engine, a cgroup quota of one CPU on the namespace engine."""

from __future__ import annotations

import json
from pathlib import Path

import boxlite
from boxlite.constants import DEFAULT_CPUS


def cpu_quota(runtime: boxlite.Boxlite, box_id: str) -> tuple[str, str]:
    """(quota, period) in microseconds from the box's cgroup (v1 or v2)."""
    paths = json.loads((runtime.home.box_dir(box_id) / "cgroups.json").read_text())["paths"]
    if "unified" in paths:
        quota, period = (Path(paths["unified"]) / "cpu.max").read_text().split()
        return quota, period
    cpu = Path(paths["cpu"])
    return (cpu / "cpu.cfs_quota_us").read_text().strip(), (cpu / "cpu.cfs_period_us").read_text().strip()


async def test_default_cpus_is_one(runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str) -> None:
    assert DEFAULT_CPUS == 1
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        info = await runtime.get_info(box.id)
        assert info is not None and info.cpus == 1
        if engine == "vm":
            assert (await box.exec("nproc")).stdout == "1\n"
        else:
            assert cpu_quota(runtime, box.id) == ("100000", "100000")
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, cpus=2) as box:
        info = await runtime.get_info(box.id)
        assert info is not None and info.cpus == 2
        if engine == "vm":
            assert (await box.exec("nproc")).stdout == "2\n"
        else:
            assert cpu_quota(runtime, box.id) == ("200000", "100000")
