"""The Debian-package rootfs builder and an end-to-end run of the pulled python image."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.images.conftest import Registry

from boxlite.images import ImageManager
from boxlite.images.debian import (
    DEFAULT_PACKAGES,
    _resolve_cached,
    ensure_debian_rootfs,
    resolve_packages,
)


def test_resolve_packages_closure() -> None:
    pkgs = resolve_packages(list(DEFAULT_PACKAGES))
    assert {"busybox-static", "python3-minimal", "libc6", "libssl3", "zlib1g"} <= set(pkgs)
    assert not {"perl-base", "dpkg", "debconf"} & set(pkgs)


async def test_python_image_runs(registry: Registry, make_manager: Callable[..., ImageManager], tmp_path: Path) -> None:
    m = make_manager(registry.config())
    prepared = await m.resolve(registry.python)
    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in reversed(prepared.layers))
    script = (
        f"mount -t overlay overlay -o lowerdir={lower} {merged} && "
        f"chroot {merged} /bin/sh -c 'cd /app && python3 hello.py && "
        'python3 -c "import json, sqlite3, ssl, zlib; print(json.dumps([1]))"\''
    )
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hello", "from", "boxlite", "[1]"]


async def test_ensure_debian_rootfs_is_cached(tmp_path: Path) -> None:
    from tests.support.images import CACHE

    # share the test cache's .debs (no network), build into a private rootfs cache
    cache = tmp_path / "debian"
    (cache).mkdir()
    (cache / "debs").symlink_to(CACHE / "debs")
    _resolve_cached(list(DEFAULT_PACKAGES), CACHE)  # memoised in the shared test cache
    for resolved in CACHE.glob("resolved-*.txt"):
        (cache / resolved.name).write_bytes(resolved.read_bytes())
    root = ensure_debian_rootfs(cache)
    assert (root / "usr/bin/python3").exists() and (root / "bin/busybox").is_file()
    assert ensure_debian_rootfs(cache) == root
    m = ImageManager(tmp_path / "home")
    prepared = await m.resolve(rootfs_path=str(root))
    assert (prepared.layers[0] / "usr/bin/python3").exists()
    assert prepared.layers[0].stat().st_uid == 0
