"""Build a root filesystem from Debian packages (``apt-get download`` + ``dpkg-deb -x``).

Used for BoxLite's offline default image (busybox-static + python3 minimal) and by tests, so
no Docker Hub access is needed. Needs ``apt-get``/``apt-cache``/``dpkg-deb`` on the host.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ImageError
from .locks import file_lock

# Packages never pulled in as dependencies: package management, perl and docs are not needed
# for running programs in a box and would multiply the size.
EXCLUDE = frozenset(
    {
        "dpkg",
        "debconf",
        "debconf-2.0",
        "install-info",
        "perl",
        "perl-base",
        "perl-modules-5.36",
        "libperl5.36",
        "tar",
        "base-files",
        "mailcap",
        "mime-support",
        "init-system-helpers",
        "usrmerge",
        "usr-is-merged",
        "debianutils",
        "coreutils",
        "sensible-utils",
    }
)
DEFAULT_PACKAGES = ("busybox-static", "python3-minimal", "libpython3-stdlib")


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError as e:
        raise ImageError(f"{cmd[0]} is not installed (needed to build a Debian rootfs)") from e
    except subprocess.CalledProcessError as e:
        raise ImageError(f"{' '.join(cmd[:3])}... failed: {e.stderr.strip()[-500:]}") from e
    return r.stdout


def resolve_packages(packages: list[str], exclude: frozenset[str] = EXCLUDE) -> list[str]:
    """Packages plus their Depends/Pre-Depends closure (first alternative, no recommends)."""
    seen: set[str] = set()
    todo = [p for p in packages if p]
    while todo:
        batch = sorted({p for p in todo if p not in seen})
        todo = []
        if not batch:
            break
        seen.update(batch)
        out = _run(
            [
                "apt-cache",
                "depends",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                *batch,
            ]
        )
        alt = False
        for line in out.splitlines():
            m = re.match(r"^\s+(\|?)(Depends|PreDepends):\s+(\S+)", line)
            if not m:
                if line and not line.startswith(" "):
                    alt = False
                continue
            first_of_group = not alt
            alt = m.group(1) == "|"
            dep = m.group(3).split(":")[0]
            if not first_of_group or dep.startswith("<") or dep in exclude:
                continue
            if dep not in seen:
                todo.append(dep)
    return sorted(seen)


def _resolve_cached(packages: list[str], cache_dir: Path, exclude: frozenset[str] = EXCLUDE) -> list[str]:
    """resolve_packages() memoised in ``cache_dir`` until the apt package lists change."""
    text = ",".join(sorted(packages)) + ("" if exclude == EXCLUDE else "|-" + ",".join(sorted(exclude)))
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir / f"resolved-{key}.txt"
    try:
        lists_mtime = os.stat("/var/lib/apt/lists").st_mtime
        if path.stat().st_mtime >= lists_mtime:
            return path.read_text().split()
    except OSError:
        pass
    names = resolve_packages(packages, exclude)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(names) + "\n")
    os.replace(tmp, path)
    return names


def download_debs(packages: list[str], cache_dir: Path) -> list[Path]:
    """``apt-get download`` what is not cached yet; return the .deb paths."""
    debs_dir = cache_dir / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)

    def cached(name: str) -> Path | None:
        hits = sorted(debs_dir.glob(f"{name}_*.deb"))
        return hits[-1] if hits else None

    missing = [p for p in packages if cached(p) is None]
    if missing:
        _run(["apt-get", "download", "-q", *missing], cwd=debs_dir)
    out = []
    for p in packages:
        deb = cached(p)
        if deb is None:
            raise ImageError(f"apt-get download produced no .deb for {p}")
        out.append(deb)
    return out


def build_debian_rootfs(dest: Path, packages: list[str], cache_dir: Path) -> Path:
    """Extract ``packages`` and their dependencies into ``dest`` (files owned by root).

    Adds what maintainer scripts would have made: ``/usr/bin/python3`` (when python3.X is
    present), busybox applet links in ``/bin`` (when busybox is present), ``/etc/passwd``,
    ``/etc/group``, ``/tmp`` and the usual mount points.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for deb in download_debs(_resolve_cached(list(packages), Path(cache_dir)), Path(cache_dir)):
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    _finish_rootfs(dest)
    return dest


