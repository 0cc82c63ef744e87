"""Boxlite.import_box treats a .boxlite archive as hostile (issue 11): tampered, truncated,
escaping, linking, device-carrying, oversized archives and VM disks naming host files are
refused with a typed error, nothing is written outside the new box and nothing half-imported
stays behind. (The attacker may rewrite the manifest's digests: only the first test relies on
them; the others recompute them, as a real attacker would.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import BoxliteError, ResourceExhaustedError, UnsafeArchiveError
from boxlite.runtime import archive

Members = list[tuple[tarfile.TarInfo, bytes]]
TOP = "boxlite-archive"


async def exported(runtime: boxlite.Boxlite, rootfs: Path, dest: Path) -> Path:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False), name="src")
    execution = await box.exec("sh", ["-c", "echo secret > /root/f; mkdir /root/d"], stdin=False)
    assert (await execution.wait()).exit_code == 0
    await box.stop()
    return Path(await box.export(dest=str(dest)))


def read(path: Path) -> Members:
    with tarfile.open(path) as tar:
        out = []
        for info in tar.getmembers():
            f = tar.extractfile(info) if info.isreg() else None
            out.append((info, f.read() if f else b""))
        return out


def write(path: Path, members: Members, fix_digests: bool = True) -> Path:
    if fix_digests:  # what an attacker does: the manifest agrees with the tampered files
        manifest_i = next(i for i, (m, _) in enumerate(members) if m.name == f"{TOP}/manifest.json")
        manifest = json.loads(members[manifest_i][1])
        manifest["members"] = {
            m.name[len(TOP) + 1 :]: [len(d), hashlib.sha256(d).hexdigest()]
            for m, d in members
            if m.isreg() and m.name != f"{TOP}/manifest.json" and m.name.startswith(f"{TOP}/")
        }
        body = json.dumps(manifest).encode()
        info = members[manifest_i][0]
        info.size = len(body)
        members = [*members[:manifest_i], *members[manifest_i + 1 :], (info, body)]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


def before_manifest(members: Members, *extra: tuple[tarfile.TarInfo, bytes]) -> Members:
    return [*members[:-1], *extra, members[-1]]


def edit_meta(members: Members, change: Callable[[list[list[object]]], None]) -> Members:
    out = []
    for info, data in members:
        if info.name == f"{TOP}/writable/0.meta.json":
            meta = json.loads(data)
            change(meta["entries"])
            data = json.dumps(meta).encode()
        out.append((info, data))
    return out


def assert_nothing_imported(runtime: boxlite.Boxlite, before: set[str]) -> None:
    assert {p.name for p in runtime.home.boxes_dir.iterdir()} == before


async def refused(runtime: boxlite.Boxlite, path: Path, error: type[BoxliteError] = UnsafeArchiveError) -> str:
    before = {p.name for p in runtime.home.boxes_dir.iterdir()}
    with pytest.raises(error) as caught:
        await runtime.import_box(str(path), name="evil")
    assert await runtime.get("evil") is None
    assert_nothing_imported(runtime, before)
    return str(caught.value)


async def test_a_tampered_member_is_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path) -> None:
    good = await exported(runtime, busybox_rootfs, tmp_path)
    members = read(good)
    i = next(i for i, (m, d) in enumerate(members) if m.isreg() and len(d) > 0 and "manifest" not in m.name)
    info, data = members[i]
    members[i] = (info, bytes([data[0] ^ 1]) + data[1:])
    assert "digest" in await refused(runtime, write(tmp_path / "t.boxlite", members, fix_digests=False))


async def test_a_truncated_archive_is_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path) -> None:
    good = await exported(runtime, busybox_rootfs, tmp_path)
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        last = tar.getmember(f"{TOP}/manifest.json")
    for cut in (len(data) // 2, last.offset_data + 5, last.offset - 1, 700):
        (tmp_path / "cut.boxlite").write_bytes(data[:cut])
        await refused(runtime, tmp_path / "cut.boxlite", BoxliteError)


async def test_members_the_manifest_does_not_list_are_refused(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    evil = before_manifest(members, entry(f"{TOP}/image/extra", b"x"))
    assert "not in the archive's manifest" in await refused(
        runtime, write(tmp_path / "x.boxlite", evil, fix_digests=False)
    )


@pytest.mark.parametrize("name", ["../escaped", "/tmp/boxlite-escaped-abs", f"{TOP}/../../escaped"])
async def test_paths_escaping_the_archive_are_refused(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, name: str
) -> None:
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    evil = before_manifest(members, entry(name, b"pwned"))
    await refused(runtime, write(tmp_path / "e.boxlite", evil))
    assert not Path("/tmp/boxlite-escaped-abs").exists()
    assert not (runtime.home.boxes_dir / "escaped").exists() and not (runtime.home.root / "escaped").exists()


@pytest.mark.namespace_only
async def test_writing_through_a_planted_symlink_is_refused(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    evil = before_manifest(
        members,
        entry(f"{TOP}/writable/0/root/link", kind=tarfile.SYMTYPE, link=str(outside)),
        entry(f"{TOP}/writable/0/root/link/pwned", b"pwned"),
        entry(f"{TOP}/writable/0/root/hard", kind=tarfile.LNKTYPE, link="/etc/passwd"),
    )
    await refused(runtime, write(tmp_path / "s.boxlite", evil), BoxliteError)
    assert list(outside.iterdir()) == []


@pytest.mark.namespace_only
async def test_metadata_cannot_reach_through_links_or_name_host_ids(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("host")
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    with_link = before_manifest(members, entry(f"{TOP}/writable/0/root/l", kind=tarfile.SYMTYPE, link=str(victim)))

    def through_link(entries: list[list[object]]) -> None:
        entries += [["root/l", "l", 0o777, 0, 0, False], ["root/l/file", "f", 0o4777, 0, 0, False]]

    await refused(runtime, write(tmp_path / "m1.boxlite", edit_meta(with_link, through_link)))
    st = (victim / "file").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)

    def host_root(entries: list[list[object]]) -> None:
        entries[-1][3] = 1 << 20  # an id beyond the box's range (would be a host uid once shifted)

    assert "invalid entry" in await refused(runtime, write(tmp_path / "m2.boxlite", edit_meta(members, host_root)))

    def whiteout_over_file(entries: list[list[object]]) -> None:
        entries.append(["root/f", "w", 0, 0, 0, False])

    await refused(runtime, write(tmp_path / "m3.boxlite", edit_meta(members, whiteout_over_file)))


async def test_device_nodes_in_an_archive_are_never_created(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    dev = tarfile.TarInfo(f"{TOP}/writable/0/root/mem")
    dev.type, dev.devmajor, dev.devminor, dev.mode = tarfile.CHRTYPE, 1, 1, 0o666
    path = write(tmp_path / "d.boxlite", before_manifest(members, (dev, b"")))
    try:
        await runtime.import_box(str(path), name="dev")
    except BoxliteError:
        pass
    for dirpath, dirnames, filenames in os.walk(runtime.home.boxes_dir):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            assert not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) or st.st_rdev == 0, name


async def test_archived_host_paths_are_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path) -> None:
    members = read(await exported(runtime, busybox_rootfs, tmp_path))
    out = []
    for info, data in members:
        if info.name == f"{TOP}/manifest.json":
            manifest = json.loads(data)
            manifest["box"]["config"]["volumes"] = [["/etc", "/mnt", False]]
            data = json.dumps(manifest).encode()
        out.append((info, data))
    assert "host paths" in await refused(runtime, write(tmp_path / "v.boxlite", out, fix_digests=False))
    box = await runtime.get("src")
    assert box is not None
    bare = await box.export(dest=str(tmp_path / "bare.boxlite"), options=boxlite.ExportOptions(include_image=False))
    before = {p.name for p in runtime.home.boxes_dir.iterdir()}
    with pytest.raises(UnsafeArchiveError, match="host directory"):  # e.g. an upload to a server
        await runtime.import_box(bare, name="evil", untrusted=True)
    assert_nothing_imported(runtime, before)


async def test_an_archive_larger_than_the_limit_is_refused(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = await exported(runtime, busybox_rootfs, tmp_path)
    monkeypatch.setattr(archive, "MAX_IMPORT_BYTES", good.stat().st_size // 2)
    await refused(runtime, good, ResourceExhaustedError)


def test_a_vm_disk_naming_a_host_file_is_refused(tmp_path: Path) -> None:
    """A qcow2 whose backing file or external data file is a host file would make QEMU read it."""
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"x" * 65536)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(backed)], check=True)
    with pytest.raises(UnsafeArchiveError, match="backing"):
        archive.check_vm_disk(backed)
    data = tmp_path / "data.qcow2"
    opt = f"data_file={secret},data_file_raw=on"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opt, str(data), "64k"], check=True)
    with pytest.raises(UnsafeArchiveError, match="data file"):
        archive.check_vm_disk(data)
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * 65536)
    with pytest.raises(UnsafeArchiveError):
        archive.check_vm_disk(raw)
    fine = tmp_path / "fine.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(fine), "1M"], check=True)
    assert archive.check_vm_disk(fine) == 1 << 20
