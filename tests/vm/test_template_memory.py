"""Restored VM boxes share the template's guest RAM copy-on-write and never change it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from vmhelpers import Client, make_spec, requires_qemu, shutdown

from boxlite.engines.vm import VmEngine
from boxlite.engines.vm.engine import template_dir

pytestmark = [pytest.mark.vm, pytest.mark.slow, requires_qemu]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _template_ram(qemu_pid: int) -> tuple[Path, str]:
    """The template RAM file QEMU maps, and the mapping's permissions."""
    for line in Path(f"/proc/{qemu_pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].endswith(".ram"):
            return Path(fields[5]), fields[1]
    raise AssertionError("QEMU maps no template RAM file")


def _mergeable(qemu_pid: int) -> list[str]:
    """QEMU's mappings that KSM may merge (``mg`` in their VmFlags)."""
    found, mapping = [], ""
    for line in Path(f"/proc/{qemu_pid}/smaps").read_text().splitlines():
        if line.startswith("VmFlags:"):
            if "mg" in line.split()[1:]:
                found.append(mapping)
        elif not line[:1].isupper():
            mapping = line
    return found


async def test_boxes_write_their_memory_without_touching_the_template(  # type: ignore[no-untyped-def]
    artifact, vm_home: Path, busybox_rootfs: Path
) -> None:
    engine = VmEngine()
    specs = [make_spec(vm_home, busybox_rootfs, f"mem{i}") for i in range(2)]
    first = await engine.start(specs[0])
    ram, _ = _template_ram(json.loads((specs[0].run_dir / "boot.json").read_text())["qemu_pid"])
    assert ram.parent == template_dir(specs[0])
    before = _digest(ram)
    second = await engine.start(specs[1])
    try:
        for spec in specs:
            boot = json.loads((spec.run_dir / "boot.json").read_text())
            assert boot["restored"] is True
            assert _template_ram(boot["qemu_pid"]) == (ram, "rw-p")  # private: copy-on-write
            # on a host running KSM, no page of a box could be merged with another box's
            assert _mergeable(boot["qemu_pid"]) == []
            # no balloon: QEMU 7.2 would punch a discarded (inflated) page out of the shared file
            argv = Path(f"/proc/{boot['qemu_pid']}/cmdline").read_bytes().split(b"\0")
            assert not [a for a in argv if b"balloon" in a]
        c1, c2 = [await Client.connect(s.agent_socket) for s in specs]
        # box 1 dirties 64 MiB of its RAM (tmpfs) and frees it again; box 2 must not notice
        fill = "head -c 67108864 /dev/urandom > /tmp/big && md5sum /tmp/big && rm /tmp/big"
        res = await c1.exec(["/bin/sh", "-c", fill])
        assert res.exit_code == 0, res.stderr
        res = await c2.exec(["/bin/sh", "-c", "echo fine; cat /proc/meminfo | head -1"])
        assert res.exit_code == 0 and res.stdout.startswith(b"fine\n")
        await c1.close()
        await c2.close()
    finally:
        await shutdown(specs[1], second, engine)
        await shutdown(specs[0], first, engine)
    assert _digest(ram) == before
    # and a box restored afterwards still starts from the same state
    third = await engine.start(make_spec(vm_home, busybox_rootfs, "mem2"))
    c = await Client.connect(make_spec(vm_home, busybox_rootfs, "mem2").agent_socket)
    assert (await c.exec(["/bin/true"])).exit_code == 0
    await c.close()
    await shutdown(make_spec(vm_home, busybox_rootfs, "mem2"), third, engine)
