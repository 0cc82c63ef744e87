"""Build small test images locally (busybox rootfs, Debian python rootfs, OCI layouts)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

APPLETS = (
    "sh ash ls cat echo sleep id hostname mount umount env pwd head tail dd wc kill ps mkdir rm "
    "rmdir touch true false yes printf ln stat tar grep seq chmod chown whoami uname date sort "
    "uniq cut tr sed awk find xargs cp mv readlink realpath basename dirname du df free top "
    "test [ expr which nproc sync tee gzip gunzip vi diff md5sum sha256sum mktemp ip ifconfig "
    "nc wget timeout nice hexdump od usleep"
).split()

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def build_busybox_rootfs(dest: Path) -> Path:
    """Create a minimal busybox root filesystem in ``dest`` (unshifted: files owned by root).

    Contains ``/bin/busybox`` (static) plus applet symlinks, ``/etc/passwd`` and ``/etc/group``
    (root, user 1000, nobody), ``/tmp`` (1777), ``/home/user`` (owned 1000), ``/root`` and
    empty ``/proc``, ``/dev``, ``/sys`` mount points. Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "etc", "root", "proc", "dev", "sys", "run", "var", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    bb = dest / "bin" / "busybox"
    shutil.copyfile(BUSYBOX, bb)
    os.chmod(bb, 0o755)
    available = set(_busybox_applets())
    for name in APPLETS:
        if available and name not in available:
            continue
        link = dest / "bin" / name
        if not link.exists() and not link.is_symlink():
            os.symlink("busybox", link)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("box\n")
    (dest / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    tmp = dest / "tmp"
    tmp.mkdir(exist_ok=True)
    os.chmod(tmp, 0o1777)
    os.chmod(dest / "root", 0o700)
    home = dest / "home" / "user"
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(home, 1000, 1000)
    return dest


def _busybox_applets() -> list[str]:
    import subprocess

    try:
        out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


def is_executable(path: Path) -> bool:
    """True when ``path`` is a regular file with an execute bit."""
    st = path.stat()
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
