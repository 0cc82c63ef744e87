"""The rootfs fingerprint (images/rootfs.py): one scandir walk, same digest as before, and every
change a box could see is noticed, in-place edits included."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from boxlite.images import ImageManager
from boxlite.images.rootfs import fingerprint


def reference_fingerprint(path: Path) -> str:
    """The former os.walk implementation: layers cached under its digest must stay valid."""
    real = os.path.realpath(path)
    h = hashlib.sha256(real.encode("utf-8", "surrogateescape") + b"\0")
    for dirpath, dirnames, filenames in os.walk(real):
        dirnames.sort()
        rel = os.path.relpath(dirpath, real)
        for name in [".", *sorted(filenames), *dirnames]:
            full = dirpath if name == "." else os.path.join(dirpath, name)
            st = os.lstat(full)
            h.update(
                f"{rel}/{name}\0{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_size}:"
                f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}\n".encode("utf-8", "surrogateescape")
            )
    return h.hexdigest()


def make_tree(root: Path) -> Path:
    (root / "etc" / "deep" / "er").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "etc" / "conf").write_text("a=1\n")
    (root / "etc" / "deep" / "er" / "f").write_bytes(b"x" * 100)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF")
    os.link(root / "bin" / "tool", root / "bin" / "tool-hardlink")
    os.symlink("etc", root / "etc-link")  # a symlink to a directory: listed, never descended into
    os.symlink("/nonexistent", root / "dangling")
    os.symlink("tool", root / "bin" / "tool-link")
    os.mkfifo(root / "fifo")
    (root / "b\udcffad").write_text("undecodable name")  # surrogate-escaped bytes in a name
    return root


def test_same_digest_as_the_walk_it_replaces(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "rootfs")
    assert fingerprint(root) == reference_fingerprint(root)
    assert fingerprint(root) == fingerprint(tmp_path / "rootfs" / "." / ".." / "rootfs")  # the real path counts


def test_reading_changes_nothing(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "rootfs")
    before = fingerprint(root)
    (root / "etc" / "conf").read_text()
    list((root / "etc").iterdir())
    assert fingerprint(root) == before


def _append(root: Path) -> None:
    with open(root / "etc" / "deep" / "er" / "f", "ab") as f:
        f.write(b"y")


def _rewrite_same_size_and_restore_mtime(root: Path) -> None:
    """An in-place edit that touches no directory, keeps the size and puts the mtime back:
    only the file's ctime tells, so only a walk that stats every file can notice it."""
    f = root / "etc" / "conf"
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.write(b"b=2\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def _symlink(path: Path, target: str) -> Path:
    os.symlink(target, path)
    return path


CHANGES = {
    "append in place": _append,
    "same-size rewrite, mtime restored": _rewrite_same_size_and_restore_mtime,
    "chmod": lambda root: os.chmod(root / "bin" / "tool", 0o700),
    "chown": lambda root: os.chown(root / "bin" / "tool", 1000, 1000, follow_symlinks=False),
    "new file deep down": lambda root: (root / "etc" / "deep" / "er" / "new").write_text("n"),
    "removed file": lambda root: (root / "bin" / "tool-hardlink").unlink(),
    "rename": lambda root: (root / "etc" / "conf").rename(root / "etc" / "conf2"),
    "retargeted symlink": lambda root: os.replace(_symlink(root / "relink", "/other"), root / "dangling"),
    "new empty dir": lambda root: (root / "empty" / "sub").mkdir(),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_is_noticed(tmp_path: Path, change: str) -> None:
    root = make_tree(tmp_path / "rootfs")
    before = fingerprint(root)
    CHANGES[change](root)
    after = fingerprint(root)
    assert after != before
    assert after == reference_fingerprint(root)


async def test_a_box_gets_a_file_edited_in_place(tmp_path: Path) -> None:
    """End to end through the image manager: the edited rootfs becomes a new cached layer with
    the new bytes; the unchanged one is reused without a copy."""
    root = make_tree(tmp_path / "rootfs")
    m = ImageManager(tmp_path / "home")
    first = await m.resolve(rootfs_path=str(root))
    again = await m.resolve(rootfs_path=str(root))
    assert again == first
    _rewrite_same_size_and_restore_mtime(root)
    edited = await m.resolve(rootfs_path=str(root))
    assert edited.image_id != first.image_id
    assert (edited.layers[0] / "etc" / "conf").read_text() == "b=2\n"
    assert (first.layers[0] / "etc" / "conf").read_text() == "a=1\n"
