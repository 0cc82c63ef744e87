"""A plain root filesystem directory as a box's image: mounted in place where the engine and the
directory's file system allow (:func:`live_root`), else copied once into a cached layer keyed by a
walk of every entry (:func:`import_rootfs`)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..errors import ImageError
from .fileattrs import host_id, keep_xattr
from .locks import file_lock
from .store import Store
from .types import LIVE_ROOTFS_PREFIX

log = logging.getLogger("boxlite.images")

IDMAP_FILESYSTEMS = frozenset({"ext4", "xfs", "btrfs", "f2fs"})
"""File systems whose mounts Linux can id-map (tmpfs too from 6.3): a directory on one of them
can be a box's lower layer in place. Elsewhere (NFS, FUSE, ramfs, an overlay...) it is copied."""


def live_root(path: Path, mountinfo: str = "/proc/self/mountinfo") -> tuple[Path, str] | None:
    """``(real path, image id)`` when ``path`` can serve as a lower layer as it is, else None.

    No walk and no copy, whatever the tree's size: the engine binds the directory read-only and
    id-mapped, and the box's writes go to its own upper layer. The box therefore sees the
    directory as it is at each start (and edits made while it runs), as ``podman --rootfs``
    does; the image id names the directory, not its content. A directory with mounts inside it
    is copied: the layer would have to id-map each of them."""
    real = os.path.realpath(path)
    try:
        dev = os.stat(real).st_dev
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            mounts = [parse_mountinfo_line(line) for line in f]
    except OSError:
        return None
    want = f"{os.major(dev)}:{os.minor(dev)}"
    types = {fstype for device, _, fstype in mounts if device == want}
    if len(types) != 1 or not idmappable(types.pop()):
        return None
    if any(point.startswith(real.rstrip("/") + "/") for _, point, _ in mounts):
        return None
    digest = hashlib.sha256(b"dir\0" + real.encode("utf-8", "surrogateescape")).hexdigest()
    return Path(real), f"{LIVE_ROOTFS_PREFIX}{digest[:32]}"


def idmappable(fstype: str) -> bool:
    if fstype == "tmpfs":
        release = os.uname().release.split(".")
        try:
            return (int(release[0]), int(release[1])) >= (6, 3)
        except (IndexError, ValueError):
            return False
    return fstype in IDMAP_FILESYSTEMS


def parse_mountinfo_line(line: str) -> tuple[str, str, str]:
    """``(major:minor, mount point, fs type)`` of one ``/proc/self/mountinfo`` line."""
    fields, _, rest = line.partition(" - ")
    parts = fields.split()
    if len(parts) < 5 or not rest:
        return "", "", ""
    point = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
    return parts[2], point, rest.split()[0]


def fingerprint(path: Path) -> str:
    """sha256 hex over the real path and every entry's lstat (type, mode, ids, size, times, inode).

    Every entry is stat'ed on every call: a file edited in place (``echo x >> f``) changes its
    own ctime only, never a directory's, so no key cheaper than the full walk (directory mtimes,
    a stamp) would notice it and a box would silently get the old copy. The walk is kept cheap
    instead: one ``scandir`` per directory (``os.walk`` stats twice) and one hash update per
    directory. The digest is the same as the former ``os.walk`` loop's, so layers cached under
    it stay valid: per directory its own entry (``.``), then its non-directories, then its
    directories (symlinks to directories among them, not descended into), each group by name.
    """
    real = os.path.realpath(path)
    h = hashlib.sha256(real.encode("utf-8", "surrogateescape") + b"\0")

    def line(rel: str, name: str, st: os.stat_result) -> str:
        return (
            f"{rel}/{name}\0{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_size}:"
            f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}\n"
        )

    def walk(top: str, rel: str) -> None:
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError:  # as os.walk: an unreadable directory contributes no entries
            return
        files: list[os.DirEntry[str]] = []
        dirs: list[os.DirEntry[str]] = []
        for e in entries:
            try:
                is_dir = e.is_dir()  # follows symlinks, as os.walk sorts them
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(e)
        files.sort(key=lambda e: e.name)
        dirs.sort(key=lambda e: e.name)
        out = [line(rel, ".", os.lstat(top))]
        out += [line(rel, e.name, e.stat(follow_symlinks=False)) for e in files]
        out += [line(rel, e.name, e.stat(follow_symlinks=False)) for e in dirs]
        h.update("".join(out).encode("utf-8", "surrogateescape"))
        for e in dirs:
            if not e.is_symlink():
                walk(e.path, e.name if rel == "." else f"{rel}/{e.name}")

    walk(real, ".")
    return h.hexdigest()


