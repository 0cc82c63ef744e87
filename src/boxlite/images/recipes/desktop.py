"""The ComputerBox image: an X desktop built from Debian packages, no container registry needed.

Xvfb (the screen), openbox (windows get focus on click), xdotool (mouse and keyboard),
xwd (screenshots, converted to PNG on the host), x11vnc + websockify + noVNC (a person can watch
in a browser), xedit/xterm (text windows), fonts. ``/usr/local/bin/boxlite-desktop`` starts and
watches them; ComputerBox runs it and talks to the display with argv-only ``exec`` calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ...errors import ImageError
from ..build import EPOCH, clamp_times
from ..debian import EXCLUDE, _finish_rootfs, build_once, download_debs, resolve_packages

PACKAGES = (
    "busybox-static",
    "python3",
    "xvfb",
    "xauth",
    "openbox",
    "xdotool",
    "x11-apps",
    "x11-utils",
    "xterm",
    "x11vnc",
    "novnc",
    "websockify",
    "python3-websockify",
    "fonts-dejavu-core",
    "xfonts-base",
)
# Dependencies a headless desktop does without: Node (noVNC's optional tooling), GL drivers
# (Xvfb renders in software without them; they would add ~150 MB of LLVM), numpy (websockify
# only speeds up masking with it), ghostscript and its fonts (imlib2's PostScript loader; every
# font more slows the first start of each program under TCG), admin tools.
DESKTOP_EXCLUDE = EXCLUDE | {
    "nodejs",
    "libnode108",
    "node-acorn",
    "adduser",
    "net-tools",
    "libgl1-mesa-dri",
    "libllvm15",
    "python3-numpy",
    "libgs10",
    "libgs10-common",
    "libgs-common",
    "fonts-urw-base35",
    "menu",
    "x11-xfs-utils",
    "xfonts-utils",
}
SESSION_PATH = "/usr/local/bin/boxlite-desktop"
RECIPE_VERSION = "4"
# Never read in a box; dropping them makes the image (and the VM engine's disk) ~15 % smaller.
DROP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")

# Started by ComputerBox as: boxlite-desktop WIDTH HEIGHT VNC_PORT WEB_PORT; env BOXLITE_VNC_PASSWORD.
# Exits (non-zero) as soon as one of its programs exits: ComputerBox then reports the log tail.
SESSION_SCRIPT = r"""#!/bin/sh
# BoxLite desktop session: Xvfb + openbox + x11vnc + websockify/noVNC on DISPLAY=:1.
W="$1"; H="$2"; VNC="$3"; WEB="$4"
export DISPLAY=:1 HOME=/root
LOG=/tmp/boxlite-desktop
mkdir -p "$LOG" /tmp/.X11-unix
chmod 1777 /tmp/.X11-unix
rm -f /tmp/.X1-lock /tmp/.X11-unix/X1
Xvfb :1 -screen 0 "${W}x${H}x24" -nolisten tcp -ac >"$LOG/xvfb.log" 2>&1 &
XPID=$!
i=0
while [ ! -S /tmp/.X11-unix/X1 ]; do
    kill -0 "$XPID" 2>/dev/null || { echo "Xvfb exited:"; tail -n 20 "$LOG/xvfb.log"; exit 70; }
    i=$((i + 1)); [ "$i" -gt 1200 ] && { echo "Xvfb did not create its socket"; exit 71; }
    sleep 0.1
done
echo "xvfb up"
openbox --sm-disable >"$LOG/openbox.log" 2>&1 &
WMPID=$!
umask 077
printf '%s\n' "${BOXLITE_VNC_PASSWORD:-}" >"$LOG/vncpass"
unset BOXLITE_VNC_PASSWORD
x11vnc -display :1 -localhost -rfbport "$VNC" -forever -shared -quiet -noxdamage \
    -passwdfile "rm:$LOG/vncpass" >"$LOG/x11vnc.log" 2>&1 &
VNCPID=$!
websockify --web /usr/share/novnc "0.0.0.0:$WEB" "127.0.0.1:$VNC" >"$LOG/websockify.log" 2>&1 &
WSPID=$!
echo "session up"
while :; do
    for p in "$XPID:Xvfb:xvfb" "$WMPID:openbox:openbox" "$VNCPID:x11vnc:x11vnc" "$WSPID:websockify:websockify"; do
        pid="${p%%:*}"; rest="${p#*:}"; name="${rest%%:*}"; log="${rest#*:}"
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited; its log:"
            tail -n 20 "$LOG/$log.log"
            kill "$XPID" "$WMPID" "$VNCPID" "$WSPID" 2>/dev/null
            exit 72
        fi
    done
    sleep 1
done
"""


def recipe_key() -> str:
    """Content key of the image: packages, exclusions, session script and recipe version."""
    text = "\n".join([RECIPE_VERSION, ",".join(sorted(PACKAGES)), ",".join(sorted(DESKTOP_EXCLUDE)), SESSION_SCRIPT])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(cache_dir: Path) -> Path:
    """Build once (under a lock) and return ``cache_dir/rootfs/<key>``, the desktop root filesystem."""
    cache_dir = Path(cache_dir)
    return build_once(cache_dir / "rootfs" / recipe_key(), lambda work: _build(work, cache_dir))


def _build(dest: Path, cache_dir: Path) -> None:
    names = resolve_packages(list(PACKAGES), DESKTOP_EXCLUDE)
    for deb in download_debs(names, cache_dir):
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            raise ImageError(f"dpkg-deb -x {deb.name} failed: {e}") from e
    _finish_rootfs(dest)
    finish_desktop(dest)


def finish_desktop(dest: Path) -> None:
    """Make an extracted tree of :data:`PACKAGES` a desktop: drop docs, font cache, session
    script, noVNC start page (also used by the SkillBox image, which carries this desktop)."""
    for rel in DROP:
        shutil.rmtree(dest / rel, ignore_errors=True)
    _font_cache(dest)
    session = dest / SESSION_PATH.lstrip("/")
    session.parent.mkdir(parents=True, exist_ok=True)
    session.write_text(SESSION_SCRIPT)
    os.chmod(session, 0o755)
    # What maintainer scripts would have made: the noVNC start page and the X lock directory.
    novnc = dest / "usr/share/novnc"
    if (novnc / "vnc.html").exists() and not (novnc / "index.html").exists():
        os.symlink("vnc.html", novnc / "index.html")


def _font_cache(dest: Path) -> None:
    """Fontconfig's cache, made now: without it every X program scans all fonts when it starts
    (minutes under TCG). Best effort: without the host's ``fc-cache`` programs start slower."""
    fc_cache = shutil.which("fc-cache")
    if fc_cache is None:
        return
    # The cache holds each font directory's mtime; the image's layer clamps times to EPOCH (images/build):
    # clamp them now, and fc-cache records them so (SOURCE_DATE_EPOCH), or every box would rescan.
    clamp_times(dest)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([fc_cache, "-f", f"--sysroot={dest}"], check=True, capture_output=True, timeout=300, env=env)