def ensure_debian_rootfs(cache_dir: Path, packages: Sequence[str] = DEFAULT_PACKAGES) -> Path:
    """Build (once, under a lock) and return ``cache_dir/rootfs/<key>`` for ``packages``.

    The default image of an offline first box: ``resolve(rootfs_path=ensure_debian_rootfs(
    home / "images" / "debian"))``. The tree is built in a temp dir and renamed into place.
    """
    cache_dir = Path(cache_dir)
    key = hashlib.sha256(",".join(sorted(packages)).encode()).hexdigest()[:16]
    return build_once(cache_dir / "rootfs" / key, lambda work: build_debian_rootfs(work, list(packages), cache_dir))


def build_once(dest: Path, build: Callable[[Path], object]) -> Path:
    """Return the tree ``dest`` (``<cache>/rootfs/<key>``), made by ``build(work)`` the first time:
    under ``<cache>/rootfs-<key>.lock``, in a temp dir beside it renamed into place, so no process
    ever sees a half-built tree and a failed build leaves nothing."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent.parent / f"rootfs-{dest.name}.lock"):
        if dest.is_dir():
            return dest
        work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
        try:
            os.chmod(work, 0o755)
            build(work)
            os.rename(work, dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return dest


def _finish_rootfs(dest: Path) -> None:
    for d in ("bin", "etc", "root", "proc", "dev", "sys", "run", "var/tmp", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").mkdir(exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    usr_bin = dest / "usr" / "bin"
    pythons = sorted(usr_bin.glob("python3.[0-9]*")) if usr_bin.is_dir() else []
    pythons = [p for p in pythons if re.fullmatch(r"python3\.\d+", p.name)]
    if pythons and not (usr_bin / "python3").exists():
        os.symlink(pythons[-1].name, usr_bin / "python3")
    busybox = next((p for p in (dest / "bin" / "busybox", usr_bin / "busybox") if p.exists()), None)
    if busybox is not None:
        applets = _run([str(busybox), "--list"]).split() if os.access(busybox, os.X_OK) else []
        for name in applets:
            if name == "busybox":
                continue
            for bindir in (dest / "bin", usr_bin):
                if (bindir / name).exists() or (bindir / name).is_symlink():
                    break
            else:
                rel = os.path.relpath(busybox, dest / "bin")
                os.symlink(rel, dest / "bin" / name)
    if not (dest / "etc" / "passwd").exists():
        (dest / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        )
        (dest / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
    home = dest / "home" / "user"
    if not home.exists():
        home.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(home, 1000, 1000)


def ensure_keyed_rootfs(
    cache_dir: Path,
    packages: Sequence[str],
    finish: Callable[[Path], None] | None = None,
    salt: str = "",
    exclude: frozenset[str] = EXCLUDE,
) -> Path:
    """Build (once, under a lock) ``cache_dir/rootfs/<key>`` from ``packages``; return it.

    Unlike :func:`ensure_debian_rootfs` the key is the *content*: the exact .deb files (names
    carry versions) plus ``salt`` (a recipe's version of ``finish``), so a security update of a
    package yields a new image and the same inputs always the same tree. ``finish(tree)`` runs
    before the tree is renamed into place (what maintainer scripts would have done);
    ``exclude``: dependencies left out (:data:`EXCLUDE` by default).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / "debs.lock"):
        debs = download_debs(_resolve_cached(list(packages), cache_dir, exclude), cache_dir)
    digest = hashlib.sha256(salt.encode())
    for name in sorted(d.name for d in debs):
        digest.update(b"\0" + name.encode())
    key = digest.hexdigest()[:16]

    def build(work: Path) -> None:
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(work)])
        _finish_rootfs(work)
        if finish is not None:
            finish(work)

    return build_once(cache_dir / "rootfs" / key, build)
