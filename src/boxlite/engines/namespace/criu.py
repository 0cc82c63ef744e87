"""Namespace engine, pause to disk: CRIU (checkpoint/restore in userspace), where it works.

Debian 12's ``criu`` 3.17 does not run on every kernel (on 6.18 its ``criu check`` fails to
parse the vDSO); then pausing to disk is refused with ``criu check``'s own words rather than
attempted. Memory-kept pause (the cgroup freezer) needs no CRIU.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import NoReturn

from ...errors import UnsupportedOptionError

CHECK_TIMEOUT = 20.0
_checked: str | None = None


def why_unavailable() -> str | None:
    """None when ``criu check`` passes, else why (memoized per process)."""
    global _checked
    if _checked is None:
        _checked = _check()
    return _checked or None


def _check() -> str:
    criu = shutil.which("criu")
    if criu is None:
        return "criu is not installed (Debian package criu)"
    try:
        proc = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"criu check could not run: {e}"
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0 and "Error" not in out:
        return ""
    return "criu check fails on this kernel: " + " | ".join(out.splitlines()[-4:])


def refuse(option: str = "to_disk") -> NoReturn:
    """Raise UnsupportedOptionError: the namespace engine has no working pause to disk (or fork
    of a running box: the same checkpoint) here.

    Even where ``criu check`` passes, dumping a box (user namespace, id-mapped overlay mounts,
    pasta's network namespace, the keeper outside it) is not implemented yet."""
    why = why_unavailable()
    if why is None:
        why = "criu check passes, but checkpointing namespace boxes is not implemented yet"
    what = "pauses to disk" if option == "to_disk" else "forks a running box"
    raise UnsupportedOptionError(option, f"the namespace engine {what} with CRIU; {why}")
