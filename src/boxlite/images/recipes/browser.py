"""The BrowserBox image: Debian's ``chromium`` (headless), fonts, busybox and python3.

BoxLite pulls Playwright's Docker image; this one is built from Debian packages only, so a
BrowserBox works with no container registry. python3 runs the box's CDP gate (``api/browserbox``);
``libatomic1``/``libstdc++6`` let the Node binary of the host's Playwright driver (mounted
read-only by ``playwright_endpoint``) run in the box.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ...errors import ImageError
from ..debian import ensure_keyed_rootfs

PACKAGES = (
    "busybox-static",
    "python3-minimal",
    "libpython3-stdlib",
    "chromium",
    "fonts-dejavu-core",
    "fonts-liberation",
    "libatomic1",
    "libstdc++6",
    "ca-certificates",
)
RECIPE_VERSION = "browser-2"
"""Changes whenever :func:`finish` changes what it writes (part of the image key)."""

CHROMIUM = "/usr/lib/chromium/chromium"
"""The browser binary itself (``/usr/bin/chromium`` is Debian's shell wrapper)."""


def finish(tree: Path) -> None:
    """What dpkg triggers and maintainer scripts would have done for these packages."""
    if not (tree / CHROMIUM.lstrip("/")).is_file():
        raise ImageError(f"the chromium package did not provide {CHROMIUM}")
    # ld.so.cache: libraries in /usr/lib/x86_64-linux-gnu resolve without a search of every path.
    try:
        subprocess.run(["ldconfig", "-r", str(tree)], capture_output=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageError(f"ldconfig -r on the browser image failed: {e}") from e
    # dbus/Chromium read a machine id; a fixed one keeps the image reproducible (no host id leaks in).
    # Documentation and message catalogues: a fifth of the tree, never read by a headless browser.
    for sub in ("doc", "man", "info", "locale"):
        shutil.rmtree(tree / "usr" / "share" / sub, ignore_errors=True)
    (tree / "etc" / "machine-id").write_text("b0c1e7e0b0c1e7e0b0c1e7e0b0c1e7e0\n")
    os.chmod(tree / "etc" / "machine-id", 0o444)


def ensure(cache_dir: Path) -> Path:
    """Build (once per set of .deb files, under a lock) and return the browser image's rootfs."""
    return ensure_keyed_rootfs(Path(cache_dir), PACKAGES, finish=finish, salt=RECIPE_VERSION)
