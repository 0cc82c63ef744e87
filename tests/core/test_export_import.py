"""box.export / Boxlite.import_box (issue 11) on every engine: round trips (with and without the
image, gzip, running source), where the archive lands, and the errors of a bad destination."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import boxlite
from boxlite.engines import diskchain
from boxlite.errors import AlreadyExistsError, ResourceExhaustedError, StorageError
from support.images import busybox_layout

CHECK = (
    "cat /root/f; stat -c '%u:%g %a' /root/f; readlink /root/d/l; stat -c %h /root/hl; "
    "test -e /bin/ls || echo no-ls; cat /etc/new; test -e /etc/group || echo no-group"
)
EXPECTED = "one\n1000:1000 640\n/etc/passwd\n2\nno-ls\nx\nno-group\n"


def opts(rootfs: Path | str, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False, **kw)  # type: ignore[arg-type]


async def sh(box: boxlite.Box, script: str) -> tuple[int, str]:
    execution = await box.exec("sh", ["-c", script], stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out


async def make_source(runtime: boxlite.Boxlite, rootfs: Path | str, name: str = "src") -> boxlite.Box:
    """A box whose disk has owners, modes, links, a deleted image file and a snapshot layer."""
    box = await runtime.create(opts(rootfs), name=name)
    script = (
        "echo one > /root/f; chown 1000:1000 /root/f; chmod 640 /root/f; mkdir /root/d; ln -s /etc/passwd /root/d/l"
    )
    assert (await sh(box, script + "; ln /root/f /root/hl; rm /bin/ls"))[0] == 0
    await box.stop()
    await box.snapshot.create(name="base")
    assert (await sh(box, "echo x > /etc/new; rm /etc/group"))[0] == 0
    await box.stop()
    return box


def members(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = tar.extractfile("boxlite-archive/manifest.json")
        assert manifest is not None and names[-1] == "boxlite-archive/manifest.json"
        return json.loads(manifest.read())  # type: ignore[no-any-return]


async def test_round_trip_keeps_the_disk_and_config(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    src = await make_source(runtime, busybox_rootfs)
    path = Path(await src.export(dest=str(tmp_path)))
    assert path == tmp_path / "src.boxlite"
    manifest = members(path)
    assert manifest["format"] == "boxlite-archive" and manifest["engine"] == engine
    assert all(len(v[1]) == 64 for v in manifest["members"].values())  # type: ignore[attr-defined]
    copy = await runtime.import_box(str(path), name="copy")
    assert copy.id != src.id and copy.info().state.status == "stopped"
    state = diskchain.read_state(runtime.home.box_dir(copy.id))
    assert state is not None and len(state.ancestry(state.head)) == 1  # the chain is flattened
    assert copy.info().engine == engine
    assert await sh(copy, CHECK) == (0, EXPECTED)
    assert (await sh(copy, "echo changed > /root/f"))[0] == 0
    assert await sh(src, "cat /root/f") == (0, "one\n")  # independent
    with pytest.raises(AlreadyExistsError):
        await runtime.import_box(str(path), name="copy")
    await runtime.remove(src.id, force=True)  # the image travelled in the archive / the store
    again = await runtime.import_box(str(path))
    assert await sh(again, CHECK) == (0, EXPECTED)


async def test_gzip_without_image_and_running_source(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    src = await make_source(runtime, busybox_rootfs)
    await src.start()
    out = tmp_path / "named.boxlite"
    options = boxlite.ExportOptions(include_image=False, compression="gzip")
    assert await src.export(dest=str(out), options=options) == str(out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert src.info().state.status == "running"  # frozen for the copy, then continued
    copy = await runtime.import_box(str(out), name="gz")
    assert await sh(copy, CHECK) == (0, EXPECTED)


async def test_an_oci_image_travels_in_the_archive(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    src = await runtime.create(opts(busybox_layout()), name="oci")
    assert (await sh(src, "echo oci > /root/f"))[0] == 0
    await src.stop()
    path = Path(await src.export(dest=str(tmp_path)))
    assert any(n.startswith("image/blobs/sha256/") for n in members(path)["members"])  # type: ignore[attr-defined]
    other = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "other-home"), engine=src.info().engine))
    try:
        copy = await other.import_box(str(path), name="oci", untrusted=True)  # no host path needed
        assert await sh(copy, "cat /root/f") == (0, "oci\n")
    finally:
        await other.shutdown()


async def test_export_to_a_bad_destination_is_a_typed_error_and_leaves_nothing(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    await box.start()
    await box.stop()
    for dest in (tmp_path / "missing" / "x.boxlite", Path("/proc/boxlite.boxlite")):
        with pytest.raises(StorageError):
            await box.export(dest=str(dest))
    with pytest.raises(ResourceExhaustedError, match="max_bytes"):  # the image alone is larger
        await box.export(dest=str(tmp_path), options=boxlite.ExportOptions(max_bytes=64 << 10))
    with pytest.raises(boxlite.ConfigError):
        await box.export(dest=str(tmp_path), options=boxlite.ExportOptions(max_bytes=0))
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []  # no archive, no temporary file
    assert [p.name for p in runtime.home.boxes_dir.iterdir()] == [box.id]


async def test_a_namespace_box_becomes_a_vm_box(home: Path, busybox_rootfs: Path, tmp_path: Path) -> None:
    """Cross-engine import: the namespace layers (whiteouts, an opaque dir, owners) merged into
    the VM box's ext4 disk; the other way is refused (it would mount a guest-written ext4)."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        src = await make_source(rt, busybox_rootfs)
        assert (await sh(src, "rm -rf /etc/skel; mkdir -p /root/d; echo z > /root/d/z"))[0] == 0
        await src.stop()
        path = await src.export(dest=str(tmp_path))
        vm = await rt.import_box(path, name="as-vm", engine="vm")
        assert vm.info().engine == "vm"
        assert await sh(vm, CHECK) == (0, EXPECTED)
        assert await sh(vm, "cat /root/d/z; ls /root/d") == (0, "z\nl\nz\n")
        back = await vm.export(dest=str(tmp_path / "vm.boxlite"))
        with pytest.raises(boxlite.UnsupportedOptionError, match="host kernel"):
            await rt.import_box(back, engine="namespace")
        assert [p for p in rt.home.boxes_dir.iterdir() if p.name.startswith(".")] == []
    finally:
        await rt.shutdown()


async def test_a_full_disk_during_export_is_a_typed_error_and_leaves_no_archive(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    assert (await sh(box, "head -c 3000000 /dev/urandom > /root/big"))[0] == 0
    await box.stop()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(ResourceExhaustedError):
            await box.export(dest=str(small))
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert await sh(box, "wc -c < /root/big") == (0, "3000000\n")  # the box is untouched


async def test_a_chain_at_its_depth_limit_is_flattened_by_export_and_import(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskchain, "MAX_DEPTH", 2)
    box = await runtime.create(opts(busybox_rootfs))
    for i in range(2):
        assert (await sh(box, f"echo {i} >> /root/log"))[0] == 0
        await box.stop()
        await box.snapshot.create(name=f"s{i}")
    assert (await sh(box, "echo 2 >> /root/log"))[0] == 0
    await box.stop()
    with pytest.raises(ResourceExhaustedError, match="export and import"):
        await box.snapshot.create(name="s2")
    flat = await runtime.import_box(await box.export(dest=str(tmp_path)), name="flat")
    await flat.snapshot.create(name="again")
    assert await sh(flat, "cat /root/log") == (0, "0\n1\n2\n")