def import_rootfs(store: Store, path: Path) -> tuple[Path, str]:
    """Copy ``path`` into ``layers-v2/<fingerprint>/root`` (cached); return (root, fingerprint)."""
    if not path.is_dir():
        raise ImageError(f"rootfs_path {path} is not a directory")
    fp = fingerprint(path)
    root = store.layer_root(fp)
    if root.is_dir():
        return root, fp
    with file_lock(store.lock_path(f"layer-{fp}")):
        if root.is_dir():
            return root, fp
        work = Path(tempfile.mkdtemp(dir=store.tmp, prefix=f"rootfs-{fp[:12]}-"))  # 0700
        try:
            copy_tree(Path(os.path.realpath(path)), work / "root")
            os.rename(work, store.layer_dir(fp))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return root, fp


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a tree preserving modes, ownership (ids a box cannot map become 65534), times,
    symlinks, hard links, FIFOs and ``user.*`` xattrs. Symlinks in ``src`` are never followed.

    As for image layers (:mod:`.unpack`), device nodes are not copied (the box gets its own
    /dev) and file capabilities, security labels and ACLs are dropped."""
    privileged = os.geteuid() == 0
    links: dict[tuple[int, int], str] = {}
    dir_times: list[tuple[str, os.stat_result]] = []
    skipped: list[str] = []

    def meta(path: str, st: os.stat_result, is_link: bool = False, mask: int = 0o7777) -> None:
        if privileged:
            os.chown(path, host_id(st.st_uid), host_id(st.st_gid), follow_symlinks=False)
        if not is_link:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mask)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def walk(s: str, d: str) -> None:
        st = os.lstat(s)
        os.mkdir(d, 0o700)
        _copy_xattrs(s, d)
        with os.scandir(s) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            sp, dp = e.path, os.path.join(d, e.name)
            est = os.lstat(sp)
            mode = est.st_mode
            if stat.S_ISDIR(mode):
                walk(sp, dp)
                continue
            key = (est.st_dev, est.st_ino)
            if est.st_nlink > 1 and not stat.S_ISDIR(mode) and key in links:
                os.link(links[key], dp, follow_symlinks=False)
                continue
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(sp), dp)
                meta(dp, est, is_link=True)
            elif stat.S_ISREG(mode):
                shutil.copyfile(sp, dp, follow_symlinks=False)
                _copy_xattrs(sp, dp)
                meta(dp, est)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                skipped.append(os.path.relpath(sp, src))
                continue
            elif stat.S_ISFIFO(mode):
                os.mkfifo(dp, 0o600)
                meta(dp, est, mask=0o777)
            else:
                continue  # sockets and unknown types are not copied
            if est.st_nlink > 1:
                links[key] = dp
        dir_times.append((d, st))

    walk(str(src), str(dest))
    for d, st in dir_times:
        meta(d, st)
    if skipped:
        shown = ", ".join(skipped[:8]) + (f", ... ({len(skipped)} in all)" if len(skipped) > 8 else "")
        log.warning("rootfs %s: not copying device nodes %s: the engine gives the box its own /dev", src, shown)


def _copy_xattrs(src: str, dest: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if not keep_xattr(name):
            continue
        try:
            os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass
